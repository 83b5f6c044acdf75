package hcm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/http2"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// Env is what every connection manager shares.
type Env struct {
	// Routes returns the active route table of a name (nil if unknown).
	Routes    func(name string) *router.Table
	Clusters  *upstream.Manager
	Stats     *stats.Store
	AccessLog *accesslog.Logger
	Log       logr.Logger
	// Ctx bounds work that outlives a request (mirrors).
	Ctx context.Context
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration
	mirrors     chan struct{}
	once        sync.Once
}

func (e *Env) mirrorSlot() bool {
	e.once.Do(func() { e.mirrors = make(chan struct{}, 1024) })
	select {
	case e.mirrors <- struct{}{}:
		return true
	default:
		return false
	}
}

func (e *Env) mirrorDone() { <-e.mirrors }

type hcmStats struct {
	cxTotal, cxHTTP1, cxHTTP2, cxProtocolError, cxDestroy     *stats.Counter
	rqTotal, rqHTTP1, rqHTTP2, noRoute, noCluster, rqRedirect *stats.Counter
	rqDirect, rqTimeout, rqFault, rqDelay, rqCORSPreflight    *stats.Counter
	rqClass                                                   [6]*stats.Counter
	cxActive, rqActive                                        *stats.Gauge
	rqTime                                                    *stats.Histogram
	bare                                                      *stats.Counter
}

func newHCMStats(store *stats.Store, prefix string) *hcmStats {
	sc := stats.HTTPScope(prefix)
	c := func(n string) *stats.Counter { return store.Counter(sc, n) }
	s := &hcmStats{
		cxTotal: c("downstream_cx_total"), cxHTTP1: c("downstream_cx_http1_total"), cxHTTP2: c("downstream_cx_http2_total"),
		cxProtocolError: c("downstream_cx_protocol_error"), cxDestroy: c("downstream_cx_destroy"),
		rqTotal: c("downstream_rq_total"), rqHTTP1: c("downstream_rq_http1_total"), rqHTTP2: c("downstream_rq_http2_total"),
		noRoute: c("no_route"), noCluster: c("no_cluster"), rqRedirect: c("rq_redirect"), rqDirect: c("rq_direct_response"),
		rqTimeout: c("downstream_rq_timeout"), rqFault: c("fault.aborts_injected"), rqDelay: c("fault.delays_injected"),
		rqCORSPreflight: c("cors.preflight_count"),
		cxActive:        store.Gauge(sc, "downstream_cx_active"), rqActive: store.Gauge(sc, "downstream_rq_active"),
		rqTime: store.Histogram(sc, "downstream_rq_time"),
		bare:   store.Counter(nil, "downstream_rq_total"),
	}
	for i, class := range []string{"", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		if class != "" {
			s.rqClass[i] = c("downstream_rq_" + class)
		}
	}
	return s
}

// Handler serves connections for one filter chain configuration. When the
// configuration is replaced, Drain lets its connections finish: HTTP/1.1
// responses carry "Connection: close", HTTP/2 connections get GOAWAY.
type Handler struct {
	cfg *Config
	env *Env
	st  *hcmStats

	draining atomic.Bool
	mu       sync.Mutex
	conns    map[*h1conn]struct{}
	h1srv    *http.Server // base for HTTP/2 graceful shutdown
	h2srv    *http2.Server
}

// NewHandler returns a handler for cfg.
func NewHandler(cfg *Config, env *Env) *Handler {
	h := &Handler{cfg: cfg, env: env, st: newHCMStats(env.Stats, cfg.StatPrefix), conns: map[*h1conn]struct{}{}}
	h.h1srv = &http.Server{}
	h.h2srv = &http2.Server{IdleTimeout: env.IdleTimeout}
	if err := http2.ConfigureServer(h.h1srv, h.h2srv); err != nil {
		env.Log.Error(err, "configuring HTTP/2")
	}
	return h
}

// Config returns the handler's configuration.
func (h *Handler) Config() *Config { return h.cfg }

// Drain starts graceful shutdown of the handler's connections and closes
// whatever is left at the deadline.
func (h *Handler) Drain(deadline time.Duration) {
	if h.draining.Swap(true) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		h.h1srv.Shutdown(ctx) // sends GOAWAY to HTTP/2 connections
		t := time.NewTimer(deadline)
		defer t.Stop()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			h.mu.Lock()
			n := len(h.conns)
			h.mu.Unlock()
			if n == 0 {
				return
			}
			select {
			case <-t.C:
				h.mu.Lock()
				for c := range h.conns {
					c.nc.Close()
				}
				h.mu.Unlock()
				return
			case <-tick.C:
			}
		}
	}()
}

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// ServeConn serves one downstream connection until it closes. tlsConn is
// the TLS connection when TLS was terminated (nc is then the same value).
func (h *Handler) ServeConn(ctx context.Context, nc net.Conn, tlsConn *tls.Conn) {
	h.st.cxTotal.Inc()
	h.st.cxActive.Inc()
	defer func() {
		h.st.cxActive.Dec()
		h.st.cxDestroy.Inc()
	}()
	var state *tls.ConnectionState
	if tlsConn != nil {
		cs := tlsConn.ConnectionState()
		state = &cs
		if cs.NegotiatedProtocol == "h2" {
			h.st.cxHTTP2.Inc()
			h.serveH2(ctx, tlsConn)
			return
		}
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(nc)
	defer func() { br.Reset(nil); readerPool.Put(br) }()
	if state == nil {
		nc.SetReadDeadline(time.Now().Add(h.idleTimeout()))
		if b, err := br.Peek(3); err == nil && string(b) == "PRI" {
			if b, err := br.Peek(len(h2Preface)); err == nil && bytes.Equal(b, h2Preface) {
				nc.SetReadDeadline(time.Time{})
				h.st.cxHTTP2.Inc()
				h.serveH2(ctx, &bufferedConn{Conn: nc, r: br})
				return
			}
		}
	}
	h.st.cxHTTP1.Inc()
	h.serveH1(ctx, nc, br, state)
}

func (h *Handler) idleTimeout() time.Duration {
	if h.env.IdleTimeout > 0 {
		return h.env.IdleTimeout
	}
	return time.Hour
}

// bufferedConn replays bytes already read into a bufio.Reader.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

type h1conn struct {
	nc net.Conn
}

func (h *Handler) serveH1(ctx context.Context, nc net.Conn, br *bufio.Reader, state *tls.ConnectionState) {
	c := &h1conn{nc: nc}
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
		nc.Close()
	}()
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(nc)
	defer func() { bw.Reset(nil); writerPool.Put(bw) }()
	remote, local := addrPort(nc.RemoteAddr()), addrPort(nc.LocalAddr())
	scheme := "http"
	if state != nil {
		scheme = "https"
	}
	var scratch [4096]byte
	req := &httpx.Request{}
	w := &h1Writer{bw: bw}
	idle := h.idleTimeout()
	// A draining handler still serves the next request on every
	// connection, new or pooled, and answers it with Connection: close:
	// closing an idle connection instead would race the client's next
	// request. Connections still idle at the drain deadline are closed.
	for {
		nc.SetReadDeadline(time.Now().Add(idle))
		err := httpx.ReadRequest(br, req, scratch[:0])
		if err != nil {
			if errors.Is(err, httpx.ErrMalformed) || errors.Is(err, httpx.ErrHeaderTooLarge) {
				h.st.cxProtocolError.Inc()
				status := 400
				if errors.Is(err, httpx.ErrHeaderTooLarge) {
					status = 431
				}
				w.reset("HTTP/1.1", true)
				h.localReply(w, &httpx.Request{Proto: "HTTP/1.1"}, status, "", nil)
				bw.Flush()
			}
			return
		}
		nc.SetReadDeadline(time.Time{})
		req.Scheme, req.RemoteAddr, req.LocalAddr, req.TLS = scheme, remote, local, state
		w.reset(req.Proto, req.Close || h.draining.Load())
		h.st.rqHTTP1.Inc()
		keep := h.ServeRequest(ctx, req, w)
		if err := bw.Flush(); err != nil {
			return
		}
		if !keep || w.close || req.Close {
			return
		}
		if req.Body != nil && !httpx.Drained(req.Body) {
			// Read what the client still sends, within reason, so the
			// connection stays usable.
			if !httpx.Discard(req.Body, 256<<10) {
				return
			}
		}
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// h1Writer writes an HTTP/1.1 response.
type h1Writer struct {
	bw      *bufio.Writer
	proto   string
	close   bool
	chunked bool
	started bool
	written int64
	noBody  bool
}

func (w *h1Writer) reset(proto string, close bool) {
	w.proto, w.close, w.chunked, w.started, w.written, w.noBody = proto, close, false, false, 0, false
}

func (w *h1Writer) WriteHeader(status int, hdr *httpx.Header, length int64, noBody bool) error {
	w.started, w.noBody = true, noBody
	if length < 0 && w.proto != "HTTP/1.1" && !noBody {
		w.close = true
	}
	w.chunked = httpx.WriteResponseHead(w.bw, status, hdr, length, w.proto, w.close, noBody)
	return nil
}

func (w *h1Writer) Write(p []byte) (int, error) {
	if w.noBody {
		return len(p), nil
	}
	var n int
	var err error
	if w.chunked {
		n, err = httpx.ChunkedWriter{W: w.bw}.Write(p)
	} else {
		n, err = w.bw.Write(p)
	}
	w.written += int64(n)
	return n, err
}

func (w *h1Writer) Finish(*httpx.Header) error {
	if w.chunked {
		return httpx.ChunkedWriter{W: w.bw}.Close()
	}
	return nil
}

func (w *h1Writer) Flush() error             { return w.bw.Flush() }
func (w *h1Writer) Started() bool            { return w.started }
func (w *h1Writer) Written() int64           { return w.written }
func (w *h1Writer) CloseAfter()              { w.close = true }
func (w *h1Writer) Context() context.Context { return nil }

// ResponseWriter abstracts HTTP/1.1 and HTTP/2 responses.
type ResponseWriter interface {
	// WriteHeader sends status and headers; length is -1 when unknown.
	WriteHeader(status int, hdr *httpx.Header, length int64, noBody bool) error
	Write(p []byte) (int, error)
	// Finish ends the body, with trailers where the protocol has them.
	Finish(trailers *httpx.Header) error
	Flush() error
	Started() bool
	Written() int64
	// CloseAfter asks for the connection to close after this response.
	CloseAfter()
	// Context is cancelled when the client goes away (HTTP/2), or nil.
	Context() context.Context
}

func (h *Handler) serveH2(ctx context.Context, nc net.Conn) {
	h.h2srv.ServeConn(nc, &http2.ServeConnOpts{Context: ctx, BaseConfig: h.h1srv, Handler: http.HandlerFunc(h.serveH2Request)})
}

func (h *Handler) serveH2Request(rw http.ResponseWriter, r *http.Request) {
	h.st.rqHTTP2.Inc()
	req := &httpx.Request{
		Method: r.Method, Target: r.RequestURI, Authority: r.Host, Proto: "HTTP/2",
		ContentLength: r.ContentLength, Body: r.Body, TLS: r.TLS, Scheme: "http",
	}
	if r.TLS != nil {
		req.Scheme = "https"
	}
	// The HTTP/2 server reports -1 for a body of unknown length and 0 when
	// the stream ended with its HEADERS (or announced content-length: 0):
	// only then is there no body to forward (nor to buffer for retries).
	if r.ContentLength == 0 || r.Body == http.NoBody {
		req.Body, req.ContentLength = nil, 0
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		req.RemoteAddr = ap
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Del("host")
	w := &h2Writer{rw: rw, ctx: r.Context()}
	h.ServeRequest(r.Context(), req, w)
}

// h2Writer adapts net/http's HTTP/2 response writer.
type h2Writer struct {
	rw      http.ResponseWriter
	ctx     context.Context
	started bool
	written int64
}

func (w *h2Writer) WriteHeader(status int, hdr *httpx.Header, length int64, noBody bool) error {
	w.started = true
	dst := w.rw.Header()
	for _, f := range hdr.Fields {
		dst[http.CanonicalHeaderKey(f.Name)] = append(dst[http.CanonicalHeaderKey(f.Name)], f.Value)
	}
	if length >= 0 && !noBody {
		dst.Set("Content-Length", itoa(length))
	}
	w.rw.WriteHeader(status)
	return nil
}

func (w *h2Writer) Write(p []byte) (int, error) {
	n, err := w.rw.Write(p)
	w.written += int64(n)
	return n, err
}

func (w *h2Writer) Finish(trailers *httpx.Header) error {
	if trailers != nil {
		for _, f := range trailers.Fields {
			w.rw.Header().Add(http.TrailerPrefix+f.Name, f.Value)
		}
	}
	return nil
}

func (w *h2Writer) Flush() error {
	if f, ok := w.rw.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

func (w *h2Writer) Started() bool            { return w.started }
func (w *h2Writer) Written() int64           { return w.written }
func (w *h2Writer) CloseAfter()              {}
func (w *h2Writer) Context() context.Context { return w.ctx }

var _ io.Writer = (*h2Writer)(nil)
