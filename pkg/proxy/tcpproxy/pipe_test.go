package tcpproxy

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/portico-gateway/portico/pkg/proxy/readahead"
)

// tcpPair is a real loopback connection: the accepted side and the dialer.
func tcpPair(t *testing.T) (accepted, dialed net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { accepted.Close(); dialed.Close() })
	return accepted, dialed
}

// proxied runs both directions of a piper between a client and a server
// the way ServeConn does, returning the client's and server's ends and a
// channel closed when both directions are over.
func proxied(t *testing.T, idle time.Duration) (client, server net.Conn, p *piper, done chan struct{}) {
	down, client := tcpPair(t)
	server, up := tcpPair(t)
	var once sync.Once
	p = &piper{idle: idle, closeBoth: func() { once.Do(func() { up.Close(); down.Close() }) }}
	p.last.Store(time.Now().UnixNano())
	done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(up, down) }()
	go func() { defer wg.Done(); p.pipe(down, up) }()
	go func() { wg.Wait(); close(done) }()
	return client, server, p, done
}

func within(t *testing.T, what string, ch chan struct{}, d time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
	}
}

// TestPipeIdleTimeout: a connection on which nothing moves either way
// closes after the idle timeout; bytes moving in one direction only keep
// both open (Envoy's tcp_proxy idle_timeout counts both directions).
func TestPipeIdleTimeout(t *testing.T) {
	t.Run("nothing moves", func(t *testing.T) {
		client, _, p, done := proxied(t, 200*time.Millisecond)
		start := time.Now()
		within(t, "idle connection closed", done, 5*time.Second)
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("closed after %v, idle timeout 200ms", d)
		}
		if !p.idled.Load() {
			t.Error("not reported as an idle timeout")
		}
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := client.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("client after the idle timeout: %v, want EOF", err)
		}
	})
	t.Run("one direction moves", func(t *testing.T) {
		client, server, p, done := proxied(t, 300*time.Millisecond)
		// The server streams for three idle timeouts; the client never
		// writes, so its direction's read times out and must see the
		// server's bytes as activity.
		go func() {
			for range 30 {
				if _, err := server.Write([]byte("tick")); err != nil {
					return
				}
				time.Sleep(30 * time.Millisecond) // the stream's pace, not synchronisation
			}
		}()
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadFull(client, make([]byte, 4*30))
		if err != nil {
			t.Fatalf("read %d of 120 streamed bytes: %v (closed as idle: %v)", got, err, p.idled.Load())
		}
		within(t, "connection closed once the stream stopped", done, 5*time.Second)
		if !p.idled.Load() {
			t.Error("not reported as an idle timeout")
		}
	})
	t.Run("half close", func(t *testing.T) {
		client, server, _, done := proxied(t, 0)
		io.WriteString(client, "request")
		client.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(server)
		if err != nil || string(b) != "request" {
			t.Fatalf("server read %q, %v; want the request, then EOF", b, err)
		}
		io.WriteString(server, "response")
		server.Close()
		b, err = io.ReadAll(client)
		if err != nil || string(b) != "response" {
			t.Fatalf("client read %q, %v after its half-close", b, err)
		}
		within(t, "both directions over", done, 5*time.Second)
	})
}

// TestPipeCarriesEveryByte: an echo exchange, then both directions at
// once in chunks from one byte to more than the sockets buffer (so
// writes wait for room), from behind a read-ahead wrapper whose bytes
// come first: every byte arrives, in order, and half-closes end each
// direction.
func TestPipeCarriesEveryByte(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0))
			down, client := tcpPair(t)
			server, up := tcpPair(t)
			ahead := []byte("ahead of the socket:")
			src := &readahead.Conn{Conn: down, Ahead: append([]byte(nil), ahead...)}
			p := &piper{closeBoth: func() { up.Close(); down.Close() }}
			p.last.Store(time.Now().UnixNano())
			done := make(chan struct{})
			go func() {
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); p.pipe(up, src) }()
				go func() { defer wg.Done(); p.pipe(down, up) }()
				wg.Wait()
				close(done)
			}()

			for i := range 50 {
				msg := []byte(fmt.Sprintf("ping %d", i))
				if i == 0 {
					msg = append(append([]byte(nil), ahead...), msg...)
					client.Write(msg[len(ahead):])
				} else {
					client.Write(msg)
				}
				got := make([]byte, len(msg))
				server.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(server, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("echo %d: %q, %v", i, got, err)
				}
				server.Write(got)
				client.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("echo %d back: %q, %v", i, got, err)
				}
			}

			chunks := func() (parts [][]byte, all []byte) {
				for range 30 {
					n := 1 + rng.IntN(64)
					if rng.IntN(5) == 0 {
						n = 1 + rng.IntN(2<<20)
					}
					b := make([]byte, n)
					for i := range b {
						b[i] = byte(rng.Uint32())
					}
					parts, all = append(parts, b), append(all, b...)
				}
				return parts, all
			}
			toServer, wantServer := chunks()
			toClient, wantClient := chunks()
			send := func(c net.Conn, parts [][]byte) {
				for _, b := range parts {
					if _, err := c.Write(b); err != nil {
						t.Errorf("write: %v", err)
						return
					}
				}
				c.(*net.TCPConn).CloseWrite()
			}
			expect := func(c net.Conn, want []byte) {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				got, err := io.ReadAll(c)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("read %d bytes (%v), want %d; the same bytes: %v", len(got), err, len(want), bytes.Equal(got, want))
				}
			}
			var ends sync.WaitGroup
			ends.Add(4)
			go func() { defer ends.Done(); send(client, toServer) }()
			go func() { defer ends.Done(); send(server, toClient) }()
			go func() { defer ends.Done(); expect(server, wantServer) }()
			go func() { defer ends.Done(); expect(client, wantClient) }()
			ends.Wait()
			within(t, "both directions over", done, 10*time.Second)
		})
	}
}
