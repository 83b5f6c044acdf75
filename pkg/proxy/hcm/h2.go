package hcm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

func (h *Handler) serveH2(ctx context.Context, nc net.Conn) {
	st := &h2ConnState{nc: nc}
	ctx = context.WithValue(ctx, h2ConnKey{}, st)
	//lint:ignore SA1019 replaced by the proxy's own HTTP/2 server (issue #18)
	h.h2srv.ServeConn(nc, &http2.ServeConnOpts{Context: ctx, BaseConfig: h.h1srv, Handler: http.HandlerFunc(h.serveH2Request)})
}

// h2ConnState counts one HTTP/2 connection's streams and the ones its
// client reset before they were answered.
type h2ConnState struct {
	nc              net.Conn
	streams, resets atomic.Int64
	closed          atomic.Bool
}

type h2ConnKey struct{}

// Premature resets: a client that resets at least prematureResetMin
// streams before their response, and half of all it opened, is flooding
// (CVE-2023-44487) and its connection is closed, as Envoy does
// (premature_reset_total_stream_count).
const prematureResetMin = 100

// noteStreamEnd counts a stream and closes a flooding connection.
func (h *Handler) noteStreamEnd(r *http.Request, answered bool) {
	st, _ := r.Context().Value(h2ConnKey{}).(*h2ConnState)
	if st == nil {
		return
	}
	n := st.streams.Add(1)
	if answered || r.Context().Err() == nil {
		return
	}
	if resets := st.resets.Add(1); resets >= prematureResetMin && 2*resets >= n && !st.closed.Swap(true) {
		h.st.cxPrematureReset.Inc()
		h.env.Log.V(1).Info("closing an HTTP/2 connection that resets most of its streams", "streams", n, "resets", resets)
		st.nc.Close()
	}
}

func (h *Handler) serveH2Request(rw http.ResponseWriter, r *http.Request) {
	h.st.rqHTTP2.Inc()
	if r.Context().Err() != nil {
		// Reset before it was even looked at: no work for it.
		h.noteStreamEnd(r, false)
		return
	}
	w := &h2Writer{rw: rw, ctx: r.Context(), rc: http.NewResponseController(rw), idle: h.cfg.StreamIdleTimeout}
	req, status, err := ConvertH2Request(r, h.cfg.Limits)
	if err != nil {
		h.st.cxProtocolError.Inc()
		h.env.Log.V(1).Info("rejected HTTP/2 request", "status", status, "error", err.Error())
		h.localReply(w, &httpx.Request{Method: r.Method, Proto: "HTTP/2"}, status, "", nil)
		return
	}
	if req.Body != nil && w.idle > 0 {
		req.Body = &h2Body{r: req.Body, w: w}
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		req.RemoteAddr = ap
	}
	h.ServeRequest(r.Context(), req, w)
	h.noteStreamEnd(r, w.started)
}

// errH2Request marks a request the HTTP/2 conversion refused.
var errH2Request = errors.New("invalid HTTP/2 request")

// ConvertH2Request turns a request the HTTP/2 server decoded into the
// proxy's request model, enforcing what the HTTP/2 server leaves to its
// handler (RFC 9113 section 8.1.1 and 8.3): a content-length that
// disagrees with the stream (announced with END_STREAM on HEADERS, or
// several different values) is malformed, as are a path or authority with
// characters that would change the meaning of the request once written as
// HTTP/1.1 upstream. Framing headers are regenerated from the stream, and
// cookie fields are joined as RFC 9113 section 8.2.3 asks. It returns the
// status to answer when the request is refused.
func ConvertH2Request(r *http.Request, lim httpx.Limits) (*httpx.Request, int, error) {
	if lim.MaxHeaders <= 0 {
		lim = httpx.DefaultLimits
	}
	req := &httpx.Request{
		Method: r.Method, Target: r.RequestURI, Authority: r.Host, Proto: "HTTP/2",
		ContentLength: r.ContentLength, Body: r.Body, TLS: r.TLS, Scheme: "http",
	}
	if r.TLS != nil {
		req.Scheme = "https"
	}
	if r.Method == http.MethodConnect {
		return nil, 400, fmt.Errorf("%w: CONNECT is not supported", errH2Request)
	}
	if !httpx.ValidFieldName(req.Method) {
		return nil, 400, fmt.Errorf("%w: invalid method", errH2Request)
	}
	if !httpx.ValidTarget(req.Target) || req.Target == "*" && req.Method != http.MethodOptions {
		return nil, 400, fmt.Errorf("%w: invalid :path %q", errH2Request, req.Target)
	}
	if req.Authority == "" {
		// RFC 9113 section 8.3.1: http and https requests carry :authority
		// or host; nothing would say where this one goes.
		return nil, 400, fmt.Errorf("%w: neither :authority nor host", errH2Request)
	}
	if !httpx.ValidAuthority(req.Authority) {
		return nil, 400, fmt.Errorf("%w: invalid :authority %q", errH2Request, req.Authority)
	}
	n := 0
	for _, vs := range r.Header {
		n += len(vs)
	}
	if n > lim.MaxHeaders {
		return nil, 431, fmt.Errorf("%w: %d header fields, more than %d", errH2Request, n, lim.MaxHeaders)
	}
	req.Header.Fields = make([]httpx.Field, 0, n)
	var cookies []string
	for k, vs := range r.Header {
		name := strings.ToLower(k)
		if name == "host" || name == "cookie" || strings.HasPrefix(name, ":") {
			switch name {
			case "cookie":
				cookies = append(cookies, vs...)
			case "host":
			default:
				return nil, 400, fmt.Errorf("%w: pseudo-header %s", errH2Request, name)
			}
			continue
		}
		for _, v := range vs {
			if !httpx.ValidFieldValue(v) {
				return nil, 400, fmt.Errorf("%w: invalid value of %s", errH2Request, name)
			}
			req.Header.Fields = append(req.Header.Fields, httpx.Field{Name: name, Value: v})
		}
	}
	if len(cookies) > 0 {
		req.Header.Fields = append(req.Header.Fields, httpx.Field{Name: "cookie", Value: strings.Join(cookies, "; ")})
	}
	cl, err := httpx.ParseContentLength(&req.Header)
	if err != nil {
		return nil, 400, fmt.Errorf("%w: %v", errH2Request, err)
	}
	req.Header.Del("content-length")
	// The HTTP/2 server reports -1 for a body of unknown length, the
	// declared length when there is one, and 0 when the stream ended with
	// its HEADERS: a content-length above 0 then announces bytes that will
	// never come, and forwarding it would make the upstream read the next
	// request on its connection as this one's body.
	if cl > 0 && r.ContentLength != cl {
		return nil, 400, fmt.Errorf("%w: content-length %d on a stream with %d body bytes", errH2Request, cl, max(r.ContentLength, 0))
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		req.Body, req.ContentLength = nil, 0
	}
	if body := r.Body; body != nil {
		req.AbortBody = func() { body.Close() }
	}
	return req, 0, nil
}

// h2Body reads a request body, failing the stream when no byte arrives
// within the stream idle timeout.
type h2Body struct {
	r      io.Reader
	w      *h2Writer
	pushed time.Time
}

func (b *h2Body) Read(p []byte) (int, error) {
	if now := time.Now(); now.Sub(b.pushed) > slack(b.w.idle) {
		b.pushed = now
		b.w.rc.SetReadDeadline(now.Add(b.w.idle))
	}
	return b.r.Read(p)
}

// h2Writer adapts net/http's HTTP/2 response writer.
type h2Writer struct {
	rw      http.ResponseWriter
	rc      *http.ResponseController
	ctx     context.Context
	idle    time.Duration
	pushed  time.Time
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
	if w.idle > 0 {
		// A client that stops granting flow-control window blocks writes:
		// the stream ends after the stream idle timeout.
		if now := time.Now(); now.Sub(w.pushed) > slack(w.idle) {
			w.pushed = now
			w.rc.SetWriteDeadline(now.Add(w.idle))
		}
	}
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
