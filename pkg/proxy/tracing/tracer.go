package tracing

import (
	"hash/fnv"
	"math/rand/v2"
	"os"
	"time"
)

// Provider kinds: Envoy's tracer extension names.
const (
	OpenTelemetry = "envoy.tracers.opentelemetry"
	Zipkin        = "envoy.tracers.zipkin"
)

// Provider is where spans go. It is comparable: equal providers share one
// exporter.
type Provider struct {
	// Kind is OpenTelemetry or Zipkin.
	Kind string
	// Cluster is the collector's cluster (the proxy's upstream cluster).
	Cluster string
	// Authority is the :authority / Host sent to the collector.
	Authority string
	// Path is the HTTP path: OTLP/HTTP's (empty for OTLP over gRPC) or
	// Zipkin's collector endpoint.
	Path string
	// Timeout bounds one export (0: 5s).
	Timeout time.Duration
	// ServiceName is the reported service (OTLP resource service.name,
	// Zipkin localEndpoint.serviceName).
	ServiceName string
}

// CustomTag is an extra span attribute, as Istio's customTags: a literal,
// a request header (with a default) or an environment variable (with a
// default) read when the configuration is compiled.
type CustomTag struct {
	Name    string
	Literal string
	Header  string
	Default string
}

// Config is a compiled HCM tracing block.
type Config struct {
	// Provider is nil when spans are never reported (Istio's
	// disableSpanReporting): context still propagates.
	Provider *Provider
	// Sampling is random_sampling in hundredths of a percent (0..10000),
	// applied to requests that arrive without a sampling decision.
	Sampling uint32
	// Tags are custom tags added to every server span.
	Tags []CustomTag
	// UpstreamSpans: a client span per upstream attempt (Envoy's
	// spawn_upstream_span); its ID is the parent the upstream sees.
	UpstreamSpans bool
	// MaxPathTagLength bounds http.url (Envoy's default 256).
	MaxPathTagLength int
}

// EnvTag resolves an environment custom tag now, as Envoy resolves it at
// configuration time.
func EnvTag(name, env, def string) CustomTag {
	v, ok := os.LookupEnv(env)
	if !ok || v == "" {
		v = def
	}
	return CustomTag{Name: name, Literal: v}
}

// Node describes the proxy in every span (Istio's node attributes).
type Node struct {
	ID                string
	Namespace         string
	CanonicalService  string
	CanonicalRevision string
	MeshID            string
}

// Tracer starts spans for one connection manager configuration.
type Tracer struct {
	cfg  *Config
	exp  *Exporter // nil: spans are not reported
	node Node
}

// Config returns the compiled configuration.
func (t *Tracer) Config() *Config { return t.cfg }

// Span kinds.
const (
	KindServer = iota
	KindClient
)

// Attr is a span attribute; Envoy's tags are strings.
type Attr struct{ Key, Value string }

// Span is one traced operation. Fields are written by one goroutine (the
// request's) until Finish hands the span to the exporter.
type Span struct {
	tr      *Tracer
	Context SpanContext
	Parent  SpanID
	Name    string
	Kind    int
	Start   time.Time
	End     time.Time
	Attrs   []Attr
	Error   bool
}

// Sampled reports whether the span will be exported.
func (s *Span) Sampled() bool { return s.Context.Sampled == SampledYes }

// SetAttr adds an attribute (only worth calling on a sampled span).
func (s *Span) SetAttr(k, v string) { s.Attrs = append(s.Attrs, Attr{k, v}) }

// Start begins the server span of a request: it continues the incoming
// trace when the request carries a valid context, honouring its sampling
// decision; otherwise it starts a trace and decides from the request ID,
// so every hop seeing the same x-request-id decides alike (Envoy derives
// its decision from x-request-id too).
func (t *Tracer) Start(h Header, requestID string, start time.Time) *Span {
	in, ok := Extract(h)
	s := &Span{tr: t, Kind: KindServer, Start: start}
	if ok {
		s.Context.TraceID = in.TraceID
		s.Context.TraceState = in.TraceState
		s.Parent = in.SpanID
	} else {
		s.Context.TraceID = newTraceID()
	}
	s.Context.SpanID = newSpanID()
	s.Context.Sampled = in.Sampled
	if s.Context.Sampled == SampledUnknown {
		s.Context.Sampled = SampledNo
		if t.sample(requestID) {
			s.Context.Sampled = SampledYes
		}
	}
	return s
}

func (t *Tracer) sample(requestID string) bool {
	switch {
	case t.cfg.Sampling >= 10000:
		return true
	case t.cfg.Sampling == 0:
		return false
	case requestID == "":
		return rand.Uint32N(10000) < t.cfg.Sampling
	}
	f := fnv.New64a()
	f.Write([]byte(requestID))
	return uint32(f.Sum64()%10000) < t.cfg.Sampling
}

// Child starts a client span under s (an upstream attempt).
func (s *Span) Child(name string, start time.Time) *Span {
	c := &Span{tr: s.tr, Kind: KindClient, Name: name, Start: start, Parent: s.Context.SpanID}
	c.Context = s.Context
	c.Context.SpanID = newSpanID()
	return c
}

// Finish ends the span and, when sampled and reported, queues it for
// export.
func (s *Span) Finish(end time.Time) {
	s.End = end
	if s.Sampled() && s.tr.exp != nil {
		s.tr.exp.enqueue(s)
	}
}

// Node returns the proxy's identity.
func (t *Tracer) Node() *Node { return &t.node }

func newTraceID() TraceID {
	var t TraceID
	for !t.IsValid() {
		a, b := rand.Uint64(), rand.Uint64()
		for i := 0; i < 8; i++ {
			t[i], t[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
		}
	}
	return t
}

func newSpanID() SpanID {
	var s SpanID
	for !s.IsValid() {
		a := rand.Uint64()
		for i := 0; i < 8; i++ {
			s[i] = byte(a >> (8 * i))
		}
	}
	return s
}
