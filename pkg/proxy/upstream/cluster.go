package upstream

import (
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// Host is one upstream endpoint. Hosts keep their identity (and so their
// connection pool and outlier state) across endpoint updates.
type Host struct {
	Addr    string // "ip:port" (or "name:port" before DNS)
	Weight  uint32
	Healthy bool // from EDS health status

	// meta is the workload behind the host (nil: unknown). It changes
	// only when EDS says something different, so its pointer identifies
	// the workload as long as it stays the same.
	meta atomic.Pointer[EndpointMeta]

	cluster *Cluster
	pool    *pool
	// Active requests, for least-request balancing and /clusters.
	Active  atomic.Int64
	success atomic.Uint64
	errors  atomic.Uint64
	outlier outlierState
}

// Meta returns what EDS says about the workload behind the host (nil:
// nothing).
func (h *Host) Meta() *EndpointMeta { return h.meta.Load() }

func (h *Host) setMeta(m *EndpointMeta) {
	old := h.meta.Load()
	switch {
	case m == nil && old == nil:
	case m != nil && old != nil && *m == *old:
	default:
		h.meta.Store(m)
	}
}

// Ejected reports whether outlier detection has ejected the host.
func (h *Host) Ejected() bool { return h.outlier.ejected.Load() }

// hostSet is an immutable view of a cluster's hosts.
type hostSet struct {
	all       []*Host
	available []*Host // healthy and not ejected
	schedule  []*Host // weighted round robin order (nil when unweighted)
	ring      []ringEntry
	maglev    []*Host
	panic     bool
}

type ringEntry struct {
	hash uint64
	host *Host
}

// ClusterStats are a cluster's Envoy-named counters, resolved once.
type ClusterStats struct {
	scope *stats.Scope
	store *stats.Store

	RqTotal, RqPendingOverflow, RqPendingTotal, RqRetry, RqRetrySuccess, RqRetryOverflow     *stats.Counter
	RqTimeout, RqPerTryTimeout, CxTotal, CxConnectFail, CxConnectTimeout, CxOverflow         *stats.Counter
	CxDestroy, CxDestroyRemote, CxMaxRequests, CxRxBytes, CxTxBytes, CxIdleTimeout           *stats.Counter
	RqClass                                                                                  [6]*stats.Counter
	CxActive, RqActive, RqPendingActive, MembershipHealthy, MembershipTotal                  *stats.Gauge
	CBCxOpen, CBRqPendingOpen, CBRqOpen, CBRqRetryOpen                                       *stats.Gauge
	EjectionsActive                                                                          *stats.Gauge
	EjectionsTotal, EjectionsEnforced, EjectionsOverflow                                     *stats.Counter
	Detected5xx, Enforced5xx, DetectedGateway, EnforcedGateway, DetectedLocal, EnforcedLocal *stats.Counter
	RqTime                                                                                   *stats.Histogram
	// codes are the per-status counters, made on a cluster's first
	// response: 4.8 KB that most of thousands of clusters never need.
	codes atomic.Pointer[codeCounters]
}

// codeCounters are a cluster's counters by response status.
type codeCounters [600]atomic.Pointer[stats.Counter]

// The layout of a cluster's stats: the counters, gauges and histogram
// newClusterStats resolves, by index.
var (
	clusterCounters = []string{"upstream_rq_total", "upstream_rq_pending_overflow", "upstream_rq_pending_total",
		"upstream_rq_retry", "upstream_rq_retry_success", "upstream_rq_retry_overflow",
		"upstream_rq_timeout", "upstream_rq_per_try_timeout", "upstream_cx_total",
		"upstream_cx_connect_fail", "upstream_cx_connect_timeout", "upstream_cx_overflow",
		"upstream_cx_destroy", "upstream_cx_destroy_remote", "upstream_cx_max_requests",
		"upstream_cx_rx_bytes_total", "upstream_cx_tx_bytes_total", "upstream_cx_idle_timeout",
		"outlier_detection.ejections_total", "outlier_detection.ejections_enforced_total", "outlier_detection.ejections_overflow",
		"outlier_detection.ejections_detected_consecutive_5xx", "outlier_detection.ejections_enforced_consecutive_5xx",
		"outlier_detection.ejections_detected_consecutive_gateway_failure",
		"outlier_detection.ejections_enforced_consecutive_gateway_failure",
		"outlier_detection.ejections_detected_consecutive_local_origin_failure",
		"outlier_detection.ejections_enforced_consecutive_local_origin_failure",
		"upstream_rq_1xx", "upstream_rq_2xx", "upstream_rq_3xx", "upstream_rq_4xx", "upstream_rq_5xx"}
	clusterGauges = []string{"upstream_cx_active", "upstream_rq_active", "upstream_rq_pending_active",
		"membership_healthy", "membership_total",
		"circuit_breakers.default.cx_open", "circuit_breakers.default.rq_pending_open",
		"circuit_breakers.default.rq_open", "circuit_breakers.default.rq_retry_open",
		"outlier_detection.ejections_active"}
	clusterLayout = stats.NewLayout(clusterCounters, clusterGauges, []string{"upstream_rq_time"})
)

func newClusterStats(store *stats.Store, name string) *ClusterStats {
	sc := stats.ClusterScope(name)
	b := store.Block(sc, clusterLayout)
	s := &ClusterStats{scope: sc, store: store}
	for i, p := range []**stats.Counter{&s.RqTotal, &s.RqPendingOverflow, &s.RqPendingTotal,
		&s.RqRetry, &s.RqRetrySuccess, &s.RqRetryOverflow,
		&s.RqTimeout, &s.RqPerTryTimeout, &s.CxTotal,
		&s.CxConnectFail, &s.CxConnectTimeout, &s.CxOverflow,
		&s.CxDestroy, &s.CxDestroyRemote, &s.CxMaxRequests,
		&s.CxRxBytes, &s.CxTxBytes, &s.CxIdleTimeout,
		&s.EjectionsTotal, &s.EjectionsEnforced, &s.EjectionsOverflow,
		&s.Detected5xx, &s.Enforced5xx,
		&s.DetectedGateway,
		&s.EnforcedGateway,
		&s.DetectedLocal,
		&s.EnforcedLocal,
		&s.RqClass[1], &s.RqClass[2], &s.RqClass[3], &s.RqClass[4], &s.RqClass[5]} {
		*p = b.Counter(i)
	}
	for i, p := range []**stats.Gauge{&s.CxActive, &s.RqActive, &s.RqPendingActive,
		&s.MembershipHealthy, &s.MembershipTotal,
		&s.CBCxOpen, &s.CBRqPendingOpen,
		&s.CBRqOpen, &s.CBRqRetryOpen,
		&s.EjectionsActive} {
		*p = b.Gauge(i)
	}
	s.RqTime = b.Histogram(0)
	return s
}

// Response counts a response status.
func (s *ClusterStats) Response(code int) {
	if code < 100 || code >= 600 {
		return
	}
	s.RqClass[code/100].Inc()
	codes := s.codes.Load()
	if codes == nil {
		s.codes.CompareAndSwap(nil, new(codeCounters))
		codes = s.codes.Load()
	}
	p := codes[code].Load()
	if p == nil {
		p = s.store.Counter(s.scope, "upstream_rq_"+strconv.Itoa(code))
		codes[code].Store(p)
	}
	p.Inc()
}

// Cluster is a running cluster.
type Cluster struct {
	cfg   *ClusterConfig
	Stats *ClusterStats
	mgr   *Manager

	hostsMu sync.Mutex // serialises host set rebuilds
	hosts   atomic.Pointer[hostSet]
	rr      atomic.Uint64

	// Circuit-breaker accounting.
	connections     atomic.Int64
	activeRequests  atomic.Int64
	pendingRequests atomic.Int64
	activeRetries   atomic.Int64
	queue           waitQueue

	h2       *h2Client
	closed   chan struct{}
	once     sync.Once
	warmed   chan struct{}
	warmOnce sync.Once
}

// Config returns the cluster's configuration.
func (c *Cluster) Config() *ClusterConfig { return c.cfg }

// Name returns the cluster name.
func (c *Cluster) Name() string { return c.cfg.Name }

// Hosts returns every host, for /clusters.
func (c *Cluster) Hosts() []*Host {
	hs := c.hosts.Load()
	if hs == nil {
		return nil
	}
	return hs.all
}

func (c *Cluster) markWarm() { c.warmOnce.Do(func() { close(c.warmed) }) }

// Warm reports whether the cluster has its first set of endpoints.
func (c *Cluster) Warm() bool {
	select {
	case <-c.warmed:
		return true
	default:
		return false
	}
}

// setEndpoints replaces the cluster's hosts, keeping existing host objects
// for addresses that stay.
func (c *Cluster) setEndpoints(eps []EndpointSpec) {
	c.hostsMu.Lock()
	defer c.hostsMu.Unlock()
	old := map[string]*Host{}
	if hs := c.hosts.Load(); hs != nil {
		for _, h := range hs.all {
			old[h.Addr] = h
		}
	}
	var all []*Host
	seen := map[string]bool{}
	for _, ep := range eps {
		addr := net.JoinHostPort(ep.Address, strconv.Itoa(int(ep.Port)))
		if seen[addr] {
			continue
		}
		seen[addr] = true
		h, ok := old[addr]
		if !ok {
			h = &Host{Addr: addr, cluster: c}
			h.pool = newPool(h)
		}
		delete(old, addr)
		h.Weight, h.Healthy = max(ep.Weight, 1), ep.Healthy
		h.setMeta(ep.Meta)
		all = append(all, h)
	}
	for _, h := range old {
		if h.Ejected() {
			c.Stats.EjectionsActive.Dec()
		}
		h.pool.close()
	}
	c.rebuildLocked(all)
	c.markWarm()
}

// rebuild recomputes the derived host views (after ejections change).
func (c *Cluster) rebuild() {
	c.hostsMu.Lock()
	defer c.hostsMu.Unlock()
	if hs := c.hosts.Load(); hs != nil {
		c.rebuildLocked(hs.all)
	}
}

func (c *Cluster) rebuildLocked(all []*Host) {
	hs := &hostSet{all: all}
	healthy := 0
	for _, h := range all {
		if h.Healthy {
			healthy++
			if !h.Ejected() {
				hs.available = append(hs.available, h)
			}
		}
	}
	if len(all) > 0 && float64(len(hs.available))*100 < c.cfg.PanicThreshold*float64(len(all)) {
		// Panic mode: too few healthy hosts; balance over all of them.
		hs.panic = true
		hs.available = all
	}
	weighted := false
	for _, h := range hs.available {
		if h.Weight != hs.available[0].Weight {
			weighted = true
		}
	}
	if weighted && c.cfg.LB == RoundRobin {
		hs.schedule = weightedSchedule(hs.available)
	}
	switch c.cfg.LB {
	case RingHash:
		hs.ring = buildRing(hs.available, c.cfg.RingSize)
	case Maglev:
		hs.maglev = buildMaglev(hs.available, c.cfg.RingSize)
	}
	c.hosts.Store(hs)
	c.Stats.MembershipTotal.Set(int64(len(all)))
	c.Stats.MembershipHealthy.Set(int64(healthy))
}

func gcd(a, b uint32) uint32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// weightedSchedule interleaves hosts in proportion to their weights
// (smooth weighted round robin), bounded in length.
func weightedSchedule(hosts []*Host) []*Host {
	g := uint32(0)
	for _, h := range hosts {
		g = gcd(g, h.Weight)
	}
	total := 0
	weights := make([]int, len(hosts))
	for i, h := range hosts {
		weights[i] = int(h.Weight / g)
		total += weights[i]
	}
	if total > 4096 {
		scale := float64(4096) / float64(total)
		total = 0
		for i := range weights {
			weights[i] = max(1, int(float64(weights[i])*scale))
			total += weights[i]
		}
	}
	current := make([]int, len(hosts))
	out := make([]*Host, 0, total)
	for range total {
		best := 0
		for i := range hosts {
			current[i] += weights[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		out = append(out, hosts[best])
	}
	return out
}

func buildRing(hosts []*Host, size uint64) []ringEntry {
	if len(hosts) == 0 {
		return nil
	}
	total := uint64(0)
	for _, h := range hosts {
		total += uint64(h.Weight)
	}
	var ring []ringEntry
	for _, h := range hosts {
		n := max(1, size*uint64(h.Weight)/total)
		for i := uint64(0); i < n; i++ {
			ring = append(ring, ringEntry{hash: xxhash.Sum64String(h.Addr + "_" + strconv.FormatUint(i, 10)), host: h})
		}
	}
	sort.Slice(ring, func(i, j int) bool { return ring[i].hash < ring[j].hash })
	return ring
}

// buildMaglev fills a lookup table of the given (prime) size with
// Maglev's permutation algorithm.
func buildMaglev(hosts []*Host, size uint64) []*Host {
	if len(hosts) == 0 {
		return nil
	}
	m := size
	table := make([]*Host, m)
	offsets, skips, next := make([]uint64, len(hosts)), make([]uint64, len(hosts)), make([]uint64, len(hosts))
	for i, h := range hosts {
		offsets[i] = xxhash.Sum64String(h.Addr) % m
		skips[i] = xxhash.Sum64String(h.Addr+"#skip")%(m-1) + 1
	}
	filled := uint64(0)
	for filled < m {
		for i, h := range hosts {
			for w := uint32(0); w < h.Weight && filled < m; w++ {
				for {
					slot := (offsets[i] + next[i]*skips[i]) % m
					next[i]++
					if table[slot] == nil {
						table[slot] = h
						filled++
						break
					}
				}
			}
		}
	}
	return table
}

// PickOptions narrow a host choice.
type PickOptions struct {
	Hash    uint64
	HasHash bool
	// Exclude rejects hosts (previous attempts, for retries).
	Exclude  func(*Host) bool
	Attempts int
}

// Pick chooses a host, or nil when none is available.
func (c *Cluster) Pick(o PickOptions) *Host {
	hs := c.hosts.Load()
	if hs == nil || len(hs.available) == 0 {
		return nil
	}
	attempts := max(o.Attempts, 1)
	var h *Host
	for i := 0; i < attempts; i++ {
		h = c.pickOnce(hs, o, i)
		if o.Exclude == nil || !o.Exclude(h) {
			return h
		}
	}
	// Envoy gives up here and retries on an excluded host; with two
	// hosts and five draws that is one retry in 32 sent back to the host
	// that just failed. Any host not excluded is better: scan for one
	// from a random start (the balancing the policy wanted is moot
	// once its draws kept landing on excluded hosts).
	av := hs.available
	start := rand.IntN(len(av))
	for i := range av {
		if cand := av[(start+i)%len(av)]; !o.Exclude(cand) {
			return cand
		}
	}
	return h
}

func (c *Cluster) pickOnce(hs *hostSet, o PickOptions, attempt int) *Host {
	av := hs.available
	switch c.cfg.LB {
	case RingHash:
		if o.HasHash && len(hs.ring) > 0 {
			key := o.Hash + uint64(attempt)*0x9e3779b97f4a7c15
			i := sort.Search(len(hs.ring), func(i int) bool { return hs.ring[i].hash >= key })
			if i == len(hs.ring) {
				i = 0
			}
			return hs.ring[i].host
		}
		return av[rand.IntN(len(av))]
	case Maglev:
		if o.HasHash && len(hs.maglev) > 0 {
			return hs.maglev[(o.Hash+uint64(attempt))%uint64(len(hs.maglev))]
		}
		return av[rand.IntN(len(av))]
	case Random:
		return av[rand.IntN(len(av))]
	case LeastRequest:
		if len(av) == 1 {
			return av[0]
		}
		a, b := av[rand.IntN(len(av))], av[rand.IntN(len(av))]
		if b.Active.Load() < a.Active.Load() {
			return b
		}
		return a
	}
	n := c.rr.Add(1)
	if hs.schedule != nil {
		return hs.schedule[n%uint64(len(hs.schedule))]
	}
	return av[n%uint64(len(av))]
}

// HealthyCount returns how many hosts can take traffic.
func (c *Cluster) HealthyCount() int {
	hs := c.hosts.Load()
	if hs == nil {
		return 0
	}
	return len(hs.available)
}

// close releases the cluster's connections once in-flight requests end.
func (c *Cluster) close() {
	c.once.Do(func() {
		close(c.closed)
		if hs := c.hosts.Load(); hs != nil {
			for _, h := range hs.all {
				h.pool.close()
			}
		}
		if c.h2 != nil {
			c.h2.close()
		}
	})
}

// Request accounting for circuit breakers.

// AcquireRequest admits a request under max_requests.
func (c *Cluster) AcquireRequest() bool {
	if n := c.activeRequests.Add(1); n > c.cfg.Limits.MaxRequests {
		c.activeRequests.Add(-1)
		c.Stats.CBRqOpen.Set(1)
		return false
	}
	c.Stats.RqActive.Inc()
	return true
}

// ReleaseRequest ends a request.
func (c *Cluster) ReleaseRequest() {
	c.activeRequests.Add(-1)
	c.Stats.RqActive.Dec()
	c.Stats.CBRqOpen.Set(0)
}

// AcquireRetry admits a retry under max_retries.
func (c *Cluster) AcquireRetry() bool {
	if n := c.activeRetries.Add(1); n > c.cfg.Limits.MaxRetries {
		c.activeRetries.Add(-1)
		c.Stats.CBRqRetryOpen.Set(1)
		c.Stats.RqRetryOverflow.Inc()
		return false
	}
	return true
}

// ReleaseRetry ends a retry.
func (c *Cluster) ReleaseRetry() {
	c.activeRetries.Add(-1)
	c.Stats.CBRqRetryOpen.Set(0)
}

// Connections returns the number of open upstream connections.
func (c *Cluster) Connections() int64 { return c.connections.Load() }
