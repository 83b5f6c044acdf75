package hcm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/net/http2"

	"github.com/portico-gateway/portico/pkg/proxy/h2"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

// serveH2 serves an HTTP/2 connection (h2c with prior knowledge, or TLS
// with ALPN h2) with the proxy's own HTTP/2 server; every request goes
// through the same pipeline as HTTP/1.1 ones (ServeRequest).
func (h *Handler) serveH2(ctx context.Context, nc net.Conn, state *tls.ConnectionState) {
	remote, local := addrPort(nc.RemoteAddr()), addrPort(nc.LocalAddr())
	remoteHost := hostText(remote) // once per connection, not per stream
	cfg := h2.Config{
		MaxConcurrentStreams:    h.cfg.HTTP2.MaxConcurrentStreams,
		InitialStreamWindow:     h.cfg.HTTP2.InitialStreamWindow,
		InitialConnectionWindow: h.cfg.HTTP2.InitialConnectionWindow,
		MaxHeaderListSize:       uint32(h.cfg.Limits.MaxHeaderBytes),
		IdleTimeout:             h.idleTimeout(),
		StreamIdleTimeout:       h.cfg.StreamIdleTimeout,
		PrefaceTimeout:          h.cfg.RequestHeadersTimeout,
		TLS:                     state,
		Log:                     h.env.Log,
		OnPrematureResetClose:   func(streams, resets int64) { h.st.cxPrematureReset.Inc() },
	}
	c := h2.NewConn(nc, cfg, func(s *h2.Stream) {
		h.serveH2Stream(s, state, remote, local, remoteHost)
	})
	h.h2conns.add(c)
	defer h.h2conns.remove(c)
	if h.draining.Load() {
		c.Shutdown()
	}
	c.Serve(ctx)
}

func (h *Handler) serveH2Stream(s *h2.Stream, state *tls.ConnectionState, remote, local netip.AddrPort, remoteHost string) {
	h.st.rqHTTP2.Inc()
	if s.Context().Err() != nil {
		return // reset before it was even looked at: no work for it
	}
	w := &h2Writer{s: s}
	if s.Truncated {
		// The header list was larger than SETTINGS_MAX_HEADER_LIST_SIZE.
		h.st.cxProtocolError.Inc()
		h.localReply(w, &httpx.Request{Method: s.Method, Proto: "HTTP/2"}, 431, "", nil)
		return
	}
	var body io.Reader
	if s.HasBody() {
		body = s
	}
	req, status, err := ConvertH2Request(&s.Request, body, state, h.cfg.Limits)
	if err != nil {
		h.st.cxProtocolError.Inc()
		h.env.Log.V(1).Info("rejected HTTP/2 request", "status", status, "error", err.Error())
		if status == 400 {
			// A malformed request is a stream error of type PROTOCOL_ERROR;
			// the server may answer before it resets the stream (RFC 9113
			// section 8.1.1), as nginx answers 400.
			w.resetAfter = true
		}
		h.localReply(w, &httpx.Request{Method: s.Method, Proto: "HTTP/2"}, status, "", nil)
		return
	}
	if req.Body != nil {
		req.AbortBody = s.AbortRead
	}
	req.RemoteAddr, req.LocalAddr, req.RemoteHost = remote, local, remoteHost
	h.ServeRequest(s.Context(), req, w)
}

// errH2Request marks a request the HTTP/2 conversion refused.
var errH2Request = errors.New("invalid HTTP/2 request")

// ConvertH2Request turns a request the HTTP/2 server decoded into the
// proxy's request model, enforcing what the HTTP/2 server leaves to its
// handler (RFC 9113 section 8.1.1, 8.2.2 and 8.3): connection-specific
// fields are malformed, as is a content-length that disagrees with the
// stream (announced with END_STREAM on HEADERS, or several different
// values), and a path or authority with characters that would change
// the meaning of the request once written as HTTP/1.1 upstream. Framing
// headers are regenerated from the stream, and cookie fields are joined
// as RFC 9113 section 8.2.3 asks. body is nil when HEADERS ended the
// stream. It returns the status to answer when the request is refused.
func ConvertH2Request(r *h2.Request, body io.Reader, state *tls.ConnectionState, lim httpx.Limits) (*httpx.Request, int, error) {
	if lim.MaxHeaders <= 0 {
		lim = httpx.DefaultLimits
	}
	req := &httpx.Request{
		Method: r.Method, Target: r.Path, Authority: r.Authority, Proto: "HTTP/2",
		ContentLength: r.ContentLength, Body: body, TLS: state, Scheme: "http",
	}
	if state != nil {
		req.Scheme = "https"
	}
	if body == nil {
		req.ContentLength = 0
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
	if n := len(r.Fields); n > lim.MaxHeaders {
		return nil, 431, fmt.Errorf("%w: %d header fields, more than %d", errH2Request, n, lim.MaxHeaders)
	}
	// Room for what the edge adds (x-forwarded-for, x-forwarded-proto,
	// x-request-id, x-envoy-*): r.Fields' pseudo-headers are not copied,
	// so with a few more the header is not reallocated on its way.
	req.Header.Fields = make([]httpx.Field, 0, len(r.Fields)+4)
	var cookies []string
	host, tes := "", 0
	for _, f := range r.Fields {
		switch name := f.Name; name {
		case "cookie":
			cookies = append(cookies, f.Value)
			continue
		case "host":
			if host == "" {
				host = f.Value
			}
			continue
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			// RFC 9113 section 8.2.2: connection-specific fields make a
			// request malformed.
			return nil, 400, fmt.Errorf("%w: connection-specific field %s", errH2Request, name)
		case "te":
			if tes++; tes > 1 || f.Value != "trailers" && f.Value != "" {
				return nil, 400, fmt.Errorf("%w: te other than trailers", errH2Request)
			}
		}
		if !httpx.ValidFieldValue(f.Value) {
			return nil, 400, fmt.Errorf("%w: invalid value of %s", errH2Request, f.Name)
		}
		req.Header.Fields = append(req.Header.Fields, httpx.Field{Name: f.Name, Value: f.Value})
	}
	if req.Authority == "" {
		req.Authority = host
	} else if host != "" && !strings.EqualFold(host, req.Authority) {
		// RFC 9113 section 8.3.1: a host that names another entity than
		// :authority makes the request malformed (x/net's server refused
		// it too; nginx answers 400).
		return nil, 400, fmt.Errorf("%w: host differs from :authority", errH2Request)
	}
	if req.Authority == "" {
		// RFC 9113 section 8.3.1: http and https requests carry :authority
		// or host; nothing would say where this one goes.
		return nil, 400, fmt.Errorf("%w: neither :authority nor host", errH2Request)
	}
	if !httpx.ValidAuthority(req.Authority) {
		return nil, 400, fmt.Errorf("%w: invalid :authority %q", errH2Request, req.Authority)
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
	if cl > 0 && req.ContentLength != cl {
		return nil, 400, fmt.Errorf("%w: content-length %d on a stream with %d body bytes", errH2Request, cl, max(req.ContentLength, 0))
	}
	if req.ContentLength == 0 {
		req.Body = nil
	}
	return req, 0, nil
}

// h2Writer adapts an HTTP/2 stream to the connection manager's
// ResponseWriter.
type h2Writer struct {
	s       *h2.Stream
	started bool
	noBody  bool
	written int64
	// resetAfter ends the response with RST_STREAM(PROTOCOL_ERROR)
	// instead of END_STREAM.
	resetAfter bool
}

func (w *h2Writer) WriteHeader(status int, hdr *httpx.Header, length int64, noBody bool) error {
	w.started, w.noBody = true, noBody
	var more []httpx.Field
	var cl [1]httpx.Field // beside the header's fields, not appended to a copy of them
	if length >= 0 && !noBody {
		cl[0] = httpx.Field{Name: "content-length", Value: itoa(length)}
		more = cl[:]
	}
	// A response without a body ends with its HEADERS frame.
	return w.s.WriteHeader(status, hdr.Fields, more, noBody && !w.resetAfter)
}

func (w *h2Writer) Write(p []byte) (int, error) {
	if w.noBody {
		return len(p), nil
	}
	n, err := w.s.Write(p)
	w.written += int64(n)
	return n, err
}

func (w *h2Writer) Finish(trailers *httpx.Header) error {
	if w.resetAfter {
		w.s.Reset(http2.ErrCodeProtocol)
		return nil
	}
	if w.noBody {
		return nil
	}
	var t []httpx.Field
	if trailers != nil {
		t = trailers.Fields
	}
	return w.s.End(t)
}

// Continue sends an interim 100 (Continue) for "expect: 100-continue".
func (w *h2Writer) Continue() error { return w.s.Continue() }

func (w *h2Writer) Flush() error {
	w.s.Flush()
	return nil
}

func (w *h2Writer) Started() bool            { return w.started }
func (w *h2Writer) Written() int64           { return w.written }
func (w *h2Writer) CloseAfter()              {}
func (w *h2Writer) Context() context.Context { return w.s.Context() }

var _ io.Writer = (*h2Writer)(nil)

// h2Conns are a handler's HTTP/2 connections, for draining.
type h2Conns struct {
	mu sync.Mutex
	m  map[*h2.Conn]struct{}
}

func (cs *h2Conns) add(c *h2.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.m == nil {
		cs.m = map[*h2.Conn]struct{}{}
	}
	cs.m[c] = struct{}{}
}

func (cs *h2Conns) remove(c *h2.Conn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.m, c)
}

func (cs *h2Conns) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.m)
}

// shutdown sends GOAWAY to every connection: each closes once its
// streams are done.
func (cs *h2Conns) shutdown() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.m {
		c.Shutdown()
	}
}

func (cs *h2Conns) closeAll() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for c := range cs.m {
		c.Close()
	}
}
