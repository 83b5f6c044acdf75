package proxy_test

// Regression tests for what a hostile client did to the edge proxy (issue
// #11): each sends the attacker's bytes over a real socket to the real
// proxy and checks what the client got and what the backend received.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/internal/testpki"
	"github.com/portico-gateway/portico/pkg/translate"
)

// requests lists "METHOD target" of everything the recorder received.
func requests(rec *testenv.Recorder) []string {
	var out []string
	for _, q := range rec.Requests() {
		out = append(out, q.Method+" "+q.Target)
	}
	return out
}

// last is the last request the recorder received, or nil.
func last(rec *testenv.Recorder) *testenv.RecordedRequest {
	reqs := rec.Requests()
	if len(reqs) == 0 {
		return nil
	}
	return &reqs[len(reqs)-1]
}

// edgeConfig routes /admin to a 403 the gateway answers itself (what a
// smuggled request must never get past) and everything else to the
// recorder, with Istio's default retry policy (which buffers bodies).
func edgeConfig(backendPort uint32) string {
	return gateway80 + fmt.Sprintf(`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /admin}}]
    directResponse: {status: 403, body: {string: "forbidden"}}
  - route: [{destination: {host: app}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app}
spec:
  hosts: [app.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: %d}}]
`, backendPort)
}

// startEdge runs the control plane and a proxy in front of a recorder.
func startEdge(t *testing.T, edge translate.Edge, o testenv.ProxyOptions) (*testenv.Proxy, *testenv.Recorder) {
	t.Helper()
	rec := testenv.StartRecorder(t)
	cp := testenv.StartControlPlane(t, "")
	cp.PublishWith(t, edgeConfig(rec.Port), translate.Options{Edge: edge})
	o.Ports = []uint32{80}
	p := testenv.StartProxy(t, cp.Addr, o)
	p.WaitReady(t)
	return p, rec
}

// rawExchange sends raw bytes and reads the response, reporting the status
// and whether the proxy closed the connection after it.
func rawExchange(t *testing.T, addr, raw string) (status int, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, true
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// A closed connection reads EOF at once; an open one times out.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = br.ReadByte()
	var ne net.Error
	closed = !(err != nil && errorsAs(err, &ne) && ne.Timeout())
	return resp.StatusCode, closed
}

func errorsAs(err error, target *net.Error) bool {
	ne, ok := err.(net.Error)
	if ok {
		*target = ne
	}
	return ok
}

func TestHTTP1AmbiguousFramingIsRejected(t *testing.T) {
	p, rec := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{})
	many := "GET / HTTP/1.1\r\nHost: a\r\n"
	for i := 0; i < 101; i++ {
		many += fmt.Sprintf("X-H%d: v\r\n", i)
	}
	many += "\r\n"
	cases := []struct {
		name   string
		raw    string
		status int
	}{
		// nginx 1.22 and Envoy answer 400 to all of these (bench/hostile
		// has the measured table); each one is read two ways by some
		// proxy/backend pair.
		{"TE with vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400},
		{"TE with form feed", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0c\r\n\r\n0\r\n\r\n", 400},
		{"TE with NBSP", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\xa0\r\n\r\n0\r\n\r\n", 400},
		{"TE with NEL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x85chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE unknown coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"CL minus zero", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -0\r\n\r\n", 400},
		{"CL plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400},
		{"CL vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \x0b5\r\n\r\nhello", 400},
		{"CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400},
		{"HTTP/1.0 chunked", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"CR in target", "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"NUL in target", "GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"fragment in target", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"CR in absolute-form authority", "GET http://a\rX-Injected:1/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"userinfo in authority", "GET http://evil@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"space in Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"escape sequence in a header", "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: \x1b[31mred\r\n\r\n", 400},
		{"underscore in a header name", "GET / HTTP/1.1\r\nHost: a\r\nX_Auth_User: admin\r\n\r\n", 400},
		{"101 headers", many, 431},
		{"bad chunk extension", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\x01\r\nhello\r\n0\r\n\r\n", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(requests(rec))
			status, closed := rawExchange(t, p.Addr(80), c.raw)
			if status != c.status || !closed {
				t.Errorf("got %d (closed %v), want %d and the connection closed", status, closed, c.status)
			}
			if got := requests(rec); len(got) != before {
				t.Errorf("the backend received %v", got[before:])
			}
		})
	}
}

func TestClientCannotStripGatewayHeaders(t *testing.T) {
	p, rec := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{})
	status, _ := rawExchange(t, p.Addr(80), "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nX-Request-Id: mine\r\n"+
		"Connection: keep-alive, x-forwarded-for, x-request-id, x-forwarded-proto, x-envoy-external-address\r\n\r\n")
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	req := last(rec)
	if req == nil {
		t.Fatal("nothing reached the backend")
	}
	if got := req.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("x-forwarded-for = %q, want the peer the gateway saw (the client's own was nominated away)", got)
	}
	if got := req.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("x-forwarded-proto = %q, want http", got)
	}
	if got := req.Get("X-Request-Id"); len(got) != 36 {
		t.Errorf("x-request-id = %q, want the gateway's UUID", got)
	}
	if req.Get("Connection") != "" || len(req.Values("Keep-Alive")) > 0 {
		t.Errorf("connection-specific headers forwarded: %v", req.Header)
	}
}

// h2conn is a raw HTTP/2 cleartext client speaking frames.
type h2conn struct {
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2(t *testing.T, addr string) *h2conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	h := &h2conn{c: c, fr: http2.NewFramer(c, c)}
	h.enc = hpack.NewEncoder(&h.buf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	io.WriteString(c, http2.ClientPreface)
	h.fr.WriteSettings()
	return h
}

func (h *h2conn) headers(t *testing.T, id uint32, endStream bool, fields ...string) {
	t.Helper()
	h.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	// Blocks larger than the default frame size continue in CONTINUATION.
	block := h.buf.Bytes()
	first := block[:min(len(block), 16<<10)]
	block = block[len(first):]
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0}); err != nil {
		t.Fatal(err)
	}
	for len(block) > 0 {
		n := min(len(block), 16<<10)
		if err := h.fr.WriteContinuation(id, n == len(block), block[:n]); err != nil {
			t.Fatal(err)
		}
		block = block[n:]
	}
}

// response reads frames until stream id gets a response (its :status) or
// a reset; the connection going away (GOAWAY) fails the test.
func (h *h2conn) response(t *testing.T, id uint32) (status string, reset bool) {
	t.Helper()
	status, reset, goaway := h.outcome(t, id)
	if goaway != "" {
		t.Fatalf("GOAWAY %s before stream %d got a response", goaway, id)
	}
	return status, reset
}

// outcome is response, reporting a GOAWAY's error code instead of failing.
func (h *h2conn) outcome(t *testing.T, id uint32) (status string, reset bool, goaway string) {
	t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the response to stream %d: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return f.PseudoValue("status"), false, ""
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "", true, ""
			}
		case *http2.GoAwayFrame:
			return "", false, f.ErrCode.String()
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		}
	}
}

// TestH2ContentLengthWithEndStreamIsNotSmuggled is the finding: HEADERS
// announcing content-length: N with END_STREAM were forwarded with that
// header and no body, the backend took the start of the next request on
// the pooled connection as the body, and served what followed.
func TestH2ContentLengthWithEndStreamIsNotSmuggled(t *testing.T) {
	p, rec := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{})
	smuggled := "GET /admin/secret HTTP/1.1\r\nHost: a\r\n\r\n"
	h := dialH2(t, p.Addr(80))
	for i, method := range []string{"GET", "POST"} {
		id := uint32(1 + 2*i)
		h.headers(t, id, true, ":method", method, ":scheme", "http", ":authority", "a", ":path", "/x",
			"content-length", strconv.Itoa(len(smuggled)))
		if status, reset := h.response(t, id); status != "400" && !reset {
			t.Errorf("%s with content-length and END_STREAM: status %q, want 400 or a reset", method, status)
		}
	}
	// The next request through the proxy, on whatever pooled connection.
	h.headers(t, 5, true, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/next")
	if status, _ := h.response(t, 5); status != "200" {
		t.Errorf("next request: %q", status)
	}
	for _, r := range requests(rec) {
		if r != "GET /next" {
			t.Errorf("the backend received %q", r)
		}
	}
	// DATA shorter than the content-length: 400, not the HTTP/2 server's
	// implicit 200 for a handler that wrote nothing.
	h.headers(t, 9, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/short", "content-length", "10")
	h.fr.WriteData(9, true, []byte("hello"))
	if status, reset := h.response(t, 9); status != "400" && !reset {
		t.Errorf("DATA short of content-length: %q", status)
	}
	// A POST with a real body arrives with exactly one content-length.
	h.headers(t, 11, false, ":method", "POST", ":scheme", "http", ":authority", "a", ":path", "/post", "content-length", "5")
	h.fr.WriteData(11, true, []byte("hello"))
	if status, _ := h.response(t, 11); status != "200" {
		t.Fatalf("POST: %q", status)
	}
	req := last(rec)
	if req == nil || req.Target != "/post" || string(req.Body) != "hello" || len(req.Values("Content-Length")) != 1 || req.BodyLen != 5 {
		t.Errorf("backend got %+v", req)
	}
}

func TestH2RequestsAreValidated(t *testing.T) {
	p, rec := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{})
	big := strings.Repeat("a", 70<<10)
	cases := []struct {
		name   string
		fields []string
	}{
		{"space in :path", []string{":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/a b"}},
		{"CR in :authority", []string{":method", "GET", ":scheme", "http", ":authority", "a\rb", ":path", "/"}},
		{"differing content-length", []string{":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/", "content-length", "1", "content-length", "2"}},
		{"header list over 60 KiB", []string{":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/", "x-big", big}},
	}
	for _, c := range cases {
		// Each on its own connection: refusing a header block the decoder
		// cannot hold is a connection error (COMPRESSION_ERROR), as RFC
		// 9113 allows.
		h := dialH2(t, p.Addr(80))
		h.headers(t, 1, true, c.fields...)
		status, reset, goaway := h.outcome(t, 1)
		if !reset && goaway == "" && status != "400" && status != "431" {
			t.Errorf("%s: status %q, want 400/431, a reset or GOAWAY", c.name, status)
		}
	}
	h := dialH2(t, p.Addr(80))
	if got := requests(rec); len(got) > 0 {
		t.Errorf("the backend received %v", got)
	}
	// 101 header fields: over max_headers_count.
	var fields []string
	fields = append(fields, ":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/")
	for i := 0; i < 101; i++ {
		fields = append(fields, fmt.Sprintf("x-h%d", i), "v")
	}
	h.headers(t, 101, true, fields...)
	if status, reset := h.response(t, 101); status != "431" && !reset {
		t.Errorf("101 headers over HTTP/2: %q", status)
	}
}

// TestH2RapidResetFloodDoesNotCrash: HEADERS then RST_STREAM in a loop
// until the server sends GOAWAY (CVE-2023-44487). The proxy once crashed:
// a pooled bufio.Reader was reset and reused while the HTTP/2 frame
// reader still read through it.
func TestH2RapidResetFloodDoesNotCrash(t *testing.T) {
	p, rec := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{})
	var wg sync.WaitGroup
	var goaways atomic.Int64
	// Three rounds of 32 connections: the crash took a connection torn
	// down while its frame reader was busy, a matter of timing.
	for c := 0; c < 3*32; c++ {
		if c%32 == 0 {
			wg.Wait()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.Dial("tcp", p.Addr(80))
			if err != nil {
				return
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(20 * time.Second))
			// Frames leave in large batches, as a flooding client sends
			// them: the server's frame reader is then busy, not blocked
			// in a read, when the connection is torn down.
			bw := bufio.NewWriterSize(nc, 64<<10)
			fr := http2.NewFramer(bw, nc)
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}} {
				enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			block := buf.Bytes()
			io.WriteString(bw, http2.ClientPreface)
			fr.WriteSettings()
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if _, ok := f.(*http2.GoAwayFrame); ok {
						goaways.Add(1)
						return
					}
				}
			}()
			for id := uint32(1); id < 20000; id += 2 {
				if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}) != nil ||
					fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					break
				}
				if id%512 == 1 && bw.Flush() != nil {
					break
				}
				select {
				case <-done:
					return
				default:
				}
			}
			<-done
		}()
	}
	wg.Wait()
	// Still alive, and serving.
	resp, err := http.Get(p.URL(80) + "/after")
	if err != nil {
		t.Fatalf("after the flood: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("after the flood: %d", resp.StatusCode)
	}
	closed, _ := p.Stats.Lookup("http.outbound_0.0.0.0_80.downstream_cx_premature_reset_close")
	t.Logf("%d of 96 connections got GOAWAY, %d closed for premature resets; backend saw %d requests", goaways.Load(), closed, len(requests(rec)))
}

// TestStalledBodiesAreBoundedAndTimeOut: request bodies kept for retries
// fit the per-connection buffer limit and the global budget, and a client
// that stops sending gets 408 after the stream idle timeout.
func TestStalledBodiesAreBoundedAndTimeOut(t *testing.T) {
	edge := translate.DefaultEdge()
	edge.StreamIdleTimeout = translate.Duration{Duration: time.Second}
	p, rec := startEdge(t, edge, testenv.ProxyOptions{MaxBufferedRequestBytes: 4 * 32 << 10})
	const clients = 12
	var conns []net.Conn
	for i := 0; i < clients; i++ {
		c, err := net.Dial("tcp", p.Addr(80))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		// 30 KiB announced, 10 KiB sent: kept for retries, then stalled.
		fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s", 30<<10, strings.Repeat("x", 10<<10))
		conns = append(conns, c)
	}
	testenv.WaitFor(t, "the stalled bodies to be accounted", func() bool {
		v, _ := p.Stats.Lookup("overload.buffered_request_bytes")
		return v > 0
	})
	if v, _ := p.Stats.Lookup("overload.buffered_request_bytes"); v > 4*32<<10 {
		t.Errorf("%d bytes buffered, over the 128 KiB budget", v)
	}
	for i, c := range conns {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if resp.StatusCode != 408 {
			t.Errorf("client %d: %d, want 408 after the stream idle timeout", i, resp.StatusCode)
		}
	}
	testenv.WaitFor(t, "the buffers to be released", func() bool {
		v, _ := p.Stats.Lookup("overload.buffered_request_bytes")
		return v == 0
	})
	for _, r := range requests(rec) {
		// Requests beyond the budget stream to the backend; a truncated
		// body must not be completed by anything else.
		if r != "POST /upload" {
			t.Errorf("backend received %q", r)
		}
	}
}

// TestSlowClientsTimeOut: a head trickled byte by byte gets 408 after the
// request headers timeout; a connection that sends nothing closes after
// the idle timeout.
func TestSlowClientsTimeOut(t *testing.T) {
	edge := translate.DefaultEdge()
	edge.RequestHeadersTimeout = translate.Duration{Duration: 500 * time.Millisecond}
	edge.IdleTimeout = translate.Duration{Duration: 700 * time.Millisecond}
	p, _ := startEdge(t, edge, testenv.ProxyOptions{})

	c, err := net.Dial("tcp", p.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	trickle := make(chan struct{})
	go func() {
		defer close(trickle)
		for _, b := range []byte("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ") {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
		}
		for i := 0; i < 100; i++ {
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // a slowloris client's pace, not synchronisation
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("slowloris: %v", err)
	}
	if resp.StatusCode != 408 {
		t.Errorf("slowloris: %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("slowloris held the connection %v", d)
	}
	c.Close()
	<-trickle

	idle, err := net.Dial("tcp", p.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: %v, want EOF after the idle timeout", err)
	}
	if v, _ := p.Stats.Lookup("http.outbound_0.0.0.0_80.downstream_cx_idle_timeout"); v < 1 {
		t.Errorf("downstream_cx_idle_timeout = %d", v)
	}
}

// TestConnectionCapShedsAndEvictsIdle: at the global cap, connections that
// wait idle are closed to make room, then heads that have been arriving
// for over a second (slowloris); when every connection is working on a
// request, new ones are shed, and the proxy keeps file descriptors for
// itself.
func TestConnectionCapShedsAndEvictsIdle(t *testing.T) {
	const cap = 16
	p, _ := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{MaxDownstreamConnections: cap})
	active := func() int64 { v, _ := p.Stats.Lookup("overload.downstream_cx_active"); return v }
	fill := func(first string) []net.Conn {
		var cs []net.Conn
		for i := 0; i < cap; i++ {
			c, err := net.Dial("tcp", p.Addr(80))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			io.WriteString(c, first)
			cs = append(cs, c)
		}
		testenv.WaitFor(t, "the connections to be admitted", func() bool { return active() == cap })
		return cs
	}
	closeAll := func(cs []net.Conn) {
		for _, c := range cs {
			c.Close()
		}
		testenv.WaitFor(t, "the connections to go", func() bool { return active() == 0 })
	}

	// Idle connections make room for a legitimate client.
	idle := fill("")
	status, _ := rawExchange(t, p.Addr(80), "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if status != 200 {
		t.Fatalf("at the cap with idle connections: %d", status)
	}
	if v, _ := p.Stats.Lookup("overload.downstream_cx_evicted_idle"); v < 1 {
		t.Errorf("no idle connection was evicted")
	}
	closeAll(idle)

	// Connections working on requests (bodies under way) are not evicted:
	// new connections are shed.
	busy := fill("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nx")
	testenv.WaitFor(t, "every connection to be working on its request", func() bool {
		v, _ := p.Stats.Lookup("http.outbound_0.0.0.0_80.downstream_rq_active")
		return v == cap
	})
	testenv.WaitFor(t, "a connection to be shed", func() bool {
		c, err := net.Dial("tcp", p.Addr(80))
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		v, _ := p.Stats.Lookup("overload.downstream_cx_overflow")
		return err == io.EOF && v > 0
	})
	closeAll(busy)

	// Heads trickling for over a second give way (slowloris).
	slow := fill("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
	before, _ := p.Stats.Lookup("overload.downstream_cx_evicted_idle")
	testenv.WaitFor(t, "a legitimate request to get in past slowloris connections", func() bool {
		c, err := net.Dial("tcp", p.Addr(80))
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == 200
	})
	if v, _ := p.Stats.Lookup("overload.downstream_cx_evicted_idle"); v <= before {
		t.Errorf("no slowloris connection was evicted")
	}
	closeAll(slow)
}

// TestLargeClientHello: a ClientHello of ~15 KiB (many ALPN names here;
// post-quantum key shares in the wild) completes a handshake, and an
// 18 KiB one is passed through by SNI, byte for byte.
func TestLargeClientHello(t *testing.T) {
	dir := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key", "ca.crt")
	web := testenv.StartBackend(t, "web")
	echo := startEcho(t)
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*.example.com']
    tls: {mode: SIMPLE, serverCertificate: %[1]s/server.crt, privateKey: %[1]s/server.key}
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: [big.example.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [app.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: big}
spec:
  hosts: [big.example.com]
  gateways: [istio-system/gw]
  tls: [{match: [{sniHosts: [big.example.com]}], route: [{destination: {host: echo}}]}]
`, dir)+testenv.ServiceEntry("web", "web.default.svc.cluster.local", 80, "HTTP", web)+
		testenv.ServiceEntry("echo", "echo.default.svc.cluster.local", 443, "TLS", echo))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{443, 8443}})
	p.WaitReady(t)
	var protos []string
	for i := 0; i < 60; i++ {
		protos = append(protos, fmt.Sprintf("x-%03d-%s", i, strings.Repeat("p", 240)))
	}
	protos = append(protos, "http/1.1")
	resp, _, err := httpsGet(p.Addr(443), &tls.Config{RootCAs: caPool(), ServerName: "app.example.com", NextProtos: protos}, "app.example.com")
	if err != nil {
		t.Fatalf("handshake with a large ClientHello: %v", err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	hello := testpki.ClientHello("big.example.com", 18<<10)
	c, err := net.Dial("tcp", p.Addr(8443))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(hello))
	if _, err := io.ReadFull(c, back); err != nil || !bytes.Equal(back, hello) {
		t.Fatalf("passthrough of an 18 KiB ClientHello: %v", err)
	}
}

func TestAccessLogEscapesControlCharacters(t *testing.T) {
	p, _ := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{})
	status, _ := rawExchange(t, p.Addr(80), "GET /log HTTP/1.1\r\nHost: a\r\nUser-Agent: evil\" \"forged\\\r\nConnection: close\r\n\r\n")
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	testenv.WaitFor(t, "the access log line", func() bool {
		p.Proxy.Flush()
		return strings.Contains(p.Log.String(), "/log")
	})
	if line := p.Log.String(); !strings.Contains(line, `"evil\x22 \x22forged\x5C"`) {
		t.Errorf("user agent not escaped: %s", line)
	}
}

// A keep-alive connection idle for longer than the proxy keeps its read
// buffer (hcm's idleRelease, 1 s) serves its next request, also one whose
// head arrives in pieces.
func TestKeepAliveAfterLongIdle(t *testing.T) {
	p, _ := startEdge(t, translate.DefaultEdge(), testenv.ProxyOptions{})
	c, err := net.Dial("tcp", p.Addr(80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	get := func(parts ...string) {
		t.Helper()
		for i, part := range parts {
			if i > 0 {
				time.Sleep(100 * time.Millisecond) // the head arrives in pieces
			}
			if _, err := io.WriteString(c, part); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("status %d, close %v", resp.StatusCode, resp.Close)
		}
	}
	get("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	// Idle past the release: what is tested is the idle period itself.
	time.Sleep(1500 * time.Millisecond)
	get("GET / HTTP/1.1\r\n", "Host: a\r\n", "\r\n")
	time.Sleep(1500 * time.Millisecond)
	get("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
}
