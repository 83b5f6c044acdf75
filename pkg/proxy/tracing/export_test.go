package tracing

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// zipkinCollector is a real Zipkin HTTP receiver on a local socket.
type zipkinCollector struct {
	srv *httptest.Server
	mu  sync.Mutex
	ids map[string]bool
}

func newZipkinCollector(t *testing.T) *zipkinCollector {
	c := &zipkinCollector{ids: map[string]bool{}}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var spans []ZipkinSpan
		if err := json.NewDecoder(r.Body).Decode(&spans); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		for _, s := range spans {
			c.ids[s.ID] = true
		}
		c.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *zipkinCollector) has(ids []string) (missing int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if !c.ids[id] {
			missing++
		}
	}
	return missing
}

// TestExporterWaitsForCollectorCluster: spans finished while the
// collector's cluster is unknown or has no host (LDS before CDS, a
// STRICT_DNS name not resolved yet) are held and exported once the
// cluster resolves, and spans finished later flow as usual. Before the
// fix the first batches were counted failed and never reached the
// collector.
func TestExporterWaitsForCollectorCluster(t *testing.T) {
	col := newZipkinCollector(t)
	var ready atomic.Bool
	var resolves atomic.Int64
	resolve := func(cluster string) (string, bool) {
		resolves.Add(1)
		if cluster != "zipkin" || !ready.Load() {
			return "", false
		}
		return strings.TrimPrefix(col.srv.URL, "http://"), true
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := NewRegistry(ctx, Options{Resolve: resolve, Log: logr.Discard(), FlushInterval: 10 * time.Millisecond, BatchSize: 4})
	defer func() { cancel(); r.Wait() }()
	tr := r.Tracer(&Config{Sampling: 10000, Provider: &Provider{Kind: Zipkin, Cluster: "zipkin", Path: "/api/v2/spans", ServiceName: "gw"}})

	finish := func(n int) []string {
		var ids []string
		for range n {
			s := tr.Start(hdr{}, "", time.Now())
			s.Finish(time.Now())
			ids = append(ids, s.Context.SpanID.String())
		}
		return ids
	}
	early := finish(10)
	// Let several flushes find no host (poll: the exporter has tried).
	for deadline := time.Now().Add(5 * time.Second); resolves.Load() < 3; {
		if time.Now().After(deadline) {
			t.Fatal("exporter never tried to resolve its collector cluster")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := r.Stats(); st.Exported != 0 || st.Failed != 0 || st.Dropped != 0 {
		t.Fatalf("stats while the cluster is absent = %+v, want spans held (nothing exported, failed or dropped)", st)
	}
	ready.Store(true)
	late := finish(3)
	all := append(early, late...)
	// The collector may see a batch before the exporter counts it as
	// exported (the count follows the response): wait for both.
	for deadline := time.Now().Add(10 * time.Second); col.has(all) > 0 || r.Stats().Exported < uint64(len(all)); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d spans never reached the collector after its cluster became ready (stats %+v)", col.has(all), len(all), r.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := r.Stats(); st.Exported != uint64(len(all)) || st.Failed != 0 || st.Dropped != 0 {
		t.Fatalf("stats = %+v, want %d exported", st, len(all))
	}
}

// TestExporterHoldIsBounded: a collector that never comes must not make
// held spans grow without bound; the excess is counted as dropped, and
// spans held at shutdown are counted too.
func TestExporterHoldIsBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := NewRegistry(ctx, Options{Resolve: func(string) (string, bool) { return "", false }, Log: logr.Discard(),
		FlushInterval: 5 * time.Millisecond, QueueSize: 8, BatchSize: 4})
	tr := r.Tracer(&Config{Sampling: 10000, Provider: &Provider{Kind: OpenTelemetry, Cluster: "absent"}})
	const n = 200
	for i := range n {
		s := tr.Start(hdr{}, "", time.Now())
		s.Finish(time.Now())
		if i%8 == 7 {
			time.Sleep(time.Millisecond) // let the exporter drain its queue into the held batch
		}
	}
	cancel()
	r.Wait()
	st := r.Stats()
	if st.Exported != 0 || st.Failed != 0 {
		t.Fatalf("stats = %+v, want nothing exported or failed", st)
	}
	if st.Dropped != n {
		t.Fatalf("dropped = %d, want all %d spans accounted for as dropped", st.Dropped, n)
	}
}
