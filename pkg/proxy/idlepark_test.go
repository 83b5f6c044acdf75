package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/translate"
)

// keepAlive is a client connection that has been answered once and
// stays open.
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func (k *keepAlive) get(t *testing.T) int {
	t.Helper()
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(k.c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func openKeepAlive(t *testing.T, addr string, n int) []*keepAlive {
	t.Helper()
	var ks []*keepAlive
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		k := &keepAlive{c: c, br: bufio.NewReader(c)}
		if s := k.get(t); s != 200 {
			t.Fatalf("first request: %d", s)
		}
		ks = append(ks, k)
	}
	return ks
}

// servingGoroutines counts goroutines inside an HTTP/1.1 connection's
// request loop.
func servingGoroutines(t *testing.T) int {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	return strings.Count(b.String(), "hcm.(*h1conn).serve(")
}

// TestIdleConnectionsParkWithoutAGoroutine: a keep-alive connection idle
// for over a second is held by the proxy's parker, with no goroutine
// (and no buffer); it is served as before when its next request comes,
// ends when its client leaves, times out while parked, and gives way to
// a new connection at the connection cap.
func TestIdleConnectionsParkWithoutAGoroutine(t *testing.T) {
	t.Run("park and serve on", func(t *testing.T) {
		p, _ := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{})
		parked := func() int64 { v, _ := p.Stats.Lookup("server.downstream_cx_parked"); return v }
		active := func() int64 { v, _ := p.Stats.Lookup("overload.downstream_cx_active"); return v }
		const n = 20
		ks := openKeepAlive(t, p.Addr(80), n)
		testenv.WaitFor(t, "the idle connections to park", func() bool { return parked() == n })
		if g := servingGoroutines(t); g != 0 {
			t.Errorf("%d goroutines still in a connection's request loop with every connection parked", g)
		}
		for round := range 2 {
			for i, k := range ks {
				if s := k.get(t); s != 200 {
					t.Fatalf("round %d, connection %d after parking: %d", round, i, s)
				}
			}
			testenv.WaitFor(t, "the connections to park again", func() bool { return parked() == n })
		}
		if a := active(); a != n {
			t.Errorf("overload.downstream_cx_active = %d with %d parked connections", a, n)
		}
		for _, k := range ks[:n/2] {
			k.c.Close()
		}
		testenv.WaitFor(t, "connections whose clients left to end", func() bool {
			return parked() == n-n/2 && active() == n-n/2
		})
	})
	t.Run("TLS", func(t *testing.T) {
		dir := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key", "ca.crt")
		p := startSimpleTLS(t, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
		parked := func() int64 { v, _ := p.Stats.Lookup("server.downstream_cx_parked"); return v }
		const n = 5
		var ks []*keepAlive
		for range n {
			c, err := tls.Dial("tcp", p.Addr(443), &tls.Config{ServerName: "web.example.com", RootCAs: caPool(), NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			k := &keepAlive{c: c, br: bufio.NewReader(c)}
			if s := k.get(t); s != 200 {
				t.Fatalf("first request over TLS: %d", s)
			}
			ks = append(ks, k)
		}
		testenv.WaitFor(t, "the idle TLS connections to park", func() bool { return parked() == n })
		for round := range 2 {
			for i, k := range ks {
				if s := k.get(t); s != 200 {
					t.Fatalf("round %d, TLS connection %d after parking: %d", round, i, s)
				}
			}
			testenv.WaitFor(t, "the TLS connections to park again", func() bool { return parked() == n })
		}
		ks[0].c.Close()
		testenv.WaitFor(t, "the closed TLS connection to end", func() bool { return parked() == n-1 })
	})
	t.Run("idle timeout while parked", func(t *testing.T) {
		edge := translate.DefaultEdge()
		edge.IdleTimeout = translate.Duration{Duration: 1500 * time.Millisecond}
		p, _ := startEdge(t, edge, testenv.ProxyOptions{})
		parked := func() int64 { v, _ := p.Stats.Lookup("server.downstream_cx_parked"); return v }
		k := openKeepAlive(t, p.Addr(80), 1)[0]
		start := time.Now()
		testenv.WaitFor(t, "the connection to park", func() bool { return parked() == 1 })
		k.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := k.br.ReadByte(); err != io.EOF {
			t.Fatalf("parked connection past its idle timeout: %v, want EOF", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("closed after %v, idle timeout 1.5s", d)
		}
		if v, _ := p.Stats.Lookup("http.outbound_0.0.0.0_80.downstream_cx_idle_timeout"); v != 1 {
			t.Errorf("downstream_cx_idle_timeout = %d, want 1", v)
		}
		testenv.WaitFor(t, "the parker to let it go", func() bool { return parked() == 0 })
	})
	t.Run("evicted at the cap", func(t *testing.T) {
		const limit = 8
		p, _ := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{MaxDownstreamConnections: limit})
		parked := func() int64 { v, _ := p.Stats.Lookup("server.downstream_cx_parked"); return v }
		active := func() int64 { v, _ := p.Stats.Lookup("overload.downstream_cx_active"); return v }
		ks := openKeepAlive(t, p.Addr(80), limit)
		testenv.WaitFor(t, "the idle connections to park", func() bool { return parked() == limit })
		status, _ := rawExchange(t, p.Addr(80), "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if status != 200 {
			t.Fatalf("at the cap with parked connections: %d", status)
		}
		evicted := 0
		for _, k := range ks {
			k.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := k.br.ReadByte(); err == io.EOF {
				evicted++
			}
		}
		if evicted == 0 {
			t.Fatal("no parked connection was closed to make room")
		}
		testenv.WaitFor(t, "the evicted connections' slots to be released", func() bool {
			return active() == int64(limit-evicted) && parked() == int64(limit-evicted)
		})
	})
}
