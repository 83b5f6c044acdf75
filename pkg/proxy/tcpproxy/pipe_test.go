package tcpproxy

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
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
