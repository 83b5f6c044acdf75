package stats

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSameNameSameStat(t *testing.T) {
	s := NewStore()
	a := s.Counter(ClusterScope("outbound|80||web"), "upstream_rq_total")
	b := s.Counter(ClusterScope("outbound|80||web"), "upstream_rq_total")
	if a != b {
		t.Fatal("asking twice returned two counters: stats would reset on config updates")
	}
	a.Inc()
	b.Add(2)
	if v, ok := s.Lookup("cluster.outbound|80||web.upstream_rq_total"); !ok || v != 3 {
		t.Errorf("Lookup = %d, %v", v, ok)
	}
	g := s.Gauge(Plain("server"), "live")
	g.Set(5)
	g.Dec()
	g.Add(-2)
	g.Inc()
	if v, _ := s.Lookup("server.live"); v != 3 {
		t.Errorf("gauge = %d", v)
	}
	if _, ok := s.Lookup("nope"); ok {
		t.Error("Lookup of an unknown stat succeeded")
	}
	s.Counter(nil, "downstream_rq_total").Add(2) // no scope
	if v, ok := s.Lookup("downstream_rq_total"); !ok || v != 2 {
		t.Errorf("Lookup of a stat without scope = %d, %v", v, ok)
	}
	// Dots in the scope's prefix and in the stat's name.
	s.Gauge(ClusterScope("outbound|80||web.default.svc.cluster.local"), "circuit_breakers.default.cx_open").Set(1)
	s.Counter(ClusterScope("outbound|80||web.default.svc.cluster.local"), "upstream_rq_total").Add(4)
	for full, want := range map[string]int64{
		"cluster.outbound|80||web.default.svc.cluster.local.circuit_breakers.default.cx_open": 1,
		"cluster.outbound|80||web.default.svc.cluster.local.upstream_rq_total":                4,
	} {
		if v, ok := s.Lookup(full); !ok || v != want {
			t.Errorf("Lookup(%s) = %d, %v; want %d", full, v, ok, want)
		}
	}
	for _, missing := range []string{"cluster.outbound|80||web.default.svc.cluster.local.circuit_breakers.default", "cluster.outbound|80||web.default.svc.cluster.local", "server", "live", ".", ""} {
		if _, ok := s.Lookup(missing); ok {
			t.Errorf("Lookup(%q) found a stat", missing)
		}
	}
	var text strings.Builder
	s.WriteText(&text, nil)
	if got := strings.Count(text.String(), "\n"); got != 5 {
		t.Errorf("WriteText printed %d stats, want 5:\n%s", got, text.String())
	}
}

func TestConcurrentUpdatesAreNotLost(t *testing.T) {
	s := NewStore()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for j := 0; j < 1000; j++ {
				s.Counter(HTTPScope("p"), "downstream_rq_total").Inc()
				s.Gauge(HTTPScope("p"), "downstream_rq_active").Inc()
			}
		})
	}
	wg.Wait()
	if v, _ := s.Lookup("http.p.downstream_rq_total"); v != 8000 {
		t.Errorf("counter = %d, want 8000", v)
	}
}

func TestTextFormat(t *testing.T) {
	s := NewStore()
	s.Counter(ListenerScope("0.0.0.0_80"), "downstream_cx_total").Add(7)
	s.Gauge(Plain("server"), "live").Set(1)
	s.Histogram(ClusterScope("c"), "upstream_rq_time")
	h := s.Histogram(ClusterScope("d"), "upstream_rq_time")
	h.Observe(3 * time.Millisecond)
	h.Observe(7 * time.Millisecond)
	var b strings.Builder
	s.WriteText(&b, nil)
	want := "cluster.c.upstream_rq_time: No recorded values\n" +
		// 3 ms and 7 ms: one sample in Envoy's (1,5] bucket, one in (5,10],
		// interpolated linearly inside each.
		"cluster.d.upstream_rq_time: P0(nan,1) P25(nan,3) P50(nan,5) P75(nan,7.5) P90(nan,9) P95(nan,9.5) P99(nan,9.9) P99.5(nan,9.95) P99.9(nan,9.99) P100(nan,10)\n" +
		"listener.0.0.0.0_80.downstream_cx_total: 7\n" +
		"server.live: 1\n"
	if b.String() != want {
		t.Errorf("text:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	s.WriteText(&b, func(n string) bool { return strings.HasPrefix(n, "server.") })
	if b.String() != "server.live: 1\n" {
		t.Errorf("filtered: %q", b.String())
	}
}

func TestPrometheusFormat(t *testing.T) {
	s := NewStore()
	s.Counter(ClusterScope("outbound|80||a.default.svc.cluster.local"), "upstream_rq_total").Add(2)
	s.Counter(ClusterScope("outbound|80||b.default.svc.cluster.local"), "upstream_rq_total").Add(5)
	s.Gauge(Plain("listener_manager"), "total_listeners_active").Set(3)
	s.Gauge(&Scope{Prefix: "listener_manager.listener.0.0.0.0_80", Family: "listener_manager_listener",
		Tags: []Tag{{"envoy_listener_name", "0.0.0.0_80"}}}, "failed").Set(1)
	h := s.Histogram(HTTPScope("ingress"), "downstream_rq_time")
	h.Observe(700 * time.Microsecond) // bucket 1 ms
	h.Observe(20 * time.Millisecond)  // bucket 25 ms
	var b strings.Builder
	s.WritePrometheus(&b)
	out := b.String()
	for _, want := range []string{
		"# TYPE envoy_cluster_upstream_rq_total counter\n",
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||a.default.svc.cluster.local"} 2` + "\n",
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||b.default.svc.cluster.local"} 5` + "\n",
		"# TYPE envoy_listener_manager_total_listeners_active gauge\nenvoy_listener_manager_total_listeners_active 3\n",
		`envoy_listener_manager_listener_failed{envoy_listener_name="0.0.0.0_80"} 1` + "\n",
		"# TYPE envoy_http_downstream_rq_time histogram\n",
		`envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="ingress",le="0.5"} 0` + "\n",
		`envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="ingress",le="1"} 1` + "\n",
		`envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="ingress",le="25"} 2` + "\n",
		`envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="ingress",le="+Inf"} 2` + "\n",
		`envoy_http_downstream_rq_time_sum{envoy_http_conn_manager_prefix="ingress"} 20.700` + "\n",
		`envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix="ingress"} 2` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("prometheus output lacks %q:\n%s", want, out)
		}
	}
	// One TYPE line per family, however many members.
	if n := strings.Count(out, "# TYPE envoy_cluster_upstream_rq_total "); n != 1 {
		t.Errorf("%d TYPE lines for one family", n)
	}
}

func TestPromNameSanitises(t *testing.T) {
	for in, want := range map[string]string{
		"server.live":   "envoy_server_live",
		"tcp-x.y:z":     "envoy_tcp_x_y_z",
		"ssl.handshake": "envoy_ssl_handshake",
	} {
		if got := promName(in); got != want {
			t.Errorf("promName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResetCounters(t *testing.T) {
	s := NewStore()
	c := s.Counter(ClusterScope("c"), "upstream_rq_total")
	c.Add(5)
	g := s.Gauge(Plain("server"), "live")
	g.Set(1)
	h := s.Histogram(ClusterScope("c"), "upstream_rq_time")
	h.Observe(time.Millisecond)
	s.ResetCounters()
	if c.Value() != 0 || g.Value() != 1 {
		t.Errorf("after reset: counter %d (want 0), gauge %d (want 1, gauges keep their value)", c.Value(), g.Value())
	}
	if q := h.Quantiles(); !math.IsNaN(q[0]) {
		t.Errorf("histogram not emptied: %v", q)
	}
	c.Inc()
	if c.Value() != 1 {
		t.Errorf("counter counts again from zero: %d", c.Value())
	}
}

// TestBlockReadsAsStatsMadeOneByOne makes the same stats as blocks in one
// store and one by one in another, bumps both alike, and compares every
// view of the two: a block is a layout of memory, not a different stat.
func TestBlockReadsAsStatsMadeOneByOne(t *testing.T) {
	l := NewLayout([]string{"upstream_rq_total", "outlier_detection.ejections_total"},
		[]string{"upstream_cx_active", "circuit_breakers.default.cx_open"}, []string{"upstream_rq_time"})
	blocks, single := NewStore(), NewStore()
	for _, name := range []string{"outbound|80||a.default.svc.cluster.local", "b"} {
		b := blocks.Block(ClusterScope(name), l)
		if blocks.Block(ClusterScope(name), l) != b {
			t.Fatal("asking twice for a block returned two: stats would reset on config updates")
		}
		sc := ClusterScope(name)
		for i, n := range l.counters {
			b.Counter(i).Add(uint64(len(name) + i))
			single.Counter(sc, n).Add(uint64(len(name) + i))
		}
		for i, n := range l.gauges {
			b.Gauge(i).Set(int64(len(name) * (i + 1)))
			single.Gauge(sc, n).Set(int64(len(name) * (i + 1)))
		}
		b.Histogram(0).Observe(time.Duration(len(name)) * time.Millisecond)
		single.Histogram(sc, "upstream_rq_time").Observe(time.Duration(len(name)) * time.Millisecond)
		// By name, a block's stat is the block's.
		if blocks.Counter(ClusterScope(name), "upstream_rq_total") != b.Counter(0) || blocks.Gauge(ClusterScope(name), "circuit_breakers.default.cx_open") != b.Gauge(1) ||
			blocks.Histogram(ClusterScope(name), "upstream_rq_time") != b.Histogram(0) {
			t.Error("a block's stat asked for by name is another stat")
		}
		// Names outside the layout are the scope's own.
		blocks.Counter(ClusterScope(name), "upstream_rq_503").Add(3)
		single.Counter(sc, "upstream_rq_503").Add(3)
	}
	for _, s := range []*Store{blocks, single} {
		s.Gauge(Plain("server"), "live").Set(1)
	}
	views := func(s *Store) []string {
		var text, prom strings.Builder
		s.WriteText(&text, nil)
		s.WritePrometheus(&prom)
		names, qs := s.HistogramQuantiles(nil)
		v, ok := s.Lookup("cluster.outbound|80||a.default.svc.cluster.local.outlier_detection.ejections_total")
		return []string{text.String(), prom.String(), fmt.Sprint(names, qs), fmt.Sprint(v, ok)}
	}
	compare := func(when string) {
		t.Helper()
		got, want := views(blocks), views(single)
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s, view %d:\n%s\nwant:\n%s", when, i, got[i], want[i])
			}
		}
	}
	compare("bumped")
	blocks.ResetCounters()
	single.ResetCounters()
	compare("reset")

	for what, f := range map[string]func(){
		"a second layout": func() { blocks.Block(ClusterScope("b"), NewLayout([]string{"x"}, nil, nil)) },
		"a name made before": func() {
			s := NewStore()
			s.Counter(ClusterScope("c"), "upstream_rq_total")
			s.Block(ClusterScope("c"), l)
		},
		"a block's name, as a gauge": func() { blocks.Gauge(ClusterScope("b"), "upstream_rq_total") },
		"a block's gauge as a func":  func() { blocks.GaugeFunc(ClusterScope("b"), "upstream_cx_active", func() int64 { return 1 }) },
		"a name twice in a layout":   func() { NewLayout([]string{"x"}, []string{"x"}, nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", what)
				}
			}()
			f()
		}()
	}
}
