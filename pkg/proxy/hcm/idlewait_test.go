package hcm

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/portico-gateway/portico/pkg/proxy/readahead"
)

// tcpPair is a real loopback connection: the server side and the client.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// An idle connection waits without its read buffer and gets one back,
// with every byte the client sent still to be read, when a request
// arrives; the wait ends at the read deadline, when reads are aborted,
// and when the client leaves; a connection that is not a plain socket
// keeps its reader and waits in the caller's Peek.
func TestWaitRequest(t *testing.T) {
	newReader := func(tc *timedConn) (*bufio.Reader, *h1Writer) {
		br := readerPool.Get().(*bufio.Reader)
		br.Reset(tc)
		return br, &h1Writer{conn: tc, br: br}
	}
	t.Run("request arrives", func(t *testing.T) {
		server, client := tcpPair(t)
		tc := &timedConn{Conn: server}
		br, w := newReader(tc)
		done := make(chan error, 1)
		go func() { done <- waitRequest(tc, &br, w) }()
		select {
		case err := <-done:
			t.Fatalf("returned before anything was sent: %v", err)
		case <-time.After(50 * time.Millisecond): // it must still be waiting
		}
		const head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
		io.WriteString(client, head)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if w.br != br {
			t.Error("the writer's reader (for hijacking) is not the connection's")
		}
		got := make([]byte, len(head))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != head {
			t.Errorf("read %q, %v after the wait; want the whole head", got, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		server, _ := tcpPair(t)
		tc := &timedConn{Conn: server}
		br, w := newReader(tc)
		tc.readBy(time.Now().Add(100 * time.Millisecond))
		err := waitRequest(tc, &br, w)
		if !errors.Is(err, os.ErrDeadlineExceeded) || !isTimeout(err) {
			t.Errorf("wait past the deadline: %v, want a timeout", err)
		}
	})
	t.Run("aborted", func(t *testing.T) {
		server, _ := tcpPair(t)
		tc := &timedConn{Conn: server}
		br, w := newReader(tc)
		done := make(chan error, 1)
		go func() {
			err := waitRequest(tc, &br, w)
			if err == nil {
				_, err = br.Peek(1) // as serveH1 does: aborted before the wait began
			}
			done <- err
		}()
		time.AfterFunc(50*time.Millisecond, tc.abortReads)
		select {
		case err := <-done:
			if err == nil {
				t.Error("an aborted wait reported a request")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("abortReads did not end the wait")
		}
	})
	t.Run("client leaves", func(t *testing.T) {
		server, client := tcpPair(t)
		tc := &timedConn{Conn: server}
		br, w := newReader(tc)
		client.Close()
		if err := waitRequest(tc, &br, w); err != nil {
			t.Fatalf("wait on a closed connection: %v (the reader reports the EOF)", err)
		}
		if _, err := br.Peek(1); err != io.EOF {
			t.Errorf("Peek after the client left: %v, want EOF", err)
		}
	})
	t.Run("not a plain socket", func(t *testing.T) {
		server, _ := tcpPair(t)
		tc := &timedConn{Conn: &readahead.Conn{Conn: server, Ahead: []byte("G")}}
		br, w := newReader(tc)
		old := br
		if err := waitRequest(tc, &br, w); err != nil {
			t.Fatal(err)
		}
		if br != old {
			t.Error("the reader of a wrapped connection was replaced: bytes read ahead could be lost")
		}
	})
}
