package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// errNoHost is export's answer while the collector's cluster is unknown
// or has no healthy host: nothing was sent, so the batch can be retried.
var errNoHost = errors.New("collector cluster has no healthy host")

// Resolver returns an address ("host:port") of a cluster's healthy host.
type Resolver func(cluster string) (string, bool)

// Options configure a Registry.
type Options struct {
	Resolve Resolver
	Node    Node
	Log     logr.Logger
	// FlushInterval is how long spans wait for a batch (0: 1s).
	FlushInterval time.Duration
	// QueueSize bounds spans waiting for export; more are dropped and
	// counted (0: 4096).
	QueueSize int
	// BatchSize is the most spans per export request (0: 512).
	BatchSize int
}

// Registry owns the exporters of every configured provider for the
// proxy's lifetime: configuration updates reuse the exporter of an equal
// provider, so a listener update never loses queued spans.
type Registry struct {
	ctx  context.Context
	opts Options
	mu   sync.Mutex
	exps map[Provider]*Exporter
	wg   sync.WaitGroup
}

// NewRegistry returns a registry whose exporters stop (after a last
// flush) when ctx ends; Wait waits for them.
func NewRegistry(ctx context.Context, o Options) *Registry {
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 512
	}
	return &Registry{ctx: ctx, opts: o, exps: map[Provider]*Exporter{}}
}

// Wait blocks until every exporter has stopped.
func (r *Registry) Wait() { r.wg.Wait() }

// Tracer returns a tracer for cfg, bound to its provider's exporter.
func (r *Registry) Tracer(cfg *Config) *Tracer {
	t := &Tracer{cfg: cfg, node: r.opts.Node}
	if cfg.Provider != nil {
		t.exp = r.exporter(*cfg.Provider)
	}
	return t
}

func (r *Registry) exporter(p Provider) *Exporter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.exps[p]; ok {
		return e
	}
	e := &Exporter{p: p, r: r, ch: make(chan *Span, r.opts.QueueSize), log: r.opts.Log.WithValues("provider", p.Kind, "cluster", p.Cluster)}
	if e.p.Timeout <= 0 {
		e.p.Timeout = 5 * time.Second
	}
	r.exps[p] = e
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		e.run(r.ctx)
	}()
	return e
}

// Stats are an exporter's counters.
type Stats struct{ Exported, Dropped, Failed uint64 }

// Stats sums the counters of every exporter.
func (r *Registry) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s Stats
	for _, e := range r.exps {
		s.Exported += e.exported.Load()
		s.Dropped += e.dropped.Load()
		s.Failed += e.failed.Load()
	}
	return s
}

// Exporter batches spans to one provider.
type Exporter struct {
	p   Provider
	r   *Registry
	ch  chan *Span
	log logr.Logger

	exported, dropped, failed atomic.Uint64

	// waiting: the last flush found no collector host and kept its
	// batch (touched only by run).
	waiting bool

	conn     *grpc.ClientConn
	connAddr string
	http     *http.Client
}

func (e *Exporter) enqueue(s *Span) {
	select {
	case e.ch <- s:
	default:
		// A slow or absent collector must not slow requests down.
		e.dropped.Add(1)
	}
}

func (e *Exporter) run(ctx context.Context) {
	t := time.NewTicker(e.r.opts.FlushInterval)
	defer t.Stop()
	defer func() {
		if e.conn != nil {
			e.conn.Close()
		}
	}()
	var batch []*Span
	flush := func(ctx context.Context) {
		for len(batch) > 0 {
			// A batch held while the collector was not ready may be
			// longer than one request should carry.
			n := min(len(batch), e.r.opts.BatchSize)
			err := e.export(ctx, batch[:n])
			switch {
			case errors.Is(err, errNoHost):
				// The collector's cluster is not there yet (CDS after
				// LDS, a STRICT_DNS name not resolved yet, no healthy
				// endpoint): keep the spans for the next tick instead of
				// losing the first ones after tracing is turned on.
				// Bounded by the queue size, oldest dropped first.
				if over := len(batch) - e.r.opts.QueueSize; over > 0 {
					e.dropped.Add(uint64(over))
					batch = append(batch[:0], batch[over:]...)
				}
				if !e.waiting {
					e.waiting = true
					e.log.V(1).Info("collector cluster not ready, holding spans", "spans", len(batch))
				}
				return
			case err != nil:
				e.failed.Add(uint64(n))
				e.log.V(1).Info("exporting spans failed", "spans", n, "error", err.Error())
			default:
				e.exported.Add(uint64(n))
			}
			e.waiting = false
			clear(batch[:n]) // let the spans go
			batch = batch[n:]
		}
		batch = batch[:0]
	}
	for {
		select {
		case <-ctx.Done():
			// One last, bounded flush of what is queued.
			for {
				select {
				case s := <-e.ch:
					batch = append(batch, s)
					continue
				default:
				}
				break
			}
			fctx, cancel := context.WithTimeout(context.Background(), time.Second)
			flush(fctx)
			cancel()
			e.dropped.Add(uint64(len(batch))) // held for a collector that never came
			return
		case s := <-e.ch:
			if e.waiting && len(batch) >= e.r.opts.QueueSize {
				e.dropped.Add(1)
				batch = batch[1:]
			}
			batch = append(batch, s)
			// While the collector is not ready, only the ticker retries:
			// a full batch must not turn every span into a resolve.
			if len(batch) >= e.r.opts.BatchSize && !e.waiting {
				flush(ctx)
			}
		case <-t.C:
			flush(ctx)
		}
	}
}

func (e *Exporter) export(ctx context.Context, spans []*Span) error {
	addr, ok := e.r.opts.Resolve(e.p.Cluster)
	if !ok {
		return fmt.Errorf("cluster %q: %w", e.p.Cluster, errNoHost)
	}
	ctx, cancel := context.WithTimeout(ctx, e.p.Timeout)
	defer cancel()
	switch {
	case e.p.Kind == Zipkin:
		b, err := json.Marshal(zipkinSpans(spans, e.p.ServiceName))
		if err != nil {
			return fmt.Errorf("encoding zipkin spans: %w", err)
		}
		return e.post(ctx, addr, "application/json", b)
	case e.p.Path != "":
		b, err := proto.Marshal(otlpRequest(spans, e.p.ServiceName))
		if err != nil {
			return fmt.Errorf("encoding OTLP spans: %w", err)
		}
		return e.post(ctx, addr, "application/x-protobuf", b)
	default:
		if e.conn == nil || e.connAddr != addr {
			if e.conn != nil {
				e.conn.Close()
			}
			opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			if e.p.Authority != "" {
				opts = append(opts, grpc.WithAuthority(e.p.Authority))
			}
			c, err := grpc.NewClient("passthrough:///"+addr, opts...)
			if err != nil {
				return fmt.Errorf("dialing collector %s: %w", addr, err)
			}
			e.conn, e.connAddr = c, addr
		}
		_, err := coltrace.NewTraceServiceClient(e.conn).Export(ctx, otlpRequest(spans, e.p.ServiceName))
		if err != nil {
			return fmt.Errorf("OTLP export to %s: %w", addr, err)
		}
		return nil
	}
}

func (e *Exporter) post(ctx context.Context, addr, ctype string, body []byte) error {
	if e.http == nil {
		e.http = &http.Client{}
	}
	path := e.p.Path
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if e.p.Authority != "" {
		req.Host = e.p.Authority
	}
	req.Header.Set("Content-Type", ctype)
	resp, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("posting spans to %s: %w", addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("posting spans to %s%s: status %d", addr, path, resp.StatusCode)
	}
	return nil
}

func otlpRequest(spans []*Span, service string) *coltrace.ExportTraceServiceRequest {
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	ss := &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: "portico"}}
	for _, s := range spans {
		p := &tracepb.Span{
			TraceId: append([]byte(nil), s.Context.TraceID[:]...), SpanId: append([]byte(nil), s.Context.SpanID[:]...),
			TraceState: s.Context.TraceState, Name: s.Name,
			StartTimeUnixNano: uint64(s.Start.UnixNano()), EndTimeUnixNano: uint64(s.End.UnixNano()),
			Kind: tracepb.Span_SPAN_KIND_SERVER,
		}
		if s.Kind == KindClient {
			p.Kind = tracepb.Span_SPAN_KIND_CLIENT
		}
		if s.Parent.IsValid() {
			p.ParentSpanId = append([]byte(nil), s.Parent[:]...)
		}
		for _, a := range s.Attrs {
			p.Attributes = append(p.Attributes, str(a.Key, a.Value))
		}
		if s.Error {
			p.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
		}
		ss.Spans = append(ss.Spans, p)
	}
	return &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", service)}},
		ScopeSpans: []*tracepb.ScopeSpans{ss},
	}}}
}

// ZipkinSpan is a Zipkin v2 span.
type ZipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId,omitempty"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind"`
	Timestamp     int64             `json:"timestamp"`
	Duration      int64             `json:"duration"`
	LocalEndpoint map[string]string `json:"localEndpoint"`
	Tags          map[string]string `json:"tags,omitempty"`
}

func zipkinSpans(spans []*Span, service string) []ZipkinSpan {
	out := make([]ZipkinSpan, 0, len(spans))
	for _, s := range spans {
		z := ZipkinSpan{TraceID: s.Context.TraceID.String(), ID: s.Context.SpanID.String(), Name: s.Name, Kind: "SERVER",
			Timestamp: s.Start.UnixMicro(), Duration: max(s.End.Sub(s.Start).Microseconds(), 1),
			LocalEndpoint: map[string]string{"serviceName": service}}
		if s.Kind == KindClient {
			z.Kind = "CLIENT"
		}
		if s.Parent.IsValid() {
			z.ParentID = s.Parent.String()
		}
		if len(s.Attrs) > 0 {
			z.Tags = make(map[string]string, len(s.Attrs))
			for _, a := range s.Attrs {
				z.Tags[a.Key] = a.Value
			}
		}
		if s.Error {
			if z.Tags == nil {
				z.Tags = map[string]string{}
			}
			z.Tags["error"] = "true"
		}
		out = append(out, z)
	}
	return out
}
