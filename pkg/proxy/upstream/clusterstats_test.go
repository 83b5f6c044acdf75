package upstream

import (
	"maps"
	"slices"
	"testing"

	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// TestClusterStatsHaveEnvoysNames bumps each of a cluster's stats alone
// and reads it back by its Envoy name: the block's layout and the fields
// are two lists that must agree.
func TestClusterStatsHaveEnvoysNames(t *testing.T) {
	counters := map[string]func(*ClusterStats) *stats.Counter{
		"upstream_rq_total":                                    func(s *ClusterStats) *stats.Counter { return s.RqTotal },
		"upstream_rq_pending_overflow":                         func(s *ClusterStats) *stats.Counter { return s.RqPendingOverflow },
		"upstream_rq_pending_total":                            func(s *ClusterStats) *stats.Counter { return s.RqPendingTotal },
		"upstream_rq_retry":                                    func(s *ClusterStats) *stats.Counter { return s.RqRetry },
		"upstream_rq_retry_success":                            func(s *ClusterStats) *stats.Counter { return s.RqRetrySuccess },
		"upstream_rq_retry_overflow":                           func(s *ClusterStats) *stats.Counter { return s.RqRetryOverflow },
		"upstream_rq_timeout":                                  func(s *ClusterStats) *stats.Counter { return s.RqTimeout },
		"upstream_rq_per_try_timeout":                          func(s *ClusterStats) *stats.Counter { return s.RqPerTryTimeout },
		"upstream_cx_total":                                    func(s *ClusterStats) *stats.Counter { return s.CxTotal },
		"upstream_cx_connect_fail":                             func(s *ClusterStats) *stats.Counter { return s.CxConnectFail },
		"upstream_cx_connect_timeout":                          func(s *ClusterStats) *stats.Counter { return s.CxConnectTimeout },
		"upstream_cx_overflow":                                 func(s *ClusterStats) *stats.Counter { return s.CxOverflow },
		"upstream_cx_destroy":                                  func(s *ClusterStats) *stats.Counter { return s.CxDestroy },
		"upstream_cx_destroy_remote":                           func(s *ClusterStats) *stats.Counter { return s.CxDestroyRemote },
		"upstream_cx_max_requests":                             func(s *ClusterStats) *stats.Counter { return s.CxMaxRequests },
		"upstream_cx_rx_bytes_total":                           func(s *ClusterStats) *stats.Counter { return s.CxRxBytes },
		"upstream_cx_tx_bytes_total":                           func(s *ClusterStats) *stats.Counter { return s.CxTxBytes },
		"upstream_cx_idle_timeout":                             func(s *ClusterStats) *stats.Counter { return s.CxIdleTimeout },
		"upstream_rq_1xx":                                      func(s *ClusterStats) *stats.Counter { return s.RqClass[1] },
		"upstream_rq_2xx":                                      func(s *ClusterStats) *stats.Counter { return s.RqClass[2] },
		"upstream_rq_3xx":                                      func(s *ClusterStats) *stats.Counter { return s.RqClass[3] },
		"upstream_rq_4xx":                                      func(s *ClusterStats) *stats.Counter { return s.RqClass[4] },
		"upstream_rq_5xx":                                      func(s *ClusterStats) *stats.Counter { return s.RqClass[5] },
		"outlier_detection.ejections_total":                    func(s *ClusterStats) *stats.Counter { return s.EjectionsTotal },
		"outlier_detection.ejections_enforced_total":           func(s *ClusterStats) *stats.Counter { return s.EjectionsEnforced },
		"outlier_detection.ejections_overflow":                 func(s *ClusterStats) *stats.Counter { return s.EjectionsOverflow },
		"outlier_detection.ejections_detected_consecutive_5xx": func(s *ClusterStats) *stats.Counter { return s.Detected5xx },
		"outlier_detection.ejections_enforced_consecutive_5xx": func(s *ClusterStats) *stats.Counter { return s.Enforced5xx },
		"outlier_detection.ejections_detected_consecutive_gateway_failure":      func(s *ClusterStats) *stats.Counter { return s.DetectedGateway },
		"outlier_detection.ejections_enforced_consecutive_gateway_failure":      func(s *ClusterStats) *stats.Counter { return s.EnforcedGateway },
		"outlier_detection.ejections_detected_consecutive_local_origin_failure": func(s *ClusterStats) *stats.Counter { return s.DetectedLocal },
		"outlier_detection.ejections_enforced_consecutive_local_origin_failure": func(s *ClusterStats) *stats.Counter { return s.EnforcedLocal },
	}
	gauges := map[string]func(*ClusterStats) *stats.Gauge{
		"upstream_cx_active":                       func(s *ClusterStats) *stats.Gauge { return s.CxActive },
		"upstream_rq_active":                       func(s *ClusterStats) *stats.Gauge { return s.RqActive },
		"upstream_rq_pending_active":               func(s *ClusterStats) *stats.Gauge { return s.RqPendingActive },
		"membership_healthy":                       func(s *ClusterStats) *stats.Gauge { return s.MembershipHealthy },
		"membership_total":                         func(s *ClusterStats) *stats.Gauge { return s.MembershipTotal },
		"circuit_breakers.default.cx_open":         func(s *ClusterStats) *stats.Gauge { return s.CBCxOpen },
		"circuit_breakers.default.rq_pending_open": func(s *ClusterStats) *stats.Gauge { return s.CBRqPendingOpen },
		"circuit_breakers.default.rq_open":         func(s *ClusterStats) *stats.Gauge { return s.CBRqOpen },
		"circuit_breakers.default.rq_retry_open":   func(s *ClusterStats) *stats.Gauge { return s.CBRqRetryOpen },
		"outlier_detection.ejections_active":       func(s *ClusterStats) *stats.Gauge { return s.EjectionsActive },
	}
	if len(counters) != len(clusterCounters) || len(gauges) != len(clusterGauges) {
		t.Fatalf("the layout has %d counters and %d gauges, the test %d and %d", len(clusterCounters), len(clusterGauges), len(counters), len(gauges))
	}
	const prefix = "cluster.outbound|80||web.default.svc.cluster.local."
	store := stats.NewStore()
	s := newClusterStats(store, "outbound|80||web.default.svc.cluster.local")
	// Every stat is zero but the one bumped, which reads back as bumped.
	names := slices.Concat(slices.Collect(maps.Keys(counters)), slices.Collect(maps.Keys(gauges)))
	check := func(bumped string) {
		t.Helper()
		for _, n := range names {
			want := int64(0)
			if n == bumped {
				want = 1
			}
			if v, ok := store.Lookup(prefix + n); !ok || v != want {
				t.Errorf("after bumping %s: %s = %d, %v; want %d", bumped, n, v, ok, want)
			}
		}
	}
	for n, f := range counters {
		f(s).Inc()
		check(n)
		f(s).Add(^uint64(0)) // back to zero
	}
	for n, f := range gauges {
		f(s).Inc()
		check(n)
		f(s).Dec()
	}
	s.RqTime.Observe(1)
	if v, ok := store.Lookup(prefix + "upstream_rq_time"); !ok || v != 1 {
		t.Errorf("upstream_rq_time has %d samples, %v", v, ok)
	}
	// A cluster made again (a config update) has the same stats; a status
	// code's counter is made on its first response.
	again := newClusterStats(store, "outbound|80||web.default.svc.cluster.local")
	again.RqTotal.Inc()
	again.Response(503)
	if v, _ := store.Lookup(prefix + "upstream_rq_total"); v != 1 || s.RqTotal.Value() != 1 {
		t.Errorf("upstream_rq_total after a second newClusterStats = %d, first's %d", v, s.RqTotal.Value())
	}
	if v, _ := store.Lookup(prefix + "upstream_rq_503"); v != 1 {
		t.Errorf("upstream_rq_503 = %d", v)
	}
	if v, _ := store.Lookup(prefix + "upstream_rq_5xx"); v != 1 {
		t.Errorf("upstream_rq_5xx = %d", v)
	}
}
