package tracing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Provider kinds.
const (
	OTLPGRPC = "otlp-grpc"
	OTLPHTTP = "otlp-http"
	Zipkin   = "zipkin"
)

// ProviderSpec says where spans go. Cluster is the collector's cluster
// (resolved to an endpoint per connection); Authority and Path are the
// Host and path of HTTP exports.
type ProviderSpec struct {
	Kind        string
	Cluster     string
	Authority   string
	Path        string
	ServiceName string
	Timeout     time.Duration
}

// Resolver returns an address (host:port) of a cluster's endpoints.
type Resolver func(cluster string) (string, error)

// Providers owns the proxy's span exporters: one OpenTelemetry tracer
// provider (batching, exporting in the background) per distinct
// ProviderSpec, shared by every connection manager that uses it and shut
// down (flushing what is queued) by Close.
type Providers struct {
	resolve Resolver
	log     logr.Logger
	nodeID  string
	mu      sync.Mutex
	byKey   map[ProviderSpec]*sdktrace.TracerProvider
	closed  bool
}

// NewProviders returns an empty set whose exporters reach collectors
// through resolve.
func NewProviders(resolve Resolver, nodeID string, log logr.Logger) *Providers {
	return &Providers{resolve: resolve, log: log, nodeID: nodeID, byKey: map[ProviderSpec]*sdktrace.TracerProvider{}}
}

// Tracer returns a tracer exporting to spec with settings s.
func (p *Providers) Tracer(spec ProviderSpec, s Settings) (*Tracer, error) {
	tp, err := p.provider(spec)
	if err != nil {
		return nil, err
	}
	if s.NodeID == "" {
		s.NodeID = p.nodeID
	}
	if spec.Kind == Zipkin {
		s.B3 = true
	}
	return NewTracer(tp.Tracer("portico.proxy"), s), nil
}

func (p *Providers) provider(spec ProviderSpec) (*sdktrace.TracerProvider, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("tracing providers are closed")
	}
	if tp := p.byKey[spec]; tp != nil {
		return tp, nil
	}
	exp, err := p.exporter(spec)
	if err != nil {
		return nil, err
	}
	svc := spec.ServiceName
	if svc == "" {
		svc = "istio-ingressgateway"
	}
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(svc))
	tp := sdktrace.NewTracerProvider(
		// The Tracer decides sampling (incoming decision, percentage by
		// x-request-id); a span it starts is always recorded.
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second), sdktrace.WithMaxQueueSize(4096)),
		sdktrace.WithResource(res))
	p.byKey[spec] = tp
	return tp, nil
}

func (p *Providers) dial(ctx context.Context, cluster string) (net.Conn, error) {
	addr, err := p.resolve(cluster)
	if err != nil {
		return nil, fmt.Errorf("resolving tracing collector cluster %q: %w", cluster, err)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (p *Providers) exporter(spec ProviderSpec) (sdktrace.SpanExporter, error) {
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return p.dial(ctx, spec.Cluster) },
		MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute,
	}}
	authority := spec.Authority
	if authority == "" {
		authority = spec.Cluster
	}
	switch spec.Kind {
	case OTLPGRPC:
		return otlptracegrpc.NewUnstarted(otlptracegrpc.WithEndpoint(authority), otlptracegrpc.WithInsecure(),
			otlptracegrpc.WithTimeout(timeout),
			otlptracegrpc.WithDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return p.dial(ctx, spec.Cluster) }))), nil
	case OTLPHTTP:
		path := spec.Path
		if path == "" {
			path = "/v1/traces"
		}
		return otlptracehttp.NewUnstarted(otlptracehttp.WithEndpoint(authority), otlptracehttp.WithURLPath(path),
			otlptracehttp.WithInsecure(), otlptracehttp.WithTimeout(timeout), otlptracehttp.WithHTTPClient(client)), nil
	case Zipkin:
		path := spec.Path
		if path == "" {
			path = "/api/v2/spans"
		}
		svc := spec.ServiceName
		if svc == "" {
			svc = "istio-ingressgateway"
		}
		return &zipkinExporter{client: client, url: "http://" + authority + path, service: svc}, nil
	}
	return nil, fmt.Errorf("unknown tracing provider kind %q", spec.Kind)
}

// Flush exports what is queued (tests, /quitquitquit).
func (p *Providers) Flush(ctx context.Context) error {
	p.mu.Lock()
	tps := make([]*sdktrace.TracerProvider, 0, len(p.byKey))
	for _, tp := range p.byKey {
		tps = append(tps, tp)
	}
	p.mu.Unlock()
	var errs []error
	for _, tp := range tps {
		errs = append(errs, tp.ForceFlush(ctx))
	}
	return errors.Join(errs...)
}

// Close flushes and stops every exporter.
func (p *Providers) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	tps := p.byKey
	p.byKey = map[ProviderSpec]*sdktrace.TracerProvider{}
	p.mu.Unlock()
	var errs []error
	for _, tp := range tps {
		if err := tp.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			p.log.V(1).Info("shutting down a tracing exporter", "error", err.Error())
		}
	}
	return errors.Join(errs...)
}
