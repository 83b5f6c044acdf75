package h2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// startH2C runs net/http's own HTTP/2 server (unencrypted, prior
// knowledge) as a gRPC-style upstream.
func startH2C(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func dialClient(t *testing.T, addr string, cfg ClientConfig) *ClientConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cc := NewClientConn(nc, cfg)
	t.Cleanup(func() {
		cc.Close()
		select {
		case <-cc.Done():
		case <-time.After(5 * time.Second):
			t.Error("client connection did not end")
		}
	})
	return cc
}

func roundTrip(t *testing.T, cc *ClientConn, req *testReq) (*httpx.Response, error) {
	t.Helper()
	if !cc.Reserve() {
		t.Fatal("no stream available")
	}
	return cc.RoundTrip(req.ctx, req.Request)
}

// testReq is a request in the proxy's model with the context it is sent
// under.
type testReq struct {
	ctx context.Context
	*httpx.Request
}

func newReq(ctx context.Context, method, path string, body io.Reader) *testReq {
	req := &httpx.Request{Method: method, Target: path, Authority: "upstream", Scheme: "http", Body: body}
	switch b := body.(type) {
	case nil:
	case interface{ Len() int }:
		req.ContentLength = int64(b.Len())
	default:
		req.ContentLength = -1
	}
	return &testReq{ctx: ctx, Request: req}
}

func closeResp(resp *httpx.Response) { resp.Body.(io.Closer).Close() }

// grpcEcho answers like a gRPC server: the request body echoed, status
// in the trailers.
func grpcEcho(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
	b, _ := io.ReadAll(r.Body)
	w.Write(b)
	w.Header().Set("Grpc-Status", "7")
	w.Header().Set("Grpc-Message", "denied "+r.Header.Get("X-Who"))
}

func TestClientAgainstNetHTTPH2C(t *testing.T) {
	addr := startH2C(t, http.HandlerFunc(grpcEcho))
	cc := dialClient(t, addr, ClientConfig{})
	big := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB: beyond every default window
	cases := []struct {
		name string
		body []byte
	}{{"empty", nil}, {"small", []byte("hello")}, {"beyond windows", big}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
			}
			req := newReq(context.Background(), "POST", "/pkg.Svc/Method", body)
			req.Header.Set("X-Who", tc.name)
			req.Header.Set("Te", "trailers")
			resp, err := roundTrip(t, cc, req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			closeResp(resp)
			if err != nil || !bytes.Equal(got, tc.body) {
				t.Fatalf("body: %d bytes, err %v; want %d bytes", len(got), err, len(tc.body))
			}
			if resp.Status != 200 || resp.Header.Get("Content-Type") != "application/grpc" {
				t.Errorf("status %d, headers %v", resp.Status, resp.Header)
			}
			if resp.Trailer.Get("Grpc-Status") != "7" || resp.Trailer.Get("Grpc-Message") != "denied "+tc.name {
				t.Errorf("trailers %v", resp.Trailer)
			}
		})
	}
}

func TestClientMultiplexesUpToPeerLimit(t *testing.T) {
	release := make(chan struct{})
	var inFlight, peak int
	var mu sync.Mutex
	addr := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
		io.WriteString(w, r.URL.Path)
	}))
	cc := dialClient(t, addr, ClientConfig{})
	// Wait for the server's SETTINGS (net/http advertises 250 streams).
	testWait(t, func() bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		return cc.peerMaxStreams != 100
	})
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		if !cc.Reserve() {
			t.Fatalf("stream %d refused below the peer's limit", i)
		}
		go func() {
			req := newReq(context.Background(), "GET", "/x", nil)
			resp, err := cc.RoundTrip(req.ctx, req.Request)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				closeResp(resp)
			}
			errs <- err
		}()
	}
	testWait(t, func() bool { mu.Lock(); defer mu.Unlock(); return inFlight == n })
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if peak != n {
		t.Errorf("peak concurrent streams on one connection %d, want %d", peak, n)
	}
}

// hostile is an upstream written with the Framer: script gets the
// server side of each connection after the client preface.
type hostile struct {
	fr  *http2.Framer
	nc  net.Conn
	enc *hpack.Encoder
	buf bytes.Buffer
}

func startHostile(t *testing.T, script func(h *hostile)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(20 * time.Second))
				var pre [len(http2.ClientPreface)]byte
				if _, err := io.ReadFull(nc, pre[:]); err != nil {
					return
				}
				h := &hostile{nc: nc, fr: http2.NewFramer(nc, nc)}
				h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				h.enc = hpack.NewEncoder(&h.buf)
				script(h)
			}()
		}
	}()
	return ln.Addr().String()
}

// next reads until a frame of the wanted kind (or any, if nil).
func (h *hostile) next(want func(http2.Frame) bool) http2.Frame {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return nil
		}
		if want == nil || want(f) {
			return f
		}
	}
}

// drain reads until the client closes the connection.
func (h *hostile) drain() {
	for h.next(nil) != nil {
	}
}

func isHeaders(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }

func (h *hostile) headers(id uint32, end bool, kv ...string) {
	h.buf.Reset()
	for i := 0; i < len(kv); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	writeHeaderBlock(h.fr, id, h.buf.Bytes(), end, 16384)
}

func TestClientAgainstHostileUpstream(t *testing.T) {
	type outcome struct {
		resp     *httpx.Response
		rtErr    error
		body     []byte
		bodyErr  error
		duration time.Duration
		cc       *ClientConn
	}
	cases := []struct {
		name    string
		script  func(h *hostile)
		body    io.Reader
		timeout time.Duration
		// waitDone: read the body only once the connection ended (no
		// WINDOW_UPDATE can be granted meanwhile).
		waitDone bool
		check    func(t *testing.T, o outcome)
	}{
		{
			name: "huge header list",
			script: func(h *hostile) {
				h.fr.WriteSettings()
				f := h.next(isHeaders)
				if f == nil {
					return
				}
				kv := []string{":status", "200"}
				for i := range 2000 {
					kv = append(kv, "x-filler", strings.Repeat("v", 40)+string(rune('a'+i%26)))
				}
				h.headers(f.Header().StreamID, true, kv...)
				h.drain()
			},
			check: func(t *testing.T, o outcome) {
				if o.rtErr == nil || !strings.Contains(o.rtErr.Error(), "header list") {
					t.Errorf("want a header list error, got %v", o.rtErr)
				}
			},
		},
		{
			name: "window never opened",
			script: func(h *hostile) {
				h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
				for h.next(nil) != nil {
				}
			},
			body:    strings.NewReader("this body can never be sent"),
			timeout: 300 * time.Millisecond,
			check: func(t *testing.T, o outcome) {
				if !errors.Is(o.rtErr, context.DeadlineExceeded) {
					t.Errorf("want the request to time out, got %v", o.rtErr)
				}
				if o.duration > 5*time.Second {
					t.Errorf("took %v", o.duration)
				}
			},
		},
		{
			name: "reset mid-body",
			script: func(h *hostile) {
				h.fr.WriteSettings()
				f := h.next(isHeaders)
				if f == nil {
					return
				}
				id := f.Header().StreamID
				h.headers(id, false, ":status", "200")
				h.fr.WriteData(id, false, []byte("partial"))
				h.fr.WriteRSTStream(id, http2.ErrCodeInternal)
				h.drain()
			},
			check: func(t *testing.T, o outcome) {
				if o.rtErr != nil || string(o.body) != "partial" || o.bodyErr == nil || !strings.Contains(o.bodyErr.Error(), "reset") {
					t.Errorf("want headers, 'partial' then a reset error; got %v %q %v", o.rtErr, o.body, o.bodyErr)
				}
			},
		},
		{
			name: "GOAWAY before the stream",
			script: func(h *hostile) {
				h.fr.WriteSettings()
				if h.next(isHeaders) == nil {
					return
				}
				h.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
				h.drain()
			},
			check: func(t *testing.T, o outcome) {
				if !errors.Is(o.rtErr, ErrRetryable) {
					t.Errorf("want a retryable error, got %v", o.rtErr)
				}
			},
		},
		{
			name: "GOAWAY naming the stream lets it finish",
			script: func(h *hostile) {
				h.fr.WriteSettings()
				f := h.next(isHeaders)
				if f == nil {
					return
				}
				id := f.Header().StreamID
				h.fr.WriteGoAway(id, http2.ErrCodeNo, nil)
				h.headers(id, false, ":status", "200")
				h.fr.WriteData(id, true, []byte("done"))
				h.drain()
			},
			check: func(t *testing.T, o outcome) {
				if o.rtErr != nil || o.bodyErr != nil || string(o.body) != "done" {
					t.Errorf("got %v %v %q", o.rtErr, o.bodyErr, o.body)
				}
				if o.cc.Usable() {
					t.Error("connection still usable after GOAWAY")
				}
			},
		},
		{
			name: "DATA beyond the window",
			script: func(h *hostile) {
				h.fr.WriteSettings()
				f := h.next(isHeaders)
				if f == nil {
					return
				}
				id := f.Header().StreamID
				h.headers(id, false, ":status", "200")
				chunk := make([]byte, 16384)
				for range 5 { // 80 KiB against a 64 KiB stream window
					h.fr.WriteData(id, false, chunk)
				}
				g := h.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
				if g == nil || g.(*http2.GoAwayFrame).ErrCode != http2.ErrCodeFlowControl {
					h.fr.WriteData(id, true, []byte("no FLOW_CONTROL_ERROR GOAWAY seen"))
				}
			},
			waitDone: true,
			check: func(t *testing.T, o outcome) {
				if o.bodyErr == nil || !strings.Contains(o.bodyErr.Error(), "FLOW_CONTROL_ERROR") {
					t.Errorf("want a FLOW_CONTROL_ERROR connection error, got %v (body %d bytes)", o.bodyErr, len(o.body))
				}
			},
		},
		{
			name: "trailers-only and trailers",
			script: func(h *hostile) {
				h.fr.WriteSettings()
				f := h.next(isHeaders)
				if f == nil {
					return
				}
				id := f.Header().StreamID
				h.headers(id, false, ":status", "200", "content-type", "application/grpc")
				h.fr.WriteData(id, false, []byte("msg"))
				h.headers(id, true, "grpc-status", "3", "grpc-message", "bad")
				h.drain()
			},
			check: func(t *testing.T, o outcome) {
				if o.rtErr != nil || o.bodyErr != nil || string(o.body) != "msg" || o.resp.Trailer.Get("Grpc-Status") != "3" {
					t.Errorf("got %v %v %q trailers %v", o.rtErr, o.bodyErr, o.body, o.resp.Trailer)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := startHostile(t, tc.script)
			cc := dialClient(t, addr, ClientConfig{})
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			start := time.Now()
			req := newReq(ctx, "POST", "/svc", tc.body)
			o := outcome{cc: cc}
			o.resp, o.rtErr = roundTrip(t, cc, req)
			if o.rtErr == nil {
				if tc.waitDone {
					select {
					case <-cc.Done():
					case <-time.After(10 * time.Second):
						t.Fatal("connection did not end")
					}
				}
				o.body, o.bodyErr = io.ReadAll(o.resp.Body)
				closeResp(o.resp)
			}
			o.duration = time.Since(start)
			tc.check(t, o)
		})
	}
}

// An upstream that floods SETTINGS (each owing it an ACK) and never reads
// is cut off with ENHANCE_YOUR_CALM once the ACKs owed pass
// maxPendingControl, rather than buffering them without bound.
//
// Neither side's socket buffers are shrunk below a few KiB on the reading
// side: with a 4 KiB receive buffer on a peer that is itself blocked
// writing, Linux drops the client's segments (ACKs included) at the
// peer's backlog, the peer's own data is never acknowledged and both
// sides stall in retransmission backoff — the "reader stops" this test
// once showed was that stall, not the client.
func TestClientSettingsFloodClosesConnection(t *testing.T) {
	flooded := make(chan int, 1)
	addr := startHostile(t, func(h *hostile) {
		// The script outlives startHostile's 20 s deadline on a loaded
		// machine only if the client is slow; the test's own deadline
		// below is what fails.
		h.nc.SetDeadline(time.Now().Add(90 * time.Second))
		// Never read: every SETTINGS makes the client owe an ACK. The
		// frames go out in large writes so that the flood is fast.
		var batch bytes.Buffer
		fr := http2.NewFramer(&batch, nil)
		for range 4096 {
			fr.WriteSettings()
		}
		sent := 0
		for sent < 64<<20 {
			n, err := h.nc.Write(batch.Bytes())
			sent += n
			if err != nil {
				break
			}
		}
		flooded <- sent
	})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// A small send buffer makes the ACKs back up in the client soon.
	nc.(*net.TCPConn).SetWriteBuffer(4096)
	cc := NewClientConn(nc, ClientConfig{})
	defer cc.Close()
	select {
	case <-cc.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("a SETTINGS flood did not close the connection within 60 s")
	}
	cc.mu.Lock()
	err = cc.err
	cc.mu.Unlock()
	if err == nil || !strings.Contains(err.Error(), "ENHANCE_YOUR_CALM") {
		t.Errorf("connection ended with %v, want ENHANCE_YOUR_CALM", err)
	}
	select {
	case sent := <-flooded:
		if sent >= 64<<20 {
			t.Errorf("the peer wrote %d bytes of SETTINGS before the client stopped reading", sent)
		}
	case <-time.After(30 * time.Second):
		t.Error("the flooding peer was not cut off after the client closed")
	}
}

func TestClientCancelResetsUpstreamStream(t *testing.T) {
	gotReset := make(chan http2.ErrCode, 1)
	addr := startHostile(t, func(h *hostile) {
		h.fr.WriteSettings()
		f := h.next(isHeaders)
		if f == nil {
			return
		}
		h.headers(f.Header().StreamID, false, ":status", "200")
		h.fr.WriteData(f.Header().StreamID, false, []byte("first"))
		r := h.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
		if r != nil {
			gotReset <- r.(*http2.RSTStreamFrame).ErrCode
		}
	})
	cc := dialClient(t, addr, ClientConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := roundTrip(t, cc, newReq(ctx, "GET", "/stream", nil))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	cancel() // the downstream client went away
	select {
	case code := <-gotReset:
		if code != http2.ErrCodeCancel {
			t.Errorf("RST_STREAM %v, want CANCEL", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no RST_STREAM upstream after cancellation")
	}
	if _, err := resp.Body.Read(buf); !errors.Is(err, context.Canceled) {
		t.Errorf("body read after cancel: %v", err)
	}
	closeResp(resp)
}

func TestClientResponseBackpressure(t *testing.T) {
	// The upstream sends as fast as the client's windows allow; with the
	// body unread, the client must not buffer beyond its stream window.
	sent := make(chan int, 1)
	addr := startHostile(t, func(h *hostile) {
		h.fr.WriteSettings()
		f := h.next(isHeaders)
		if f == nil {
			return
		}
		id := f.Header().StreamID
		h.headers(id, false, ":status", "200")
		window, total := 65535, 0 // the stream window before our SETTINGS are seen, then the client's
		chunk := make([]byte, 16384)
		h.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		for total < window {
			n := min(len(chunk), window-total)
			if h.fr.WriteData(id, false, chunk[:n]) != nil {
				break
			}
			total += n
		}
		sent <- total
		h.drain()
	})
	cc := dialClient(t, addr, ClientConfig{InitialStreamWindow: 65535})
	resp, err := roundTrip(t, cc, newReq(context.Background(), "GET", "/big", nil))
	if err != nil {
		t.Fatal(err)
	}
	total := <-sent
	testWait(t, func() bool {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		for _, s := range cc.streams {
			return len(s.buf) == total
		}
		return false
	})
	cc.mu.Lock()
	for _, s := range cc.streams {
		if s.recv.avail != 0 {
			t.Errorf("stream window %d with the body unread, want 0 (no WINDOW_UPDATE before reads)", s.recv.avail)
		}
	}
	cc.mu.Unlock()
	n, err := io.ReadFull(resp.Body, make([]byte, total))
	if err != nil || n != total {
		t.Fatalf("read %d: %v", n, err)
	}
	cc.mu.Lock()
	for _, s := range cc.streams {
		if s.recv.avail == 0 {
			t.Error("reading the body granted no window back")
		}
	}
	cc.mu.Unlock()
	closeResp(resp)
	_ = os.ErrDeadlineExceeded
}

// The keepalive: a live upstream (net/http's server acknowledges PINGs)
// keeps an idle connection open across many intervals; one that stops
// answering — it reads the PING but never writes again, as a host behind
// a dropped route looks — has its connection closed within the interval
// plus the timeout, failing the request waiting on it.
func TestClientKeepalive(t *testing.T) {
	const interval, timeout = 20 * time.Millisecond, 200 * time.Millisecond
	t.Run("live upstream", func(t *testing.T) {
		addr := startH2C(t, http.HandlerFunc(grpcEcho))
		// A generous timeout: a loaded machine must not fail a live peer.
		cc := dialClient(t, addr, ClientConfig{PingInterval: interval, PingTimeout: 5 * time.Second})
		testWait(t, func() bool { return cc.pingAcks.Load() >= 5 })
		if !cc.Usable() {
			t.Fatal("a connection to a live upstream was closed by the keepalive")
		}
		resp, err := roundTrip(t, cc, newReq(context.Background(), "POST", "/after/pings", strings.NewReader("x")))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		closeResp(resp)
	})
	t.Run("silent upstream", func(t *testing.T) {
		pinged := make(chan struct{})
		addr := startHostile(t, func(h *hostile) {
			h.fr.WriteSettings()
			h.next(isHeaders) // the request
			if f := h.next(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() }); f != nil {
				close(pinged)
			}
			h.drain() // reads, never answers
		})
		cc := dialClient(t, addr, ClientConfig{PingInterval: interval, PingTimeout: timeout})
		_, err := roundTrip(t, cc, newReq(context.Background(), "GET", "/hangs", nil))
		if err == nil || !strings.Contains(err.Error(), "keepalive PING") {
			t.Errorf("request on a silent upstream ended with %v, want the keepalive's error", err)
		}
		select {
		case <-pinged:
		default:
			t.Error("the upstream never saw a PING")
		}
		select {
		case <-cc.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the connection to a silent upstream did not end")
		}
	})
	t.Run("off", func(t *testing.T) {
		addr := startHostile(t, func(h *hostile) {
			h.fr.WriteSettings()
			h.drain()
		})
		cc := dialClient(t, addr, ClientConfig{PingInterval: -1})
		if cc.pingTimer != nil {
			t.Fatal("a negative PingInterval left the keepalive on")
		}
	})
}
