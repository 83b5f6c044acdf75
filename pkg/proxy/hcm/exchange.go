package hcm

import (
	"context"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/istiometrics"
	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/tracing"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// exchange is one request's state as it crosses the proxy.
type exchange struct {
	h     *Handler
	ctx   context.Context
	req   *httpx.Request
	w     ResponseWriter
	start time.Time
	// duration is the request's, from start to its end (set then).
	duration time.Duration
	flags    accesslog.Flags
	status   int
	upstream string
	// upstreamTime is the time to the first upstream response byte.
	upstreamTime time.Duration
	external     bool
	route        *router.Route
	// repicked: the request already chose again after its host was
	// ejected while it waited for a connection.
	repicked bool
	// respHeaders are added to any response (CORS, hash cookies).
	extraResp []httpx.Field
	origPath  string
	xff, ua   string
	requestID string
	bytesIn   int64
	// detach takes a streamed request body back from an HTTP/2 transport.
	detach *detachableBody
	// upgrade: a WebSocket upgrade the connection manager accepts;
	// tunneled counts what went downstream after the 101.
	upgrade  bool
	tunneled int64
	// cluster and host are where the request went (nil: nowhere), for
	// Istio's destination labels.
	cluster *upstream.Cluster
	host    *upstream.Host
	// grpcStatus is the response's grpc-status (-1: none); respHeaderBytes
	// the size of the response headers sent.
	grpcStatus      int
	respHeaderBytes int64
	// respLog holds response headers for access log formats (nil: none).
	respLog *capturedHeaders
	// span is the request's server span (nil: not traced).
	span *tracing.Span

	// Storage the exchange would otherwise allocate, request after
	// request, each piece on its own: the request body's source, the
	// upstream response head (with room for a typical header count),
	// the hosts tried, and a generated x-request-id.
	body       bodySource
	resp       httpx.Response
	respFields [12]httpx.Field
	triedBuf   [2]*upstream.Host
	rid        [36]byte
}

// ServeRequest runs one request through the pipeline and reports whether
// the connection may serve another.
func (h *Handler) ServeRequest(ctx context.Context, req *httpx.Request, w ResponseWriter) bool {
	x := &exchange{h: h, ctx: ctx, req: req, w: w, start: req.Received, upstreamTime: -1, grpcStatus: -1}
	if x.start.IsZero() {
		x.start = time.Now()
	}
	if c := w.Context(); c != nil {
		x.ctx = c
	}
	h.st.rqTotal.Inc()
	h.st.bare.Inc()
	h.st.rqActive.Inc()
	keep := x.run()
	h.st.rqActive.Dec()
	x.duration = time.Since(x.start)
	h.st.rqTime.Observe(x.duration)
	if x.status > 0 && x.status < 600 {
		h.st.rqClass[x.status/100].Inc()
	}
	if x.span != nil {
		x.finishSpan()
	}
	if len(h.logs) > 0 {
		x.log()
	}
	if h.env.Istio != nil {
		x.recordIstio()
	}
	return keep
}

// recordIstio counts the request in Istio's standard metrics. Sizes are
// headers plus body, as Istio's request_bytes and response_bytes are.
func (x *exchange) recordIstio() {
	r := istiometrics.Request{Cluster: x.cluster, Host: x.host, Protocol: istiometrics.HTTP, Code: x.status,
		GRPCStatus: x.grpcStatus, Flags: x.flags, Duration: x.duration,
		RequestBytes:  requestHeaderBytes(x.req) + x.bytesIn,
		ResponseBytes: x.respHeaderBytes + x.w.Written() + x.tunneled}
	if strings.HasPrefix(x.req.Header.Get("content-type"), "application/grpc") {
		r.Protocol = istiometrics.GRPC
	}
	x.h.env.Istio.RecordHTTP(&r)
}

// requestHeaderBytes is the size of a request's headers as Envoy counts
// them: names and values, pseudo-headers included.
func requestHeaderBytes(r *httpx.Request) int64 {
	n := len(":method") + len(r.Method) + len(":path") + len(r.Target) + len(":authority") + len(r.Authority) +
		len(":scheme") + len(r.Scheme)
	return int64(n) + headerBytes(&r.Header)
}

// headerBytes is the size of a header block's names and values.
func headerBytes(h *httpx.Header) int64 {
	n := 0
	for i := range h.Fields {
		n += len(h.Fields[i].Name) + len(h.Fields[i].Value)
	}
	return int64(n)
}

func (x *exchange) log() {
	e := accesslog.Entry{
		Start: x.start, Method: x.req.Method, Path: x.origPath, Protocol: x.req.Proto, Code: x.status, Flags: x.flags,
		BytesReceived: x.bytesIn, BytesSent: x.w.Written() + x.tunneled, Duration: x.duration, UpstreamServiceTime: x.upstreamTime,
		ForwardedFor: x.xff, UserAgent: x.ua, RequestID: x.requestID, Authority: x.req.Authority, UpstreamHost: x.upstream,
		Scheme: x.req.Scheme, ReqHeaders: &x.req.Header,
	}
	if e.Path == "" {
		e.Path = x.req.Target
	}
	if x.cluster != nil {
		e.Cluster = x.cluster.Name()
	}
	if x.route != nil {
		e.RouteName = x.route.Name
	}
	if x.req.TLS != nil {
		e.SNI = x.req.TLS.ServerName
	}
	if x.req.RemoteAddr.IsValid() {
		e.DownstreamRemote = x.req.RemoteAddr.String()
	}
	if x.req.LocalAddr.IsValid() {
		e.DownstreamLocal = x.req.LocalAddr.String()
	}
	if x.respLog != nil {
		e.RespHeaders = x.respLog
	}
	for i := range x.h.logs {
		x.h.logs[i].Log(&e)
	}
}

// capturedHeaders are the response headers an access log format reads,
// copied when the response is sent (the header block itself is reused).
type capturedHeaders struct {
	names, values []string
}

func (c *capturedHeaders) Get(name string) string {
	for i, n := range c.names {
		if n == name {
			return c.values[i]
		}
	}
	return ""
}

// captureResp keeps the response headers the access log formats read.
func (x *exchange) captureResp(hdr *httpx.Header) {
	names := x.h.cfg.logRespHeaders
	if len(names) == 0 || len(x.h.logs) == 0 {
		return
	}
	c := &capturedHeaders{names: names, values: make([]string, len(names))}
	for i, n := range names {
		c.values[i] = hdr.Get(n)
	}
	x.respLog = c
}

func (x *exchange) run() bool {
	h, req := x.h, x.req
	x.origPath = req.Target
	if req.ContentLength > 0 {
		x.bytesIn = req.ContentLength
	}
	// Connection-specific headers go first, as received: a client must not
	// be able to nominate away what the proxy adds next. A WebSocket
	// upgrade is recognised before they go (tunnel puts its own back).
	if h.cfg.WebSocket {
		if _, ok := x.w.(hijacker); ok {
			x.upgrade = isWebSocketUpgrade(req)
		}
	}
	httpx.RemoveHopByHop(&req.Header)
	if !x.underscores() {
		x.flags |= accesslog.DownstreamProtocolError
		return x.replyAndClose(400, "", nil)
	}
	if !x.edgeHeaders() {
		return x.replyAndClose(400, "", nil)
	}
	if h.tracer != nil {
		x.startSpan()
	}
	switch p, v := h.cfg.processPath(req.Target); v {
	case pathReject:
		x.flags |= accesslog.DownstreamProtocolError
		return x.replyAndClose(400, "", nil)
	case pathRedirect:
		h.st.rqRedirect.Inc()
		return x.reply(307, "", []httpx.Field{{Name: "location", Value: p}})
	default:
		req.Target = p
	}
	host := req.Authority
	if h.cfg.StripAnyHostPort {
		host = router.StripPort(host)
	}
	table := h.env.Routes(h.cfg.RouteConfig)
	var vh *router.VirtualHost
	if table != nil {
		vh = table.VirtualHost(host)
	}
	if vh == nil {
		return x.noRoute()
	}
	if vh.RequireTLS == router.RequireTLSAll && req.TLS == nil ||
		vh.RequireTLS == router.RequireTLSExternalOnly && req.TLS == nil && x.external {
		h.st.rqRedirect.Inc()
		loc := "https://" + host + req.Target
		return x.reply(301, "", []httpx.Field{{Name: "location", Value: loc}})
	}
	route := vh.Match(req)
	if route == nil {
		return x.noRoute()
	}
	x.route = route
	if done, keep := x.runFilters(route); done {
		return keep
	}
	switch route.Action {
	case router.DirectResponse:
		h.st.rqDirect.Inc()
		x.applyRequestOps(nil)
		return x.reply(route.Direct.Status, route.Direct.Body, nil)
	case router.Redirect:
		h.st.rqRedirect.Inc()
		return x.reply(route.Redirect.Code, "", []httpx.Field{{Name: "location", Value: x.redirectLocation(route.Redirect, host)}})
	}
	return x.forward(route)
}

func (x *exchange) noRoute() bool {
	x.h.st.noRoute.Inc()
	x.flags |= accesslog.NoRouteFound
	return x.reply(404, "", nil)
}

// applyRequestOps runs a route's (and a chosen cluster's) request header
// operations: the cluster's first, so the route's win.
func (x *exchange) applyRequestOps(wc *router.WeightedCluster) {
	if wc != nil && !wc.RequestHeaders.Empty() {
		wc.RequestHeaders.Apply(&x.req.Header)
	}
	if x.route != nil && !x.route.RequestHeaders.Empty() {
		x.route.RequestHeaders.Apply(&x.req.Header)
	}
}

func (x *exchange) redirectLocation(r *router.RedirectAction, host string) string {
	scheme := x.req.Scheme
	if r.Scheme != "" {
		scheme = r.Scheme
	}
	hostname, port := host, ""
	if orig := x.req.Authority; strings.Contains(orig, ":") && !x.h.cfg.StripAnyHostPort {
		hostname = router.StripPort(orig)
		port = orig[len(hostname)+1:]
	}
	if r.Host != "" {
		hostname = r.Host
	}
	if r.Port != 0 {
		port = strconv.Itoa(int(r.Port))
	}
	if r.Scheme != "" && r.Port == 0 {
		port = "" // switching scheme drops a port from the original request
	}
	if port == "80" && scheme == "http" || port == "443" && scheme == "https" {
		port = ""
	}
	path, query := x.req.Path(), x.req.Query()
	switch {
	case r.Path != "":
		path = r.Path
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path, query = path[:i], path[i+1:]
		}
	case r.PrefixRewrite != "":
		path = x.route.RewritePrefix(path, r.PrefixRewrite)
	}
	if r.StripQuery {
		query = ""
	}
	loc := scheme + "://" + hostname
	if port != "" {
		loc += ":" + port
	}
	loc += path
	if query != "" {
		loc += "?" + query
	}
	return loc
}

// fault applies delay and abort; it reports whether the request is done.
func (x *exchange) fault(f *router.Fault) (done, keep bool) {
	if f.DelayPerMillion > 0 && rand.Uint32N(1000000) < f.DelayPerMillion {
		x.flags |= accesslog.DelayInjected
		x.h.st.rqDelay.Inc()
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-x.ctx.Done():
			t.Stop()
			x.flags |= accesslog.DownstreamConnectionTermination
			x.status = 499
			return true, false
		}
	}
	if f.AbortPerMillion > 0 && rand.Uint32N(1000000) < f.AbortPerMillion {
		x.flags |= accesslog.FaultInjected
		x.h.st.rqFault.Inc()
		if f.GRPCStatus >= 0 {
			x.grpcStatus = f.GRPCStatus
			return true, x.reply(200, "", []httpx.Field{{Name: "content-type", Value: "application/grpc"},
				{Name: "grpc-status", Value: strconv.Itoa(f.GRPCStatus)}, {Name: "grpc-message", Value: "fault filter abort"}})
		}
		return true, x.reply(f.AbortStatus, "fault filter abort", nil)
	}
	return false, true
}

// cors answers preflights and decorates actual responses, as Envoy's CORS
// filter does.
func (x *exchange) cors(c *router.CORS) (done, keep bool) {
	origin := x.req.Header.Get("origin")
	if origin == "" {
		return false, true
	}
	allowed := c.AllowsOrigin(origin)
	preflight := x.req.Method == "OPTIONS" && x.req.Header.Has("access-control-request-method")
	if preflight {
		x.h.st.rqCORSPreflight.Inc()
		if !allowed {
			if c.ForwardNotMatchingPreflights {
				return false, true
			}
			return true, x.reply(200, "", nil)
		}
		hdr := []httpx.Field{{Name: "access-control-allow-origin", Value: origin}}
		if c.AllowCredentials {
			hdr = append(hdr, httpx.Field{Name: "access-control-allow-credentials", Value: "true"})
		}
		// Browsers ignore "*" in a credentialed response: with
		// credentials allowed, a wildcard answers with what the
		// preflight asked for.
		methods, headers := c.AllowMethods, c.AllowHeaders
		if c.AllowCredentials && methods == "*" {
			methods = x.req.Header.Get("access-control-request-method")
		}
		if c.AllowCredentials && headers == "*" {
			headers = x.req.Header.Get("access-control-request-headers")
		}
		if methods != "" {
			hdr = append(hdr, httpx.Field{Name: "access-control-allow-methods", Value: methods})
		}
		if headers != "" {
			hdr = append(hdr, httpx.Field{Name: "access-control-allow-headers", Value: headers})
		}
		if c.ExposeHeaders != "" {
			hdr = append(hdr, httpx.Field{Name: "access-control-expose-headers", Value: c.ExposeHeaders})
		}
		if c.MaxAge != "" {
			hdr = append(hdr, httpx.Field{Name: "access-control-max-age", Value: c.MaxAge})
		}
		return true, x.reply(200, "", hdr)
	}
	if allowed {
		x.extraResp = append(x.extraResp, httpx.Field{Name: "access-control-allow-origin", Value: origin})
		if c.AllowCredentials {
			x.extraResp = append(x.extraResp, httpx.Field{Name: "access-control-allow-credentials", Value: "true"})
		}
		if c.ExposeHeaders != "" {
			x.extraResp = append(x.extraResp, httpx.Field{Name: "access-control-expose-headers", Value: c.ExposeHeaders})
		}
	}
	return false, true
}

// reply sends a locally generated response. It reports whether the
// connection can continue.
func (x *exchange) reply(status int, body string, extra []httpx.Field) bool {
	return x.h.localReply(x.w, x.req, status, body, append(extra, x.extraResp...), x)
}

// replyAndClose sends a local reply after which the connection closes
// (HTTP/1.1 says so with "connection: close"): the request was malformed or
// its body cannot be finished, so nothing after it can be trusted.
func (x *exchange) replyAndClose(status int, body string, extra []httpx.Field) bool {
	x.w.CloseAfter()
	x.reply(status, body, extra)
	return false
}

// localReply writes a response the proxy generated itself.
func (h *Handler) localReply(w ResponseWriter, req *httpx.Request, status int, body string, extra []httpx.Field, xs ...*exchange) bool {
	if len(xs) > 0 {
		xs[0].status = status
	}
	if w.Started() {
		w.CloseAfter() // too late for a clean response: end the connection
		return false
	}
	if status == 400 || status == 408 || status == 431 {
		w.CloseAfter()
	}
	var hdr httpx.Header
	hdr.Fields = make([]httpx.Field, 0, 4+len(extra))
	hdr.Fields = append(hdr.Fields, extra...)
	if body != "" && !hdr.Has("content-type") {
		hdr.Add("content-type", "text/plain")
	}
	hdr.Add("date", httpDate())
	hdr.Add("server", h.cfg.ServerName)
	if x := firstOr(xs); x != nil && x.route != nil && !x.route.ResponseHeaders.Empty() {
		x.route.ResponseHeaders.Apply(&hdr)
	}
	noBody := req.Method == "HEAD" || status == 204 || status == 304
	if x := firstOr(xs); x != nil {
		x.respHeaderBytes = int64(len(":status")+3) + headerBytes(&hdr)
		x.captureResp(&hdr)
	}
	w.WriteHeader(status, &hdr, int64(len(body)), noBody)
	if body != "" && !noBody {
		w.Write([]byte(body))
	}
	w.Finish(nil)
	return status != 400 && status != 431
}

func firstOr(xs []*exchange) *exchange {
	if len(xs) > 0 {
		return xs[0]
	}
	return nil
}

// queryValue returns a query parameter of the request.
func (x *exchange) queryValue(name string) (string, bool) {
	q, err := url.ParseQuery(x.req.Query())
	if err != nil {
		return "", false
	}
	v, ok := q[name]
	if !ok || len(v) == 0 {
		return "", false
	}
	return v[0], true
}
