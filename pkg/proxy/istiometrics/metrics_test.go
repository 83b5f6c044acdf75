package istiometrics

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

func TestSourceWorkload(t *testing.T) {
	for _, c := range []struct {
		name    string
		labels  map[string]string
		ns, svc string
		want    Workload
	}{
		{"istio's ingress gateway deployment", map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}, "istio-system", "istio-ingressgateway",
			Workload{Name: "istio-ingressgateway", Namespace: "istio-system", App: "istio-ingressgateway", Version: "unknown",
				CanonicalService: "istio-ingressgateway", CanonicalRevision: "latest", Cluster: "Kubernetes", Principal: "unknown"}},
		{"workload-name label and canonical labels win", map[string]string{"service.istio.io/workload-name": "edge-v2", "app": "edge",
			"service.istio.io/canonical-name": "edge-gw", "service.istio.io/canonical-revision": "r7", "version": "v2",
			"topology.istio.io/cluster": "east"}, "gw", "ignored",
			Workload{Name: "edge-v2", Namespace: "gw", App: "edge", Version: "v2", CanonicalService: "edge-gw", CanonicalRevision: "r7",
				Cluster: "east", Principal: "unknown"}},
		{"istio-proxy service cluster is not a name", map[string]string{"app.kubernetes.io/name": "gw", "app.kubernetes.io/version": "1.2"}, "", "istio-proxy",
			Workload{Name: "unknown", Namespace: "unknown", App: "gw", Version: "1.2", CanonicalService: "gw", CanonicalRevision: "1.2",
				Cluster: "Kubernetes", Principal: "unknown"}},
		{"nothing known", nil, "", "",
			Workload{Name: "unknown", Namespace: "unknown", App: "unknown", Version: "unknown", CanonicalService: "unknown",
				CanonicalRevision: "latest", Cluster: "Kubernetes", Principal: "unknown"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := SourceWorkload(c.labels, c.ns, c.svc); got != c.want {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestDestinationOf(t *testing.T) {
	reviews := &upstream.ClusterConfig{Name: "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
		Service: &upstream.ServiceMeta{Host: "reviews.bookinfo.svc.cluster.local", Name: "reviews", Namespace: "bookinfo"}}
	for _, c := range []struct {
		name    string
		cluster *upstream.ClusterConfig
		ep      *upstream.EndpointMeta
		want    Destination
	}{
		{"no cluster: unknown, no Host header fallback at a gateway", nil, nil, Destination{
			Workload: Workload{Name: "unknown", Namespace: "unknown", App: "unknown", Version: "unknown", CanonicalService: "unknown",
				CanonicalRevision: "latest", Cluster: "unknown", Principal: "unknown"},
			Service: "unknown", ServiceName: "unknown", ServiceNamespace: "unknown"}},
		{"service from metadata, endpoint with workload metadata", reviews, &upstream.EndpointMeta{Workload: "reviews-v1",
			Namespace: "bookinfo", CanonicalService: "reviews", CanonicalRevision: "v1", App: "reviews", Version: "v1"}, Destination{
			Workload: Workload{Name: "reviews-v1", Namespace: "bookinfo", App: "reviews", Version: "v1", CanonicalService: "reviews",
				CanonicalRevision: "v1", Cluster: "local", Principal: "unknown"},
			Service: "reviews.bookinfo.svc.cluster.local", ServiceName: "reviews", ServiceNamespace: "bookinfo"}},
		{"app and version fall back to the canonical service and revision", reviews, &upstream.EndpointMeta{CanonicalService: "reviews",
			CanonicalRevision: "v3", Cluster: "west"}, Destination{
			Workload: Workload{Name: "unknown", Namespace: "unknown", App: "reviews", Version: "v3", CanonicalService: "reviews",
				CanonicalRevision: "v3", Cluster: "west", Principal: "unknown"},
			Service: "reviews.bookinfo.svc.cluster.local", ServiceName: "reviews", ServiceNamespace: "bookinfo"}},
		{"service from the cluster name when metadata is missing", &upstream.ClusterConfig{Name: "outbound|80||web.shop.svc.cluster.local"}, nil, Destination{
			Workload: Workload{Name: "unknown", Namespace: "unknown", App: "unknown", Version: "unknown", CanonicalService: "unknown",
				CanonicalRevision: "latest", Cluster: "unknown", Principal: "unknown"},
			Service: "web.shop.svc.cluster.local", ServiceName: "web", ServiceNamespace: "shop"}},
		{"a ServiceEntry host is its own name", &upstream.ClusterConfig{Name: "outbound|443||api.example.com",
			Service: &upstream.ServiceMeta{Host: "api.example.com"}}, nil, Destination{
			Workload: Workload{Name: "unknown", Namespace: "unknown", App: "unknown", Version: "unknown", CanonicalService: "unknown",
				CanonicalRevision: "latest", Cluster: "unknown", Principal: "unknown"},
			Service: "api.example.com", ServiceName: "api.example.com", ServiceNamespace: "unknown"}},
		{"a cluster not named by Istio", &upstream.ClusterConfig{Name: "custom"}, nil, Destination{
			Workload: Workload{Name: "unknown", Namespace: "unknown", App: "unknown", Version: "unknown", CanonicalService: "unknown",
				CanonicalRevision: "latest", Cluster: "unknown", Principal: "unknown"},
			Service: "unknown", ServiceName: "unknown", ServiceNamespace: "unknown"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := DestinationOf(c.cluster, c.ep, "local"); got != c.want {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestParseClusterName(t *testing.T) {
	for _, c := range []struct {
		in                   string
		dir, port, sub, host string
		ok                   bool
	}{
		{"outbound|9080|v1|reviews.default.svc.cluster.local", "outbound", "9080", "v1", "reviews.default.svc.cluster.local", true},
		{"outbound|80||a.b", "outbound", "80", "", "a.b", true},
		{"outbound|80|x|", "", "", "", "", false},
		{"BlackHoleCluster", "", "", "", "", false},
		{"outbound|80|a|b|c", "outbound", "80", "a", "b|c", true},
	} {
		d, p, s, h, ok := ParseClusterName(c.in)
		if d != c.dir || p != c.port || s != c.sub || h != c.host || ok != c.ok {
			t.Errorf("%q: %q %q %q %q %v", c.in, d, p, s, h, ok)
		}
	}
}

// TestRenderedIsParseable checks the exposition, including hostile label
// values (quotes, backslashes, newlines from pod labels), with
// Prometheus's own parser.
func TestRenderedIsParseable(t *testing.T) {
	m := New(Workload{Name: "gw\"x", Namespace: "ns\\y", App: "a\nb"}, "0.1.0")
	c := &upstream.ClusterConfig{Name: "outbound|80||svc.ns.svc.cluster.local"}
	h := hostWith(t, c, &upstream.EndpointMeta{Workload: "w\"1\n", Namespace: `n\s`})
	for i := 0; i < 3; i++ {
		m.RecordHTTP(&Request{Cluster: h.cluster, Host: h.host, Code: 200, GRPCStatus: -1, Duration: 3 * time.Millisecond, RequestBytes: 100, ResponseBytes: 2000})
	}
	m.RecordHTTP(&Request{Code: 404, GRPCStatus: -1, Flags: accesslog.NoRouteFound, Duration: 700 * time.Microsecond})
	m.RecordHTTP(&Request{Cluster: h.cluster, Host: h.host, Protocol: GRPC, Code: 200, GRPCStatus: 14, Duration: time.Hour * 2})
	s := m.TCP(h.cluster, h.host, 0)
	s.Opened.Inc()
	s.Sent.Add(10)
	var buf bytes.Buffer
	m.WritePrometheus(&buf)
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	var got []string
	for _, mm := range fams["istio_requests_total"].GetMetric() {
		l := map[string]string{}
		for _, lp := range mm.Label {
			l[lp.GetName()] = lp.GetValue()
		}
		got = append(got, fmt.Sprintf("%s %s %s %s %s %v", l["source_workload"], l["destination_workload"], l["response_code"], l["grpc_response_status"], l["response_flags"], mm.GetCounter().GetValue()))
	}
	sort.Strings(got)
	want := []string{
		"gw\"x unknown 404  NR 1",
		"gw\"x w\"1\n 200  - 3",
		"gw\"x w\"1\n 200 14 - 1",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("series:\n%q\nwant\n%q", got, want)
	}
	for _, mm := range fams["istio_request_duration_milliseconds"].GetMetric() {
		hh := mm.GetHistogram()
		var last uint64
		for _, b := range hh.Bucket {
			if b.GetCumulativeCount() < last {
				t.Errorf("buckets not cumulative: %v", hh)
			}
			last = b.GetCumulativeCount()
		}
		if last != hh.GetSampleCount() {
			t.Errorf("+Inf bucket %d != count %d", last, hh.GetSampleCount())
		}
	}
	// The three 3 ms requests: sum 9 ms, all in le=5 and none in le=1.
	for _, mm := range fams["istio_request_duration_milliseconds"].GetMetric() {
		if mm.GetHistogram().GetSampleCount() == 3 {
			hh := mm.GetHistogram()
			if hh.GetSampleSum() != 9 || hh.Bucket[1].GetCumulativeCount() != 0 || hh.Bucket[2].GetCumulativeCount() != 3 {
				t.Errorf("3 ms requests: %v", hh)
			}
		}
	}
	if v := fams["istio_tcp_sent_bytes_total"].GetMetric()[0].GetCounter().GetValue(); v != 10 {
		t.Errorf("tcp sent %v", v)
	}
}

type clusterHost struct {
	cluster *upstream.Cluster
	host    *upstream.Host
}

func newManager(t testing.TB) *upstream.Manager {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m := upstream.NewManager(ctx, logr.Discard(), stats.NewStore(), nil)
	t.Cleanup(m.Close)
	return m
}

var hashes atomic.Int64

// apply (re)configures a cluster (a CDS update) and gives it one endpoint
// carrying meta (an EDS update), as the proxy does.
func apply(m *upstream.Manager, cfg *upstream.ClusterConfig, meta *upstream.EndpointMeta) clusterHost {
	cfg.Discovery, cfg.EDSServiceName, cfg.PanicThreshold = upstream.EDS, cfg.Name, 50
	m.SetEndpoints(cfg.Name, []upstream.EndpointSpec{{Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true, Meta: meta}})
	cfgs := map[string]upstream.Versioned{}
	for _, n := range m.Names() {
		cfgs[n] = upstream.Versioned{Config: m.Get(n).Config(), Hash: "same"}
	}
	cfgs[cfg.Name] = upstream.Versioned{Config: cfg, Hash: fmt.Sprint(hashes.Add(1))}
	m.Apply(cfgs, nil)
	c := m.Get(cfg.Name)
	return clusterHost{c, c.Hosts()[0]}
}

// hostWith builds a running cluster with one endpoint carrying meta.
func hostWith(t testing.TB, cfg *upstream.ClusterConfig, meta *upstream.EndpointMeta) clusterHost {
	return apply(newManager(t), cfg, meta)
}

// TestDestinationCacheMatchesFresh: after every step of a random sequence
// of cluster and endpoint metadata changes, what a request is counted
// under equals the labels computed from scratch.
func TestDestinationCacheMatchesFresh(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := New(SourceWorkload(nil, "gw", "gw"), "test")
	services := []*upstream.ServiceMeta{nil, {Host: "a.ns.svc.cluster.local", Name: "a", Namespace: "ns"}, {Host: "b.example.com"}}
	metas := []*upstream.EndpointMeta{nil, {Workload: "w1", App: "x"}, {Workload: "w2", Namespace: "ns", CanonicalRevision: "v2"}}
	mgr := newManager(t)
	var hosts []clusterHost
	var current []*upstream.EndpointMeta
	for i := 0; i < 4; i++ {
		hosts = append(hosts, apply(mgr, &upstream.ClusterConfig{Name: fmt.Sprintf("outbound|80||c%d.ns.svc.cluster.local", i)}, nil))
		current = append(current, nil)
	}
	for step := 0; step < 2000; step++ {
		i := rng.IntN(len(hosts))
		switch rng.IntN(3) {
		case 0: // CDS update: a new config object for the cluster
			svc := services[rng.IntN(len(services))]
			hosts[i] = apply(mgr, &upstream.ClusterConfig{Name: hosts[i].cluster.Config().Name, Service: svc}, current[i])
		case 1: // EDS update: the endpoint's workload changes (or not), a fresh copy each time
			var meta *upstream.EndpointMeta
			if mm := metas[rng.IntN(len(metas))]; mm != nil {
				cp := *mm
				meta = &cp
			}
			current[i] = meta
			mgr.SetEndpoints(hosts[i].cluster.Config().Name, []upstream.EndpointSpec{{Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true, Meta: meta}})
			hosts[i].host = hosts[i].cluster.Hosts()[0]
		}
		var host *upstream.Host
		if rng.IntN(4) > 0 {
			host = hosts[i].host
		}
		d := m.destination(hosts[i].cluster, host)
		var ep *upstream.EndpointMeta
		if host != nil {
			ep = host.Meta()
		}
		want := DestinationOf(hosts[i].cluster.Config(), ep, "Kubernetes")
		if d.d != want {
			t.Fatalf("step %d: cached %+v, fresh %+v", step, d.d, want)
		}
		var l labelWriter
		destinationLabels(&l, want)
		if d.labels != l.b.String() {
			t.Fatalf("step %d: labels %q, fresh %q", step, d.labels, l.b.String())
		}
	}
	if n := len(*m.dests.Load()); n > maxDestKeys {
		t.Errorf("destination cache grew to %d", n)
	}
}

// BenchmarkRecordHTTP is the per-request cost of the metrics.
func BenchmarkRecordHTTP(b *testing.B) {
	m := New(Workload{Name: "gw"}, "test")
	h := hostWith(b, &upstream.ClusterConfig{Name: "outbound|80||a.ns.svc.cluster.local"}, &upstream.EndpointMeta{Workload: "a-v1"})
	r := &Request{Cluster: h.cluster, Host: h.host, Code: 200, GRPCStatus: -1, Duration: 2 * time.Millisecond, RequestBytes: 300, ResponseBytes: 900}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.RecordHTTP(r)
		}
	})
}

// TestOverrides: Telemetry metrics overrides drop families and remove
// labels; series differing only in a removed label are merged (counters
// summed, histograms bucket by bucket), and the output stays parseable.
func TestOverrides(t *testing.T) {
	m := New(Workload{Name: "gw", Namespace: "istio-system"}, "test")
	for _, code := range []int{200, 200, 404, 503} {
		m.RecordHTTP(&Request{Code: code, GRPCStatus: -1, Duration: time.Duration(code) * time.Microsecond, RequestBytes: 10, ResponseBytes: 100})
	}
	parse := func() map[string]*dto {
		var b bytes.Buffer
		m.WritePrometheus(&b)
		p := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := p.TextToMetricFamilies(&b)
		if err != nil {
			t.Fatalf("unparseable: %v\n%s", err, b.String())
		}
		out := map[string]*dto{}
		for n, f := range fams {
			out[n] = &dto{n: len(f.Metric)}
			for _, mt := range f.Metric {
				for _, lp := range mt.Label {
					if lp.GetName() == "response_code" {
						out[n].codes = true
					}
				}
				if c := mt.GetCounter(); c != nil {
					out[n].total += c.GetValue()
				}
				if h := mt.GetHistogram(); h != nil {
					out[n].total += float64(h.GetSampleCount())
				}
			}
		}
		return out
	}
	before := parse()
	if f := before["istio_requests_total"]; f == nil || f.n != 3 || f.total != 4 || !f.codes {
		t.Fatalf("before: %+v", f)
	}
	m.SetOverrides(&Overrides{Drop: map[string]bool{"request_bytes": true},
		Remove: map[string][]string{"requests_total": {"response_code"}, "request_duration_milliseconds": {"response_code", "response_flags"}}})
	after := parse()
	if f := after["istio_requests_total"]; f == nil || f.n != 1 || f.total != 4 || f.codes {
		t.Errorf("requests_total without response_code: %+v, want one series of 4", f)
	}
	if f := after["istio_request_duration_milliseconds"]; f == nil || f.n != 1 || f.total != 4 || f.codes {
		t.Errorf("duration without response_code: %+v, want one histogram of 4 samples", f)
	}
	if _, ok := after["istio_request_bytes"]; ok {
		t.Error("request_bytes dropped but still written")
	}
	if f := after["istio_response_bytes"]; f == nil || f.n != 3 || !f.codes {
		t.Errorf("response_bytes untouched: %+v", f)
	}
	m.SetOverrides(nil)
	if f := parse()["istio_requests_total"]; f == nil || f.n != 3 {
		t.Errorf("overrides cleared: %+v", f)
	}
}

type dto struct {
	n     int
	total float64
	codes bool
}

func TestWithoutLabels(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`a="1",b="2",c="3"`, `a="1",c="3"`},
		{`b="x\",b=\"y",a="1"`, `a="1"`},
		{`a="q\\",b="2"`, `a="q\\"`},
		{`b="2"`, ``},
	} {
		if got := withoutLabels(c.in, []string{"b"}); got != c.want {
			t.Errorf("withoutLabels(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}
