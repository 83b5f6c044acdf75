package tracing

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// TagKind says where a custom tag's value comes from (Envoy's
// custom_tags: literal, environment, request_header).
type TagKind uint8

const (
	TagLiteral TagKind = iota
	TagEnvironment
	TagHeader
)

// Tag is a custom span tag.
type Tag struct {
	Name string
	Kind TagKind
	// Value is the literal, the environment variable or the header name.
	Value string
	// Default is used when the variable or header is absent.
	Default string
}

// Settings are a connection manager's tracing settings.
type Settings struct {
	// SamplingPercent is random_sampling (0–100): the share of requests
	// without an incoming decision that are traced.
	SamplingPercent float64
	// B3 injects B3 multi headers upstream (the Zipkin provider).
	B3   bool
	Tags []Tag
	// NodeID is the proxy's node id (the node_id tag).
	NodeID string
	// NoUpstreamSpans: spawn_upstream_span false. The proxy creates client
	// spans per attempt unless told not to, as Istio's gateways get them.
	NoUpstreamSpans bool
}

// Tracer traces the requests of one connection manager. A nil *Tracer
// traces nothing and costs one nil check.
type Tracer struct {
	tracer    trace.Tracer
	threshold uint64 // of 10000
	set       Settings
	static    []attribute.KeyValue // literal and environment tags, resolved once
}

// NewTracer binds settings to an OpenTelemetry tracer (from a provider
// whose sampler samples every span: the Tracer decides).
func NewTracer(t trace.Tracer, s Settings) *Tracer {
	pct := s.SamplingPercent
	if pct < 0 {
		pct = 0
	}
	if pct > 100 {
		pct = 100
	}
	tr := &Tracer{tracer: t, threshold: uint64(pct*100 + 0.5), set: s}
	tr.static = append(tr.static, attribute.String("component", "proxy"))
	if s.NodeID != "" {
		tr.static = append(tr.static, attribute.String("node_id", s.NodeID))
	}
	for _, tag := range s.Tags {
		switch tag.Kind {
		case TagLiteral:
			tr.static = append(tr.static, attribute.String(tag.Name, tag.Value))
		case TagEnvironment:
			v, ok := os.LookupEnv(tag.Value)
			if !ok {
				v = tag.Default
			}
			tr.static = append(tr.static, attribute.String(tag.Name, v))
		}
	}
	return tr
}

// Sampled is Envoy's decision for a request without an incoming one: a
// hash of its x-request-id against the percentage, so every proxy that
// sees the same request id decides the same way (random without one).
func (t *Tracer) Sampled(requestID string) bool {
	if t.threshold >= 10000 {
		return true
	}
	if t.threshold == 0 {
		return false
	}
	var n uint64
	if requestID != "" {
		n = xxhash.Sum64String(requestID)
	} else {
		n = rand.Uint64()
	}
	return n%10000 < t.threshold
}

// Span is one request's trace state.
type Span struct {
	t        *Tracer
	in       Context
	sampled  bool
	span     trace.Span // nil when not sampled
	ctx      context.Context
	traceID  TraceID
	spanID   SpanID // this proxy's span (or, unsampled, the id sent on)
	attempt  trace.Span
	attempts int
}

// Request is what the tracer needs about the request at its start.
type Request struct {
	Headers   Carrier
	RequestID string
	Start     time.Time
	// Operation is the span name (Envoy: the route's decorator, Istio's
	// "<host>:<port>/*"; here the authority and "/*" unless set).
	Operation string
}

// Start begins a request's trace: reads the incoming context, decides
// sampling and, when sampled, starts the server span.
func (t *Tracer) Start(ctx context.Context, r Request) *Span {
	s := &Span{t: t, in: Extract(r.Headers)}
	switch {
	case s.in.Decided:
		s.sampled = s.in.Sampled
	default:
		s.sampled = t.Sampled(r.RequestID)
	}
	if !s.sampled {
		// Nothing is recorded; the upstream still gets the trace (the
		// caller's, or a new one) with the decision not to sample.
		s.traceID, s.spanID = s.in.TraceID, s.in.SpanID
		if !s.in.Valid() {
			s.traceID, s.spanID = newTraceID(), newSpanID()
		}
		return s
	}
	if s.in.Valid() {
		psc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID(s.in.TraceID), SpanID: trace.SpanID(s.in.SpanID),
			TraceFlags: trace.FlagsSampled, Remote: true})
		if s.in.TraceState != "" {
			if ts, err := trace.ParseTraceState(s.in.TraceState); err == nil {
				psc = psc.WithTraceState(ts)
			}
		}
		ctx = trace.ContextWithRemoteSpanContext(ctx, psc)
	}
	op := r.Operation
	s.ctx, s.span = t.tracer.Start(ctx, op, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(r.Start),
		trace.WithAttributes(t.static...))
	sc := s.span.SpanContext()
	s.traceID, s.spanID = TraceID(sc.TraceID()), SpanID(sc.SpanID())
	for _, tag := range t.set.Tags {
		if tag.Kind == TagHeader {
			v := r.Headers.Get(tag.Value)
			if v == "" {
				v = tag.Default
			}
			if v != "" {
				s.span.SetAttributes(attribute.String(tag.Name, v))
			}
		}
	}
	return s
}

// IsSampled reports whether the request is recorded.
func (s *Span) IsSampled() bool { return s.sampled }

// TraceID is the request's trace.
func (s *Span) TraceID() TraceID { return s.traceID }

// Inject writes the trace context for a request sent upstream without an
// attempt span (or when upstream spans are off).
func (s *Span) Inject(h Carrier) {
	Inject(h, s.traceID, s.spanID, s.sampled, s.in.Format, s.in.TraceState, s.t.set.B3)
}

// StartAttempt begins a client span for one upstream try (Envoy's
// "router <cluster> egress") and injects its context into h; without
// sampling or with upstream spans off it injects the request's context.
func (s *Span) StartAttempt(h Carrier, cluster, host string) {
	s.attempts++
	if !s.sampled || s.t.set.NoUpstreamSpans {
		s.Inject(h)
		return
	}
	_, s.attempt = s.t.tracer.Start(s.ctx, "router "+cluster+" egress", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("component", "proxy"), attribute.String("upstream_cluster", cluster),
			attribute.String("upstream_cluster.name", cluster), attribute.String("upstream_address", host),
			attribute.Int("retry.attempt", s.attempts-1)))
	sc := s.attempt.SpanContext()
	Inject(h, TraceID(sc.TraceID()), SpanID(sc.SpanID()), true, s.in.Format, s.in.TraceState, s.t.set.B3)
}

// EndAttempt ends the current attempt's span with its status (0: no
// response) and, for failures, Envoy's reason.
func (s *Span) EndAttempt(status int, failure string) {
	if s.attempt == nil {
		return
	}
	if status > 0 {
		s.attempt.SetAttributes(attribute.Int("http.status_code", status))
	}
	if failure != "" || status >= 500 || status == 0 {
		s.attempt.SetAttributes(attribute.Bool("error", true))
		s.attempt.SetStatus(codes.Error, failure)
	}
	s.attempt.End()
	s.attempt = nil
}

// Outcome is what the request's span records at its end.
type Outcome struct {
	Method, URL, Protocol, UserAgent, RequestID, Flags string
	Status                                             int
	Cluster, DownstreamCluster, PeerAddress            string
	RequestSize, ResponseSize                          int64
}

// Finish ends the request's span with Envoy's tags.
func (s *Span) Finish(o *Outcome) {
	s.EndAttempt(0, "")
	if s.span == nil {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 14)
	attrs = append(attrs,
		attribute.String("http.method", o.Method), attribute.String("http.url", o.URL),
		attribute.String("http.protocol", o.Protocol), attribute.String("http.status_code", strconv.Itoa(o.Status)),
		attribute.String("response_flags", o.Flags), attribute.String("guid:x-request-id", o.RequestID),
		attribute.String("user_agent", o.UserAgent), attribute.String("request_size", strconv.FormatInt(o.RequestSize, 10)),
		attribute.String("response_size", strconv.FormatInt(o.ResponseSize, 10)),
		attribute.String("downstream_cluster", orDash(o.DownstreamCluster)),
	)
	if o.PeerAddress != "" {
		attrs = append(attrs, attribute.String("peer.address", o.PeerAddress))
	}
	if o.Cluster != "" {
		attrs = append(attrs, attribute.String("upstream_cluster", o.Cluster), attribute.String("upstream_cluster.name", o.Cluster))
	}
	if o.Status >= 500 || o.Status == 0 {
		attrs = append(attrs, attribute.String("error", "true"))
		s.span.SetStatus(codes.Error, "")
	}
	s.span.SetAttributes(attrs...)
	s.span.End()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newTraceID() (t TraceID) {
	binary.BigEndian.PutUint64(t[:8], rand.Uint64())
	binary.BigEndian.PutUint64(t[8:], rand.Uint64())
	if t == (TraceID{}) {
		_, _ = crand.Read(t[:])
	}
	return t
}

func newSpanID() (s SpanID) {
	binary.BigEndian.PutUint64(s[:], rand.Uint64()|1)
	return s
}
