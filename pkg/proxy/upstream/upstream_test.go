package upstream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// tcpServer accepts connections and holds them open.
func tcpServer(t *testing.T) EndpointSpec {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { buf := make([]byte, 1); c.Read(buf); c.Close() }()
		}
	}()
	return EndpointSpec{Address: "127.0.0.1", Port: uint32(lis.Addr().(*net.TCPAddr).Port), Weight: 1, Healthy: true}
}

func newManager(t *testing.T) *Manager {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := NewManager(ctx, logr.Discard(), stats.NewStore(), nil)
	t.Cleanup(m.Close)
	return m
}

func cfg(name string, mut func(*ClusterConfig)) *ClusterConfig {
	c := &ClusterConfig{Name: name, Discovery: EDS, EDSServiceName: name, ConnectTimeout: time.Second, PanicThreshold: 50, IdleTimeout: time.Hour,
		Limits: Limits{MaxConnections: 1 << 40, MaxPendingRequests: 1 << 40, MaxRequests: 1 << 40, MaxRetries: 3}}
	if mut != nil {
		mut(c)
	}
	return c
}

func eps(n int) []EndpointSpec {
	var out []EndpointSpec
	for i := 0; i < n; i++ {
		out = append(out, EndpointSpec{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 80, Weight: 1, Healthy: true})
	}
	return out
}

// TestReplacedClusterServesInflightRequests: a request that picked a
// cluster just before a push replaced it must still get a connection.
func TestReplacedClusterServesInflightRequests(t *testing.T) {
	m := newManager(t)
	ep := tcpServer(t)
	m.SetEndpoints("c", []EndpointSpec{ep})
	m.Apply(map[string]Versioned{"c": {Config: cfg("c", nil), Hash: "1"}}, nil)
	old := m.Get("c")
	m.Apply(map[string]Versioned{"c": {Config: cfg("c", func(c *ClusterConfig) { c.Limits.MaxRetries = 9 }), Hash: "2"}}, nil)
	if m.Get("c") == old {
		t.Fatal("the cluster was not replaced")
	}
	h := old.Pick(PickOptions{})
	conn, err := old.Get(context.Background(), h)
	if err != nil {
		t.Fatalf("a replaced cluster refused an in-flight request: %v", err)
	}
	old.Release(conn, true) // not pooled any more: closed
	if n := old.Connections(); n != 0 {
		t.Errorf("a replaced cluster kept %d connections", n)
	}
}

func TestRoundRobinWeightedAndPanic(t *testing.T) {
	m := newManager(t)
	m.Apply(map[string]Versioned{"rr": {Config: cfg("rr", nil), Hash: "1"}}, nil)
	c := m.Get("rr")
	c.setEndpoints(eps(3))
	counts := map[string]int{}
	for i := 0; i < 300; i++ {
		counts[c.Pick(PickOptions{}).Addr]++
	}
	for a, n := range counts {
		if n != 100 {
			t.Errorf("round robin: %s got %d of 300", a, n)
		}
	}
	weighted := eps(2)
	weighted[0].Weight = 3
	c.setEndpoints(weighted)
	counts = map[string]int{}
	for i := 0; i < 400; i++ {
		counts[c.Pick(PickOptions{}).Addr]++
	}
	if counts["10.0.0.1:80"] != 300 || counts["10.0.0.2:80"] != 100 {
		t.Errorf("weighted round robin 3:1: %v", counts)
	}
	// Unhealthy hosts are skipped; below the panic threshold all are used.
	sick := eps(4)
	sick[0].Healthy, sick[1].Healthy = false, false
	c.setEndpoints(sick)
	if c.HealthyCount() != 2 {
		t.Errorf("healthy = %d", c.HealthyCount())
	}
	sick[2].Healthy = false
	c.setEndpoints(sick)
	if c.HealthyCount() != 4 || !c.hosts.Load().panic {
		t.Errorf("one healthy host of four (25%% < 50%%) must put the cluster in panic mode")
	}
}

func TestHashingIsStableAndSpread(t *testing.T) {
	for _, lb := range []LBPolicy{RingHash, Maglev} {
		m := newManager(t)
		m.Apply(map[string]Versioned{"h": {Config: cfg("h", func(c *ClusterConfig) {
			c.LB = lb
			c.RingSize = map[LBPolicy]uint64{RingHash: 1024, Maglev: 1031}[lb]
		}), Hash: "1"}}, nil)
		c := m.Get("h")
		c.setEndpoints(eps(4))
		first := map[uint64]*Host{}
		used := map[*Host]bool{}
		for k := uint64(0); k < 200; k++ {
			h := c.Pick(PickOptions{Hash: k * 0x9e3779b97f4a7c15, HasHash: true})
			first[k] = h
			used[h] = true
		}
		for k := uint64(0); k < 200; k++ {
			if c.Pick(PickOptions{Hash: k * 0x9e3779b97f4a7c15, HasHash: true}) != first[k] {
				t.Fatalf("policy %d: key %d moved", lb, k)
			}
		}
		if len(used) != 4 {
			t.Errorf("policy %d: keys reached %d of 4 hosts", lb, len(used))
		}
		// Removing one host moves only the keys that were on it.
		c.setEndpoints(eps(3))
		moved := 0
		for k := uint64(0); k < 200; k++ {
			h := c.Pick(PickOptions{Hash: k * 0x9e3779b97f4a7c15, HasHash: true})
			if first[k].Addr != "10.0.0.4:80" && h.Addr != first[k].Addr {
				moved++
			}
		}
		// Ring hash, like Envoy's, gives the remaining hosts more replicas
		// when one leaves, so a few other keys move too; most must stay.
		if moved > 200/4 {
			t.Errorf("policy %d: %d keys not on the removed host moved", lb, moved)
		}
	}
}

func TestOutlierEjectionGrowsAndReturns(t *testing.T) {
	m := newManager(t)
	base := 150 * time.Millisecond
	m.Apply(map[string]Versioned{"o": {Config: cfg("o", func(c *ClusterConfig) {
		c.Outlier = &OutlierConfig{Consecutive5xx: 2, Enforcing5xx: 100, ConsecutiveGateway: 5, Interval: 20 * time.Millisecond,
			BaseEjectionTime: base, MaxEjectionTime: time.Minute, MaxEjectionPercent: 100}
	}), Hash: "1"}}, nil)
	c := m.Get("o")
	c.setEndpoints(eps(2))
	h := c.Hosts()[0]
	c.Report(h, ServerError, 500)
	if h.Ejected() {
		t.Fatal("ejected after one error with consecutive5xx: 2")
	}
	c.Report(h, Success, 200) // a success resets the count
	c.Report(h, ServerError, 500)
	if h.Ejected() {
		t.Fatal("ejected although a success came between the errors")
	}
	// start is taken before the errors that eject, so the measured time
	// can only overstate the ejection: taken after, a preemption between
	// the ejection and time.Now() made a busy machine measure it short.
	ejectAndMeasure := func() time.Duration {
		start := time.Now()
		c.Report(h, ServerError, 500)
		c.Report(h, ServerError, 500)
		if !h.Ejected() {
			t.Fatal("not ejected after two consecutive 5xx")
		}
		for h.Ejected() {
			if time.Since(start) > 10*time.Second {
				t.Fatal("never returned")
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start)
	}
	if d := ejectAndMeasure(); d < base {
		t.Errorf("first ejection lasted %v, want at least %v", d, base)
	}
	if d := ejectAndMeasure(); d < 2*base {
		t.Errorf("second ejection lasted %v, want at least %v (base × 2)", d, 2*base)
	}
	if v := c.Stats.EjectionsTotal.Value(); v != 2 {
		t.Errorf("ejections_total = %d", v)
	}
	// Connection failures count as gateway errors unless split.
	g := c.Hosts()[1]
	for i := 0; i < 5; i++ {
		c.Report(g, LocalFailure, 0)
	}
	if !g.Ejected() {
		t.Error("five local failures must eject (consecutive 5xx)")
	}
}

func TestPendingOverflowAndMaxConnections(t *testing.T) {
	m := newManager(t)
	ep := tcpServer(t)
	m.SetEndpoints("p", []EndpointSpec{ep})
	m.Apply(map[string]Versioned{"p": {Config: cfg("p", func(c *ClusterConfig) {
		c.Limits.MaxConnections, c.Limits.MaxPendingRequests = 1, 1
	}), Hash: "1"}}, nil)
	c := m.Get("p")
	h := c.Pick(PickOptions{})
	conn, err := c.Get(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn, 1)
	go func() {
		w, err := c.Get(context.Background(), h) // pending
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	deadline := time.Now().Add(5 * time.Second)
	for c.pendingRequests.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := c.Get(context.Background(), h); !errors.Is(err, ErrOverflow) {
		t.Fatalf("a second pending request must overflow, got %v", err)
	}
	if c.Stats.RqPendingOverflow.Value() != 1 || c.Stats.CxOverflow.Value() < 1 {
		t.Errorf("overflow stats: pending %d cx %d", c.Stats.RqPendingOverflow.Value(), c.Stats.CxOverflow.Value())
	}
	c.Release(conn, true) // handed straight to the waiter
	w := <-got
	if w != conn {
		t.Error("the released connection should go to the pending request")
	}
	c.Release(w, false)
	if c.Connections() != 0 {
		t.Errorf("connections = %d", c.Connections())
	}
}

func TestCompileEndpointsAndAddresses(t *testing.T) {
	m := newManager(t)
	m.Apply(map[string]Versioned{"d": {Config: cfg("d", nil), Hash: "1"}}, nil)
	c := m.Get("d")
	c.setEndpoints([]EndpointSpec{{Address: "::1", Port: 8080, Weight: 1, Healthy: true}, {Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true}})
	addrs := map[string]bool{}
	for _, h := range c.Hosts() {
		addrs[h.Addr] = true
	}
	if !addrs["[::1]:8080"] || !addrs[net.JoinHostPort("10.0.0.1", strconv.Itoa(80))] {
		t.Errorf("host addresses %v", addrs)
	}
}

// TestIdleConnectionsDoNotStarveOtherHosts: at max_connections, an idle
// connection to one host is closed to serve a request for another, and an
// ejected host's idle connections are closed at once (seed 002: a failing
// v2 ejected must not hold the cluster's three connections).
func TestIdleConnectionsDoNotStarveOtherHosts(t *testing.T) {
	m := newManager(t)
	a, b := tcpServer(t), tcpServer(t)
	m.SetEndpoints("p", []EndpointSpec{a, b})
	m.Apply(map[string]Versioned{"p": {Config: cfg("p", func(c *ClusterConfig) {
		c.Limits.MaxConnections, c.Limits.MaxPendingRequests = 1, 1
		c.Outlier = &OutlierConfig{Consecutive5xx: 1, Enforcing5xx: 100, Interval: time.Hour, BaseEjectionTime: time.Hour, MaxEjectionPercent: 100}
	}), Hash: "1"}}, nil)
	c := m.Get("p")
	hosts := c.Hosts()
	conn, err := c.Get(context.Background(), hosts[0])
	if err != nil {
		t.Fatal(err)
	}
	c.Release(conn, true) // idle on host 0, holding the only connection
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	other, err := c.Get(ctx, hosts[1])
	if err != nil {
		t.Fatalf("a request for host 1 must get the idle connection's capacity: %v", err)
	}
	if other.Host != hosts[1] || c.Connections() != 1 {
		t.Errorf("host %v, %d connections", other.Host.Addr, c.Connections())
	}
	c.Release(other, true) // now idle on host 1
	c.Report(hosts[1], ServerError, 503)
	if !hosts[1].Ejected() {
		t.Fatal("host 1 should be ejected")
	}
	if c.Connections() != 0 {
		t.Errorf("an ejected host keeps %d idle connections", c.Connections())
	}
}

// TestWaiterForEjectedHostPicksAgain: a request queued for a connection to
// a host that is ejected meanwhile gets ErrHostEjected, not a connection,
// and the capacity goes to the next request; plain Get still connects.
func TestWaiterForEjectedHostPicksAgain(t *testing.T) {
	m := newManager(t)
	a, b := tcpServer(t), tcpServer(t)
	m.SetEndpoints("p", []EndpointSpec{a, b})
	m.Apply(map[string]Versioned{"p": {Config: cfg("p", func(c *ClusterConfig) {
		c.Limits.MaxConnections, c.Limits.MaxPendingRequests = 1, 2
		c.Outlier = &OutlierConfig{Consecutive5xx: 1, Enforcing5xx: 100, Interval: time.Hour, BaseEjectionTime: time.Hour, MaxEjectionPercent: 50}
	}), Hash: "1"}}, nil)
	c := m.Get("p")
	hosts := c.Hosts()
	busy, err := c.Get(context.Background(), hosts[1]) // the only connection, in use
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waited := make(chan error, 1)
	go func() {
		conn, err := c.GetUnlessEjected(ctx, hosts[1])
		if conn != nil {
			c.Release(conn, true)
		}
		waited <- err
	}()
	// Poll until the request is queued.
	for c.Stats.RqPendingActive.Value() == 0 {
		if ctx.Err() != nil {
			t.Fatal("the request never queued")
		}
		time.Sleep(time.Millisecond)
	}
	c.Report(hosts[1], ServerError, 503)
	c.Release(busy, true)
	if err := <-waited; !errors.Is(err, ErrHostEjected) {
		t.Fatalf("got %v, want ErrHostEjected", err)
	}
	conn, err := c.Get(ctx, hosts[0])
	if err != nil {
		t.Fatalf("the capacity must be free for another host: %v", err)
	}
	c.Release(conn, true)
}

// TestRetryPickAvoidsPreviousHosts: a retry's host choice excludes the
// hosts already tried whenever another is available, whatever the load
// balancer: Envoy's five re-draws alone send 1 in 32 retries between two
// hosts back to the one that failed.
func TestRetryPickAvoidsPreviousHosts(t *testing.T) {
	m := newManager(t)
	for _, lb := range []LBPolicy{RoundRobin, LeastRequest, Random, RingHash, Maglev} {
		name := fmt.Sprintf("lb-%d", lb)
		m.Apply(map[string]Versioned{name: {Config: cfg(name, func(c *ClusterConfig) {
			c.LB = lb
			c.RingSize = map[LBPolicy]uint64{RingHash: 1024, Maglev: 1031}[lb]
		}), Hash: "1"}}, nil)
		c := m.Get(name)
		c.setEndpoints(eps(2))
		for i := range 5000 {
			first := c.Pick(PickOptions{Hash: uint64(i), HasHash: true})
			retry := c.Pick(PickOptions{Hash: uint64(i), HasHash: true, Attempts: 5,
				Exclude: func(h *Host) bool { return h == first }})
			if retry == first {
				t.Fatalf("%s: retry %d went back to the host just tried (%s) with another available", name, i, first.Addr)
			}
		}
		// Every host excluded: a host is still chosen.
		if h := c.Pick(PickOptions{Attempts: 5, Exclude: func(*Host) bool { return true }}); h == nil {
			t.Errorf("%s: no host when every host was tried", name)
		}
	}
}

// TestApplyEqualsItsModel: over random sequences of cluster sets, Apply
// leaves exactly the clusters asked for plus those kept (keep consulted
// only when a running cluster is missing from the set), keeps a
// cluster's identity while its hash is the same, and replaces it when
// the hash changes — the shortcut for an unchanged set included.
func TestApplyEqualsItsModel(t *testing.T) {
	m := newManager(t)
	rng := rand.New(rand.NewPCG(5, 8))
	prev := map[string]*Cluster{}
	prevHash := map[string]string{}
	for step := range 300 {
		cfgs := map[string]Versioned{}
		for i := range 8 {
			name := fmt.Sprintf("c%d", i)
			switch {
			case rng.IntN(4) == 0:
				// left out
			case prevHash[name] != "" && rng.IntN(3) > 0:
				cfgs[name] = Versioned{Config: cfg(name, nil), Hash: prevHash[name]}
			default:
				cfgs[name] = Versioned{Config: cfg(name, nil), Hash: strconv.Itoa(rng.IntN(3))}
			}
		}
		if rng.IntN(5) == 0 { // the same set again
			cfgs = map[string]Versioned{}
			for name := range prev {
				cfgs[name] = Versioned{Config: cfg(name, nil), Hash: prevHash[name]}
			}
		}
		keepSet := map[string]bool{}
		for i := range 8 {
			if rng.IntN(3) == 0 {
				keepSet[fmt.Sprintf("c%d", i)] = true
			}
		}
		missing := false
		for name := range prev {
			if _, ok := cfgs[name]; !ok {
				missing = true
			}
		}
		called := false
		m.Apply(cfgs, func() map[string]bool { called = true; return keepSet })
		if called && !missing {
			t.Fatalf("step %d: keep consulted with every running cluster in the set", step)
		}
		want := map[string]bool{}
		for name := range cfgs {
			want[name] = true
		}
		for name := range prev {
			if _, ok := cfgs[name]; !ok && keepSet[name] {
				want[name] = true
			}
		}
		got := map[string]*Cluster{}
		for _, name := range m.Names() {
			got[name] = m.Get(name)
		}
		if len(got) != len(want) {
			t.Fatalf("step %d: clusters %v, want %v", step, m.Names(), want)
		}
		nextHash := map[string]string{}
		for name := range want {
			c := got[name]
			if c == nil {
				t.Fatalf("step %d: %s missing", step, name)
			}
			v, inSet := cfgs[name]
			switch {
			case !inSet: // kept as it was
				if c != prev[name] {
					t.Fatalf("step %d: kept %s was replaced", step, name)
				}
				nextHash[name] = prevHash[name]
			case prev[name] != nil && prevHash[name] == v.Hash:
				if c != prev[name] {
					t.Fatalf("step %d: unchanged %s was rebuilt", step, name)
				}
				nextHash[name] = v.Hash
			default:
				if c == prev[name] {
					t.Fatalf("step %d: %s changed (hash %s → %s) but was not rebuilt", step, name, prevHash[name], v.Hash)
				}
				nextHash[name] = v.Hash
			}
		}
		prev, prevHash = got, nextHash
	}
}

// TestSetEndpointsOf: one batch reaches exactly the clusters whose EDS
// service name it updates (two clusters may share one), and leaves the
// others with what they had; a cluster made later finds its batch's
// endpoints too.
func TestSetEndpointsOf(t *testing.T) {
	m := newManager(t)
	m.SetEndpoints("a", eps(1))
	m.SetEndpoints("c", eps(3))
	m.Apply(map[string]Versioned{
		"a":       {Config: cfg("a", nil), Hash: "1"},
		"b":       {Config: cfg("b", nil), Hash: "1"},
		"b-alias": {Config: cfg("b-alias", func(c *ClusterConfig) { c.EDSServiceName = "b" }), Hash: "1"},
		"c":       {Config: cfg("c", nil), Hash: "1"},
	}, nil)
	m.SetEndpointsOf(map[string][]EndpointSpec{"b": eps(2), "c": eps(4), "later": eps(5)})
	m.Apply(map[string]Versioned{
		"a":       {Config: cfg("a", nil), Hash: "1"},
		"b":       {Config: cfg("b", nil), Hash: "1"},
		"b-alias": {Config: cfg("b-alias", func(c *ClusterConfig) { c.EDSServiceName = "b" }), Hash: "1"},
		"c":       {Config: cfg("c", nil), Hash: "1"},
		"later":   {Config: cfg("later", nil), Hash: "1"},
	}, nil)
	for name, want := range map[string]int{"a": 1, "b": 2, "b-alias": 2, "c": 4, "later": 5} {
		if got := len(m.Get(name).Hosts()); got != want {
			t.Errorf("cluster %s has %d hosts, want %d", name, got, want)
		}
	}
	m.SetEndpointsOf(nil) // nothing to do
	if got := len(m.Get("a").Hosts()); got != 1 {
		t.Errorf("an empty batch changed cluster a: %d hosts", got)
	}
}

// BenchmarkSetEndpointsOf is one EDS response for every cluster: it must
// grow with the clusters, not with their square.
func BenchmarkSetEndpointsOf(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			m := NewManager(ctx, logr.Discard(), stats.NewStore(), nil)
			defer m.Close()
			cfgs := map[string]Versioned{}
			updates := map[string][]EndpointSpec{}
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("c%d", i)
				cfgs[name] = Versioned{Config: cfg(name, nil), Hash: "1"}
				updates[name] = eps(2)
			}
			m.Apply(cfgs, nil)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.SetEndpointsOf(updates)
			}
		})
	}
}

// BenchmarkApplyClusters measures what a cluster costs the proxy to add,
// in time and in memory kept (B/op of a fresh Manager and stats store per
// iteration: everything 1,000 clusters allocate, most of it kept).
func BenchmarkApplyClusters(b *testing.B) {
	const n = 1000
	cfgs := map[string]Versioned{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("outbound|80||svc-%d.ns.svc.cluster.local", i)
		cfgs[name] = Versioned{Config: cfg(name, nil), Hash: "1"}
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		m := NewManager(ctx, logr.Discard(), stats.NewStore(), nil)
		m.Apply(cfgs, nil)
		m.Close()
		cancel()
	}
}
