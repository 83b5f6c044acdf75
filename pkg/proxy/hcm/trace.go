package hcm

import (
	"strconv"
	"time"

	"github.com/portico-gateway/portico/pkg/proxy/tracing"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// startSpan opens the request's server span once x-request-id is settled,
// so a new trace's sampling decision follows the request ID.
func (x *exchange) startSpan() {
	x.span = x.h.tracer.Start(&x.req.Header, x.requestID, x.start)
}

// injectTrace writes the propagation headers for one upstream attempt.
// With upstream spans on (and the request sampled), the attempt gets its
// own client span, which the upstream sees as its parent; otherwise the
// upstream's parent is the gateway's server span.
func (x *exchange) injectTrace(c *upstream.Cluster) *tracing.Span {
	s := x.span
	if s.Sampled() && x.h.tracer.Config().UpstreamSpans {
		up := s.Child("router "+c.Name()+" egress", time.Now())
		tracing.Inject(&x.req.Header, up.Context, s.Context.SpanID)
		return up
	}
	tracing.Inject(&x.req.Header, s.Context, s.Parent)
	return nil
}

// finishUpstream closes an attempt's client span.
func (x *exchange) finishUpstream(up *tracing.Span, c *upstream.Cluster, host *upstream.Host, a *attempt, n int) {
	up.SetAttr("component", "proxy")
	up.SetAttr("upstream_cluster", c.Name())
	up.SetAttr("upstream_cluster.name", c.Name())
	up.SetAttr("upstream_address", host.Addr)
	up.SetAttr("retry.count", strconv.Itoa(n))
	if a.fail == failNone {
		code := x.responseStatus(a)
		up.SetAttr("http.status_code", strconv.Itoa(code))
		up.Error = code >= 500
	} else {
		up.SetAttr("error.reason", a.fail.String())
		up.Error = true
	}
	if up.Error {
		up.SetAttr("error", "true")
	}
	up.Finish(time.Now())
}

// finishSpan closes the server span with Envoy's and Istio's tags.
func (x *exchange) finishSpan() {
	s := x.span
	if !s.Sampled() {
		return
	}
	cfg, node, req := x.h.tracer.Config(), x.h.tracer.Node(), x.req
	path := x.origPath
	if path == "" {
		path = req.Target
	}
	// Istio names a gateway's spans after the route's host and path.
	s.Name = req.Authority + pathOnly(path)
	url := req.Scheme + "://" + req.Authority + path
	if cfg.MaxPathTagLength > 0 && len(url) > cfg.MaxPathTagLength {
		url = url[:cfg.MaxPathTagLength]
	}
	s.SetAttr("component", "proxy")
	s.SetAttr("node_id", node.ID)
	s.SetAttr("guid:x-request-id", x.requestID)
	s.SetAttr("http.url", url)
	s.SetAttr("http.method", req.Method)
	s.SetAttr("http.protocol", req.Proto)
	s.SetAttr("downstream_cluster", "-")
	s.SetAttr("user_agent", orDash(x.ua))
	if req.RemoteAddr.IsValid() {
		s.SetAttr("peer.address", req.RemoteAddr.Addr().String())
	}
	s.SetAttr("request_size", strconv.FormatInt(x.bytesIn, 10))
	s.SetAttr("response_size", strconv.FormatInt(x.w.Written(), 10))
	s.SetAttr("http.status_code", strconv.Itoa(x.status))
	s.SetAttr("response_flags", x.flags.String())
	if x.cluster != nil {
		s.SetAttr("upstream_cluster", x.cluster.Name())
		s.SetAttr("upstream_cluster.name", x.cluster.Name())
	}
	if x.upstream != "" {
		s.SetAttr("upstream_address", x.upstream)
	}
	if node.CanonicalService != "" {
		s.SetAttr("istio.canonical_service", node.CanonicalService)
		s.SetAttr("istio.canonical_revision", node.CanonicalRevision)
		s.SetAttr("istio.namespace", node.Namespace)
	}
	if node.MeshID != "" {
		s.SetAttr("istio.mesh_id", node.MeshID)
	}
	for _, t := range cfg.Tags {
		v := t.Literal
		if t.Header != "" {
			if v = req.Header.Get(t.Header); v == "" {
				v = t.Default
			}
		}
		s.SetAttr(t.Name, v)
	}
	if x.status >= 500 || x.status == 0 {
		s.Error = true
		s.SetAttr("error", "true")
	}
	s.Finish(time.Now())
}

func pathOnly(p string) string {
	for i := 0; i < len(p); i++ {
		if p[i] == '?' || p[i] == '#' {
			return p[:i]
		}
	}
	return p
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// String names a failure for the upstream span's error.reason.
func (f failKind) String() string {
	switch f {
	case failNone:
		return "none"
	case failConnect:
		return "connect_failure"
	case failOverflow:
		return "overflow"
	case failTimeout:
		return "timeout"
	case failReset:
		return "reset"
	case failProtocol:
		return "protocol_error"
	case failCancelled:
		return "downstream_reset"
	case failEjected:
		return "ejected"
	case failDownstream:
		return "downstream_error"
	}
	return "unknown"
}
