package tracing

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

var zeroTime time.Time

// BenchmarkStartFinish is the per-request cost with tracing on: extract,
// sample, a span with a dozen tags, queue for export (no collector: the
// exporter's queue absorbs or drops).
func BenchmarkStartFinish(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := NewRegistry(ctx, Options{Resolve: func(string) (string, bool) { return "", false }, Log: logr.Discard(), QueueSize: 1 << 16})
	tr := r.Tracer(&Config{Sampling: 10000, Provider: &Provider{Kind: OpenTelemetry, Cluster: "c"}})
	h := hdr{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	out := hdr{}
	b.ReportAllocs()
	for b.Loop() {
		s := tr.Start(h, "rid", time.Now())
		Inject(out, s.Context, s.Parent)
		for _, k := range []string{"component", "node_id", "guid:x-request-id", "http.url", "http.method", "http.protocol",
			"http.status_code", "response_flags", "upstream_cluster", "upstream_cluster.name", "user_agent", "request_size"} {
			s.SetAttr(k, "v")
		}
		s.Finish(time.Now())
	}
}

// BenchmarkUnsampled is the cost for a request that is not sampled: the
// IDs and headers only.
func BenchmarkUnsampled(b *testing.B) {
	r := NewRegistry(context.Background(), Options{Resolve: func(string) (string, bool) { return "", false }, Log: logr.Discard()})
	tr := r.Tracer(&Config{Sampling: 0})
	h, out := hdr{}, hdr{}
	b.ReportAllocs()
	for b.Loop() {
		s := tr.Start(h, "rid", zeroTime)
		Inject(out, s.Context, s.Parent)
		s.Finish(zeroTime)
	}
}
