package topology

import (
	"slices"
	"strconv"
)

// The proxy's Prometheus names (Envoy's). A response class is counted
// either as its own series (the Go proxy: envoy_cluster_upstream_rq_5xx)
// or as Envoy's tagged one (envoy_cluster_upstream_rq_xx with
// envoy_response_code_class="5"); both are read.
const (
	hcmLabel     = "envoy_http_conn_manager_prefix"
	tcpLabel     = "envoy_tcp_prefix"
	clusterLabel = "envoy_cluster_name"
	classLabel   = "envoy_response_code_class"
)

// tally adds up the numbers of the series a node is made of.
type tally struct {
	unit            string
	rps, err4, err5 float64
	total           float64
	buckets         []bucket
	seen            bool
}

func (t *tally) metrics() *Metrics {
	if !t.seen {
		return nil
	}
	m := &Metrics{Unit: t.unit, RPS: t.rps, Total: t.total}
	if t.rps > 0 {
		m.ErrorRate = clamp01((t.err4 + t.err5) / t.rps)
		m.ErrorRate5xx = clamp01(t.err5 / t.rps)
	}
	if p, ok := quantile(0.99, t.buckets); ok {
		m.P99Ms = &p
	}
	return m
}

func clamp01(v float64) float64 {
	if v < 0 {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

// classes reads a response class from both spellings.
func classRate(w *Window, class, family, label, value string, code int) float64 {
	c := strconv.Itoa(code)
	return w.rate(class, seriesKey(family+"_"+c+"xx", label, value)) +
		w.rate(class, seriesKey(family+"_xx", label, value, classLabel, c))
}

func (t *tally) addHTTP(w *Window, class, family, label, value string) {
	key := seriesKey(family+"_total", label, value)
	t.unit = "rq"
	t.seen = true
	t.rps += w.rate(class, key)
	t.total += w.total(class, key)
	t.err4 += classRate(w, class, family, label, value, 4)
	t.err5 += classRate(w, class, family, label, value, 5)
	t.buckets = addBuckets(t.buckets, w.hist(class, seriesKey(family+"_time", label, value)))
}

func (t *tally) addTCP(w *Window, class, total, failed, label, value string) {
	if t.unit == "" {
		t.unit = "cx"
	}
	t.seen = true
	t.rps += w.rate(class, seriesKey(total, label, value))
	t.total += w.total(class, seriesKey(total, label, value))
	if failed != "" {
		t.err5 += w.rate(class, seriesKey(failed, label, value))
	}
}

// metrics fills in every node's numbers from the window.
func (b *builder) metrics() {
	w := b.in.Stats
	if w == nil || b.classOf == nil {
		return
	}
	serverTally := map[string]*tally{}
	clusterTally := map[string]*tally{}
	for _, n := range b.g.Nodes {
		class := b.classOf[n.ID]
		switch n.Kind {
		case KindServer:
			t := &tally{}
			for _, p := range b.hcmPrefixes[n.ID] {
				t.addHTTP(w, class, "envoy_http_downstream_rq", hcmLabel, p)
			}
			for _, p := range b.tcpPrefixes[n.ID] {
				t.addTCP(w, class, "envoy_tcp_downstream_cx_total", "", tcpLabel, p)
			}
			serverTally[n.ID] = t
			n.Metrics = t.metrics()
		case KindCluster:
			name, ok := b.clusterOf[n.ID]
			if !ok {
				continue
			}
			t := &tally{}
			t.addHTTP(w, class, "envoy_cluster_upstream_rq", clusterLabel, name)
			if t.total == 0 {
				// A TCP cluster counts connections, not requests.
				cx := &tally{}
				cx.addTCP(w, class, "envoy_cluster_upstream_cx_total", "envoy_cluster_upstream_cx_connect_fail", clusterLabel, name)
				if cx.total > 0 {
					t = cx
				}
			}
			clusterTally[n.ID] = t
			n.Metrics = t.metrics()
		case KindEndpoint:
			ref := b.endpointOf[n.ID]
			h, ok := w.host(class, ref[0], ref[1])
			if !ok {
				continue
			}
			rps := h.successRate + h.errorRate
			m := &Metrics{Unit: "rq", RPS: rps}
			if rps > 0 {
				m.ErrorRate = clamp01(h.errorRate / rps)
				m.ErrorRate5xx = m.ErrorRate // the proxy counts 5xx and connection failures as host errors
			}
			n.Metrics = m
			if h.health != "" && h.health != "healthy" {
				n.Problems = append(n.Problems, Problem{Level: "Warning", Message: "health " + h.health})
				n.Health = health(n.Problems)
			}
		}
	}
	// Routes and route sets: their clusters' numbers. Gateways: their
	// servers'. Shared says another route (or Gateway) counts them too.
	out := map[string][]string{}     // node → nodes it has edges to
	parents := map[string][]string{} // node → nodes with edges to it
	for _, e := range b.g.Edges {
		out[e.Source] = append(out[e.Source], e.Target)
		parents[e.Target] = append(parents[e.Target], e.Source)
	}
	routeIn := func(route, set string) bool { return slices.Contains(parents[route], set) }
	for _, n := range b.g.Nodes {
		switch n.Kind {
		case KindRoute, KindRouteSet:
			cls, ok := b.routeClus[n.ID]
			if !ok || len(cls) == 0 {
				continue
			}
			t := &tally{}
			shared := false
			for _, c := range cls {
				ct := clusterTally[c]
				if ct == nil {
					continue
				}
				t.merge(ct)
				users := b.clusterUse[c]
				switch {
				case shared:
				case n.Kind == KindRoute:
					shared = len(users) > 1 || len(users) == 1 && !users[n.ID]
				default:
					for user := range users {
						if !routeIn(user, n.ID) {
							shared = true
							break
						}
					}
				}
			}
			if n.Metrics = t.metrics(); n.Metrics != nil {
				n.Metrics.Shared = shared
			}
		case KindGateway:
			t := &tally{}
			shared := false
			for _, srv := range out[n.ID] {
				if st := serverTally[srv]; st != nil {
					t.merge(st)
					if len(parents[srv]) > 1 {
						shared = true // a port several Gateways serve
					}
				}
			}
			if n.Metrics = t.metrics(); n.Metrics != nil {
				n.Metrics.Shared = shared
			}
		}
	}
}

// merge adds o's numbers. Requests and connections are not added up: a
// node with both (a Gateway with HTTP and TCP ports) shows requests.
func (t *tally) merge(o *tally) {
	if !o.seen || t.unit == "rq" && o.unit == "cx" {
		return
	}
	if t.unit == "cx" && o.unit == "rq" {
		*t = tally{}
	}
	t.unit = o.unit
	t.seen = true
	t.rps += o.rps
	t.err4 += o.err4
	t.err5 += o.err5
	t.total += o.total
	t.buckets = addBuckets(t.buckets, o.buckets)
}
