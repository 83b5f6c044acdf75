package proxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/translate"
)

// wsBackend upgrades requests for /ws (answering 101 as a WebSocket
// server would, then echoing every byte upper-cased until the client
// half-closes) and declines the upgrade elsewhere with a plain 200.
type wsBackend struct {
	mu  sync.Mutex
	got []http.Header // request headers of upgrade attempts
}

func (b *wsBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.got = append(b.got, r.Header.Clone())
	b.mu.Unlock()
	if r.URL.Path != "/ws" || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		io.WriteString(w, "declined")
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
	brw.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := brw.Read(buf)
		if n > 0 {
			conn.Write(bytes.ToUpper(buf[:n]))
		}
		if err != nil {
			return
		}
	}
}

func (b *wsBackend) headers() []http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]http.Header(nil), b.got...)
}

const upgradeRequest = "GET %s HTTP/1.1\r\nHost: chat.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
	"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"

// A WebSocket upgrade passes the gateway (istiod's upgrade_configs
// websocket, which the translator emits): the backend sees the upgrade
// headers, the client gets the 101, and bytes then flow both ways —
// including bytes the client sent right behind the request head — until
// the client half-closes. A declined upgrade is an ordinary response on
// a connection that stays usable.
func TestWebSocketUpgrade(t *testing.T) {
	be := &wsBackend{}
	srv := httptest.NewServer(be)
	defer srv.Close()
	port := uint32(srv.Listener.Addr().(*net.TCPAddr).Port)
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, gateway80+`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: chat}
spec:
  hosts: [chat.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: chat}}]}]
`+testenv.ServiceEntry("chat", "chat.default.svc.cluster.local", 80, "HTTP", &testenv.Backend{Name: "ws", Port: port}))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)

	c, err := net.Dial("tcp", p.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// The head and the first message in one write: the message sits in
	// the proxy's read buffer when the upgrade happens.
	if _, err := fmt.Fprintf(c, upgradeRequest+"early ", "/ws"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade") ||
		resp.Header.Get("Sec-WebSocket-Accept") == "" {
		t.Fatalf("upgrade answered %d %v", resp.StatusCode, resp.Header)
	}
	big := strings.Repeat("x", 200<<10) // several buffers each way
	go func() {
		io.WriteString(c, "hello "+big)
		c.(*net.TCPConn).CloseWrite()
	}()
	echoed, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if want := "EARLY HELLO " + strings.ToUpper(big); string(echoed) != want {
		t.Fatalf("echoed %d bytes (%.40q…), want %d", len(echoed), echoed, len(want))
	}
	hs := be.headers()
	if len(hs) != 1 || !strings.EqualFold(hs[0].Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(hs[0].Get("Connection")), "upgrade") ||
		hs[0].Get("Sec-Websocket-Key") != "dGhlIHNhbXBsZSBub25jZQ==" || hs[0].Get("X-Forwarded-For") == "" {
		t.Errorf("backend got %v", hs)
	}

	// Declined: a plain 200, and the connection serves the next request.
	d, err := net.Dial("tcp", p.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.SetDeadline(time.Now().Add(10 * time.Second))
	dbr := bufio.NewReader(d)
	for i, path := range []string{"/declined", "/again"} {
		fmt.Fprintf(d, upgradeRequest, path)
		resp, err := http.ReadResponse(dbr, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "declined" || resp.Header.Get("Upgrade") != "" {
			t.Fatalf("request %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
	if v, _ := p.Stats.Lookup("cluster.outbound|80||chat.default.svc.cluster.local.upstream_rq_101"); v != 1 {
		t.Errorf("upstream_rq_101 = %d, want 1", v)
	}
}

// A WebSocket that goes quiet is closed after the stream idle timeout;
// the test proxy's is short.
func TestWebSocketIdleTimeout(t *testing.T) {
	be := &wsBackend{}
	srv := httptest.NewServer(be)
	defer srv.Close()
	port := uint32(srv.Listener.Addr().(*net.TCPAddr).Port)
	cp := testenv.StartControlPlane(t, "")
	edge := translate.DefaultEdge()
	edge.StreamIdleTimeout = translate.Duration{Duration: 700 * time.Millisecond}
	cp.PublishWith(t, gateway80+`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: chat}
spec:
  hosts: [chat.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: chat}}]}]
`+testenv.ServiceEntry("chat", "chat.default.svc.cluster.local", 80, "HTTP", &testenv.Backend{Name: "ws", Port: port}),
		translate.Options{Edge: edge})
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	c, err := net.Dial("tcp", p.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, upgradeRequest, "/ws")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	buf := make([]byte, 4)
	// Talking for three idle timeouts keeps the tunnel open.
	for end := time.Now().Add(2100 * time.Millisecond); time.Now().Before(end); {
		io.WriteString(c, "ping")
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "PING" {
			t.Fatalf("echo: %q %v", buf, err)
		}
		time.Sleep(200 * time.Millisecond) // the client's pace, not synchronisation
	}
	// Quiet from here on: the proxy must close the tunnel by itself.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	start := time.Now()
	if n, err := br.Read(buf); err != io.EOF {
		t.Fatalf("quiet tunnel: read %d bytes, %v; want EOF from the idle timeout", n, err)
	}
	t.Logf("closed after %v quiet", time.Since(start).Round(time.Millisecond))
}
