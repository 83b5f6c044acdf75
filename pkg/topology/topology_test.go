package topology

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
)

var ingress = map[string]string{"istio": "ingressgateway"}

const class = "istio=ingressgateway"

// state binds YAML as the controller would for the ingress class.
func state(t *testing.T, yamlText string) *controller.State {
	t.Helper()
	objs, errs := resource.Decode([]byte(yamlText), "test.yaml")
	for _, e := range errs {
		t.Fatalf("test YAML: %v", e)
	}
	res, err := resource.FromObjects(objs)
	if err != nil {
		t.Fatal(err)
	}
	result := gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}})
	return &controller.State{Resources: res, Result: result, Versions: map[string]string{class: "1"}, Errors: map[string]string{},
		Excluded: map[string]string{}, BuiltAt: time.Unix(1000, 0)}
}

// Two VirtualServices on one Gateway: shop's two rules share the web
// cluster (90/10 with canary); admin sends to web too and answers /ping
// itself; a ServiceEntry without endpoints; a TCP route.
const shopYAML = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ['*']
  - port: {number: 9443, name: tls, protocol: TLS}
    hosts: [a.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9443, name: tls-b, protocol: TLS}
    hosts: [b.example.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /api}}]
    route:
    - destination: {host: web.default.svc.cluster.local, port: {number: 80}}
      weight: 90
    - destination: {host: canary.default.svc.cluster.local, port: {number: 80}}
      weight: 10
  - route:
    - destination: {host: empty.default.svc.cluster.local, port: {number: 80}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: admin, namespace: default}
spec:
  hosts: [admin.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {exact: /ping}}]
    directResponse: {status: 204}
  - route:
    - destination: {host: web.default.svc.cluster.local, port: {number: 80}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: db.default.svc.cluster.local, port: {number: 5432}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [istio-system/gw]
  tls:
  - match: [{port: 9443, sniHosts: [a.example.com, b.example.com]}]
    route: [{destination: {host: db.default.svc.cluster.local, port: {number: 5432}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: lost, namespace: default}
spec:
  hosts: [lost.example.com]
  gateways: [istio-system/missing]
  http:
  - route:
    - destination: {host: web.default.svc.cluster.local}
` + serviceEntries

const serviceEntries = `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: canary, namespace: default}
spec:
  hosts: [canary.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: empty, namespace: default}
spec:
  hosts: [empty.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.9}]
`

const (
	webCluster    = "outbound|80||web.default.svc.cluster.local"
	canaryCluster = "outbound|80||canary.default.svc.cluster.local"
	dbCluster     = "outbound|5432||db.default.svc.cluster.local"
)

// readings returns a proxy's two scrapes, 10 s apart: before (all zero)
// and after the traffic described by after (Prometheus text).
func readings(t *testing.T, before, after string, clustersBefore, clustersAfter string) *proxyReadings {
	t.Helper()
	t0 := time.Unix(2000, 0)
	a, err := parsePrometheus(strings.NewReader(before), t0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := parsePrometheus(strings.NewReader(after), t0.Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := parseClusters(strings.NewReader(clustersBefore), a.hosts); err != nil {
		t.Fatal(err)
	}
	if err := parseClusters(strings.NewReader(clustersAfter), b.hosts); err != nil {
		t.Fatal(err)
	}
	return &proxyReadings{target: Target{Class: class, Proxy: "p1", StatsURL: "http://p1/stats/prometheus"}, readings: []*scrape{a, b}, last: b.at}
}

// promCounters writes counters in the Go proxy's spelling.
func promCounters(vals map[string]float64) string {
	byName := map[string][]string{}
	for series, v := range vals {
		name := series[:strings.IndexByte(series, '{')]
		byName[name] = append(byName[name], fmt.Sprintf("%s %v\n", series, v))
	}
	var b strings.Builder
	for _, name := range sortedKeys(byName) {
		fmt.Fprintf(&b, "# TYPE %s counter\n%s", name, strings.Join(byName[name], ""))
	}
	return b.String()
}

func hist(name, labels string, counts map[float64]float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# TYPE %s histogram\n", name)
	cum := 0.0
	for _, le := range []float64{0.5, 1, 5, 10, 25, 50, 100} {
		cum += counts[le]
		fmt.Fprintf(&b, "%s_bucket{%s,le=\"%v\"} %v\n", name, labels, le, cum)
	}
	cum += counts[math.Inf(1)]
	fmt.Fprintf(&b, "%s_bucket{%s,le=\"+Inf\"} %v\n%s_sum{%s} 1\n%s_count{%s} %v\n", name, labels, cum, name, labels, name, labels, cum)
	return b.String()
}

func node(t *testing.T, g *Graph, id string) *Node {
	t.Helper()
	for _, n := range g.Nodes {
		if n.ID == id {
			return n
		}
	}
	var ids []string
	for _, n := range g.Nodes {
		ids = append(ids, n.ID)
	}
	t.Fatalf("no node %s in %s", id, strings.Join(ids, "\n"))
	return nil
}

func TestGraphShape(t *testing.T) {
	g := Build(BuildInput{State: state(t, shopYAML), ConfigDump: "/debug/config_dump", Source: "/debug/topology/source", Now: time.Unix(3000, 0)})
	edges := map[[2]string]uint32{}
	for _, e := range g.Edges {
		edges[[2]string{e.Source, e.Target}] = e.Weight
	}
	server80 := "server:" + class + ":0.0.0.0_80"
	server9000 := "server:" + class + ":0.0.0.0_9000"
	shopAPI := "route:" + class + ":VirtualService/default/shop:default.shop.0"
	adminPing := "route:" + class + ":VirtualService/default/admin:default.admin.0"
	tests := []struct {
		from, to string
		weight   uint32
	}{
		{"Gateway/istio-system/gw", server80, 0},
		{"Gateway/istio-system/gw", server9000, 0},
		{server80, "VirtualService/default/shop", 0},
		{server80, "VirtualService/default/admin", 0},
		{"VirtualService/default/shop", shopAPI, 0},
		{shopAPI, "cluster:" + class + ":" + webCluster, 90},
		{shopAPI, "cluster:" + class + ":" + canaryCluster, 10},
		{"cluster:" + class + ":" + webCluster, "endpoint:" + class + ":" + webCluster + ":10.0.0.1:80", 0},
		{"cluster:" + class + ":" + webCluster, "endpoint:" + class + ":" + webCluster + ":10.0.0.2:80", 0},
		{server9000, "VirtualService/default/db", 0},
		{"VirtualService/default/db", "cluster:" + class + ":" + dbCluster, 100},
	}
	for _, tc := range tests {
		w, ok := edges[[2]string{tc.from, tc.to}]
		if !ok {
			t.Errorf("no edge %s → %s", tc.from, tc.to)
		} else if w != tc.weight && tc.weight != 0 {
			t.Errorf("edge %s → %s weight %d, want %d", tc.from, tc.to, w, tc.weight)
		}
	}
	if n := node(t, g, "server:"+class+":0.0.0.0_9443"); !strings.Contains(n.Detail, "a.example.com b.example.com") {
		t.Errorf("a listener of two TLS servers says %q", n.Detail)
	}
	if n := node(t, g, adminPing); !strings.Contains(n.Detail, "204") {
		t.Errorf("the direct response route says %q", n.Detail)
	}
	for e := range edges {
		if e[0] == adminPing {
			t.Errorf("a direct response goes nowhere, yet %v", e)
		}
	}
	empty := node(t, g, "cluster:"+class+":outbound|80||empty.default.svc.cluster.local")
	if empty.Health != "warning" || !strings.Contains(empty.Problems[0].Message, "no endpoints") {
		t.Errorf("a cluster without endpoints: %+v", empty)
	}
	lost := node(t, g, "VirtualService/default/lost")
	if lost.Health != "error" || lost.Problems[0].Code != "IST0101" {
		t.Errorf("a VirtualService for a missing Gateway: %+v", lost)
	}
	// The Accepted=False condition repeats the IST0101 message: said once.
	if len(lost.Problems) != 1 {
		t.Errorf("problems said twice: %+v", lost.Problems)
	}
	if v := node(t, g, "endpoint:"+class+":"+webCluster+":10.0.0.1:80"); v.Detail != "version v1" {
		t.Errorf("endpoint detail %q", v.Detail)
	}
	// Links: the YAML of the VirtualService, the Envoy config of exactly
	// the route configuration holding the route.
	shop := node(t, g, "VirtualService/default/shop")
	if shop.Links.YAML != "/debug/topology/source?kind=VirtualService&name=shop&namespace=default" {
		t.Errorf("YAML link %q", shop.Links.YAML)
	}
	u, err := url.Parse(node(t, g, shopAPI).Links.Envoy)
	if err != nil || u.Query().Get("resource") != "dynamic_route_configs" || u.Query().Get("name_regex") != `^(http\.80)$` || u.Query().Get("class") != class {
		t.Errorf("route's Envoy link %q", node(t, g, shopAPI).Links.Envoy)
	}
	if g.Window != "" || g.Nodes[0].Metrics != nil {
		t.Error("numbers without stats")
	}
	// Deterministic: the same state builds the same JSON.
	a, _ := json.Marshal(g)
	b, _ := json.Marshal(Build(BuildInput{State: state(t, shopYAML), ConfigDump: "/debug/config_dump", Source: "/debug/topology/source", Now: time.Unix(3000, 0)}))
	if string(a) != string(b) {
		t.Error("two builds of one state differ")
	}
}

func TestGraphNumbers(t *testing.T) {
	st := state(t, shopYAML)
	web := `envoy_cluster_name="` + webCluster + `"`
	canary := `envoy_cluster_name="` + canaryCluster + `"`
	hcm := `envoy_http_conn_manager_prefix="outbound_0.0.0.0_80"`
	after := promCounters(map[string]float64{
		"envoy_http_downstream_rq_total{" + hcm + "}": 200,
		"envoy_http_downstream_rq_4xx{" + hcm + "}":   40,
		// Envoy's own spelling of a class counter is read too.
		"envoy_http_downstream_rq_xx{" + hcm + `,envoy_response_code_class="5"}`:         20,
		"envoy_cluster_upstream_rq_total{" + web + "}":                                   100,
		"envoy_cluster_upstream_rq_5xx{" + web + "}":                                     10,
		"envoy_cluster_upstream_rq_total{" + canary + "}":                                50,
		`envoy_tcp_downstream_cx_total{envoy_tcp_prefix="` + dbCluster + `"}`:            30,
		`envoy_cluster_upstream_cx_total{envoy_cluster_name="` + dbCluster + `"}`:        30,
		`envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name="` + dbCluster + `"}`: 3,
	}) + hist("envoy_cluster_upstream_rq_time", web, map[float64]float64{1: 50, 5: 49, 100: 1}) +
		hist("envoy_http_downstream_rq_time", hcm, map[float64]float64{0.5: 100, 10: 100})
	clusters := webCluster + "::10.0.0.1:80::rq_success::60\n" + webCluster + "::10.0.0.1:80::rq_error::10\n" +
		webCluster + "::10.0.0.2:80::rq_success::30\n" + webCluster + "::10.0.0.2:80::health_flags::/failed_outlier_check\n"
	w := newWindow(time.Minute, map[string]*proxyReadings{"p1": readings(t, "", after, "", clusters)})
	g := Build(BuildInput{State: st, Stats: w, Now: time.Unix(3000, 0)})
	if g.Window != "10s" {
		t.Errorf("window %q, want the readings' 10s", g.Window)
	}
	tests := []struct {
		id                     string
		unit                   string
		rps, errRate, err5Rate float64
		p99                    float64 // NaN: none
		shared                 bool
	}{
		{"server:" + class + ":0.0.0.0_80", "rq", 20, 0.3, 0.1, 9.9, false},
		{"cluster:" + class + ":" + webCluster, "rq", 10, 0.1, 0.1, 5, false},
		{"cluster:" + class + ":" + canaryCluster, "rq", 5, 0, 0, math.NaN(), false},
		// shop's API rule sends to web (shared with admin) and canary.
		{"route:" + class + ":VirtualService/default/shop:default.shop.0", "rq", 15, 1.0 / 15, 1.0 / 15, 5, true},
		{"route:" + class + ":VirtualService/default/admin:default.admin.1", "rq", 10, 0.1, 0.1, 5, true},
		{"server:" + class + ":0.0.0.0_9000", "cx", 3, 0, 0, math.NaN(), false},
		{"cluster:" + class + ":" + dbCluster, "cx", 3, 0.1, 0.1, math.NaN(), false},
		{"VirtualService/default/db", "cx", 3, 0.1, 0.1, math.NaN(), false},
		// The Gateway: requests of port 80; port 9000's connections are not added.
		{"Gateway/istio-system/gw", "rq", 20, 0.3, 0.1, 9.9, false},
		{"endpoint:" + class + ":" + webCluster + ":10.0.0.1:80", "rq", 7, 1.0 / 7, 1.0 / 7, math.NaN(), false},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			m := node(t, g, tc.id).Metrics
			if m == nil {
				t.Fatal("no metrics")
			}
			near := func(what string, got, want float64) {
				if math.Abs(got-want) > 1e-9 {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			if m.Unit != tc.unit {
				t.Errorf("unit %s, want %s", m.Unit, tc.unit)
			}
			near("rps", m.RPS, tc.rps)
			near("error rate", m.ErrorRate, tc.errRate)
			near("5xx rate", m.ErrorRate5xx, tc.err5Rate)
			switch {
			case math.IsNaN(tc.p99) && m.P99Ms != nil:
				t.Errorf("p99 %v, want none", *m.P99Ms)
			case !math.IsNaN(tc.p99) && m.P99Ms == nil:
				t.Errorf("no p99, want %v", tc.p99)
			case !math.IsNaN(tc.p99):
				near("p99", *m.P99Ms, tc.p99)
			}
			if m.Shared != tc.shared {
				t.Errorf("shared %v, want %v", m.Shared, tc.shared)
			}
		})
	}
	ejected := node(t, g, "endpoint:"+class+":"+webCluster+":10.0.0.2:80")
	if ejected.Health != "warning" || !strings.Contains(ejected.Problems[0].Message, "failed_outlier_check") {
		t.Errorf("an ejected endpoint: %+v", ejected)
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name string
		q    float64
		bs   []bucket
		want float64
		ok   bool
	}{
		{"empty", 0.99, nil, 0, false},
		{"no observations", 0.99, []bucket{{1, 0}, {inf, 0}}, 0, false},
		{"inside a bucket", 0.99, []bucket{{5, 10}, {10, 20}, {inf, 20}}, 9.9, true},
		{"first bucket from zero", 0.5, []bucket{{4, 10}, {inf, 10}}, 2, true},
		{"in +Inf: the highest finite bound", 0.99, []bucket{{5, 1}, {inf, 100}}, 5, true},
		{"only +Inf", 0.5, []bucket{{inf, 3}}, 0, false},
		{"median", 0.5, []bucket{{1, 50}, {2, 100}, {inf, 100}}, 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := quantile(tc.q, tc.bs)
			if ok != tc.ok || ok && math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("quantile(%v) = %v, %v; want %v, %v", tc.q, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// A proxy that restarted (or had its counters reset) between readings
// counted its new values since: never a negative rate.
func TestWindowCounterReset(t *testing.T) {
	key := `envoy_cluster_upstream_rq_total{envoy_cluster_name="c"}`
	h := `envoy_cluster_name="c"`
	pr := readings(t, promCounters(map[string]float64{key: 500})+hist("envoy_cluster_upstream_rq_time", h, map[float64]float64{1: 500}),
		promCounters(map[string]float64{key: 20})+hist("envoy_cluster_upstream_rq_time", h, map[float64]float64{50: 20}),
		"c::1.1.1.1:80::rq_success::900\n", "c::1.1.1.1:80::rq_success::7\n")
	w := newWindow(time.Minute, map[string]*proxyReadings{"p": pr})
	if r := w.rate(class, seriesKey("envoy_cluster_upstream_rq_total", "envoy_cluster_name", "c")); r != 2 {
		t.Errorf("rate after a reset %v, want 2/s", r)
	}
	if p, ok := quantile(0.99, w.hist(class, seriesKey("envoy_cluster_upstream_rq_time", "envoy_cluster_name", "c"))); !ok || p <= 25 {
		t.Errorf("p99 after a reset %v %v, want within (25, 50]", p, ok)
	}
	if h, _ := w.host(class, "c", "1.1.1.1:80"); h.successRate != 0.7 {
		t.Errorf("endpoint rate after a reset %v", h.successRate)
	}
}

// Rates of a class add up over its proxies; a proxy with one reading
// counts in totals but not in rates.
func TestWindowSumsProxies(t *testing.T) {
	key := `envoy_cluster_upstream_rq_total{envoy_cluster_name="c"}`
	a := readings(t, promCounters(map[string]float64{key: 0}), promCounters(map[string]float64{key: 100}), "", "")
	b := readings(t, promCounters(map[string]float64{key: 0}), promCounters(map[string]float64{key: 50}), "", "")
	c := readings(t, "", promCounters(map[string]float64{key: 1000}), "", "")
	c.readings = c.readings[1:]
	w := newWindow(time.Minute, map[string]*proxyReadings{"a": a, "b": b, "c": c})
	k := seriesKey("envoy_cluster_upstream_rq_total", "envoy_cluster_name", "c")
	if r := w.rate(class, k); r != 15 {
		t.Errorf("rate %v, want 15", r)
	}
	if tot := w.total(class, k); tot != 1150 {
		t.Errorf("total %v, want 1150", tot)
	}
	if len(w.Scrapes) != 3 {
		t.Errorf("scrapes %+v", w.Scrapes)
	}
}

func TestParseClusters(t *testing.T) {
	in := strings.Join([]string{
		"outbound|80||a::observability_name::outbound|80||a",
		"outbound|80||a::default_priority::max_connections::4294967295",
		"outbound|80||a::[2001:db8::1]:80::rq_success::5",
		"outbound|80||a::[2001:db8::1]:80::rq_error::2",
		"outbound|80||a::[2001:db8::1]:80::health_flags::healthy",
		"outbound|80||a::10.0.0.1:80::rq_error::notanumber",
		"garbage without separators",
		"::::::",
		"",
	}, "\n")
	got := map[string]hostCounts{}
	if err := parseClusters(strings.NewReader(in), got); err != nil {
		t.Fatal(err)
	}
	want := hostCounts{success: 5, errors: 2, health: "healthy"}
	if got["outbound|80||a\x00[2001:db8::1]:80"] != want {
		t.Errorf("IPv6 host: %+v", got)
	}
	if h, ok := got["outbound|80||a\x0010.0.0.1:80"]; ok && (h.errors != 0 || h.success != 0) {
		t.Errorf("a bad number was read: %+v", h)
	}
	// A line longer than the scanner's limit is an error, not a hang.
	if err := parseClusters(strings.NewReader(strings.Repeat("x", 2<<20)), map[string]hostCounts{}); err == nil {
		t.Error("an endless line was accepted")
	}
}

// Hostile or broken proxies: garbage, errors, endless and slow answers
// are reported per proxy and never stop the others' readings.
func TestScraperHostileTargets(t *testing.T) {
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# TYPE envoy_cluster_upstream_rq_total counter\nenvoy_cluster_upstream_rq_total{envoy_cluster_name=\"c\"} 3\n")
	}))
	defer good.Close()
	garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "this is { not prometheus\x00")
	}))
	defer garbage.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusInternalServerError)
	}))
	defer failing.Close()
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		line := []byte("# TYPE x counter\n")
		w.Write(line)
		for i := 0; i < 1<<16; i++ {
			if _, err := fmt.Fprintf(w, "x{a=\"%d\"} 1\n", i); err != nil {
				return
			}
		}
	}))
	defer huge.Close()
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)

	targets := []Target{
		{Class: class, Proxy: "good", StatsURL: good.URL},
		{Class: class, Proxy: "garbage", StatsURL: garbage.URL},
		{Class: class, Proxy: "failing", StatsURL: failing.URL},
		{Class: class, Proxy: "huge", StatsURL: huge.URL},
		{Class: class, Proxy: "slow", StatsURL: slow.URL},
		{Class: class, Proxy: "refused", StatsURL: "http://127.0.0.1:1/stats/prometheus"},
		{Class: class, Proxy: "slow2", StatsURL: slow.URL + "/2"},
		{Class: class, Proxy: "slow3", StatsURL: slow.URL + "/3"},
		{Class: class, Proxy: "slow4", StatsURL: slow.URL + "/4"},
	}
	s := NewScraper(ScraperOptions{Targets: func() []Target { return targets }, Timeout: 500 * time.Millisecond, MaxBytes: 64 << 10})
	start := time.Now()
	s.Round(context.Background())
	// Four proxies that never answer cost one timeout (500 ms), not four (2 s).
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("a round took %v: slow proxies are read one after the other", d)
	}
	w := s.Window()
	errs := map[string]string{}
	for _, sc := range w.Scrapes {
		errs[sc.Proxy] = sc.Error
	}
	want := map[string]string{"good": "", "garbage": "parsing", "failing": "500", "huge": "larger than", "slow": "deadline", "refused": "refused"}
	for p, frag := range want {
		e, ok := errs[p]
		switch {
		case !ok:
			t.Errorf("%s: not reported", p)
		case frag == "" && e != "":
			t.Errorf("%s: %s", p, e)
		case frag != "" && !strings.Contains(e, frag):
			t.Errorf("%s: error %q, want it to say %q", p, e, frag)
		}
	}
	if tot := w.total(class, seriesKey("envoy_cluster_upstream_rq_total", "envoy_cluster_name", "c")); tot != 3 {
		t.Errorf("the good proxy's reading: %v", tot)
	}
	// A proxy that goes away is forgotten.
	targets = targets[:1]
	s.Round(context.Background())
	if n := len(s.Window().Scrapes); n != 1 {
		t.Errorf("%d proxies remembered, want 1", n)
	}
}

// The scraper keeps one reading at least a window old, and no more.
func TestScraperKeepsOneWindow(t *testing.T) {
	var n float64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n += 10
		fmt.Fprintf(w, "# TYPE c counter\nc %v\n", n)
	}))
	defer srv.Close()
	s := NewScraper(ScraperOptions{Targets: func() []Target { return []Target{{Class: class, Proxy: "p", StatsURL: srv.URL}} }, Window: 50 * time.Millisecond})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.Round(context.Background())
		time.Sleep(5 * time.Millisecond)
		w := s.Window()
		if w.Span >= 50*time.Millisecond {
			break
		}
	}
	for range 20 {
		s.Round(context.Background())
		time.Sleep(5 * time.Millisecond)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pr := range s.proxies {
		rs := pr.readings
		span := rs[len(rs)-1].at.Sub(rs[0].at)
		second := rs[len(rs)-1].at.Sub(rs[1].at)
		if span < 50*time.Millisecond || second >= 50*time.Millisecond {
			t.Errorf("readings span %v (second oldest %v ago), want ≥ and < the 50ms window", span, second)
		}
	}
}

func TestKubernetesTargets(t *testing.T) {
	ready, notReady := true, false
	res := &resource.Resources{
		Services: []*corev1.Service{
			{ObjectMeta: metav1.ObjectMeta{Name: "istio-ingressgateway", Namespace: "istio-system"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"istio": "ingressgateway"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: "istio-system"}},
		},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			{ObjectMeta: metav1.ObjectMeta{Name: "gw-1", Namespace: "istio-system", Labels: map[string]string{"kubernetes.io/service-name": "istio-ingressgateway"}},
				Endpoints: []discoveryv1.Endpoint{
					{Addresses: []string{"10.1.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, TargetRef: &corev1.ObjectReference{Namespace: "istio-system", Name: "gw-abc"}},
					{Addresses: []string{"10.1.0.6"}, Conditions: discoveryv1.EndpointConditions{Ready: &notReady}},
					{Addresses: []string{"fd00::7"}},
				}},
			{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default", Labels: map[string]string{"kubernetes.io/service-name": "web"}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.2.0.1"}}}},
			// Same name in another namespace: not the gateway's.
			{ObjectMeta: metav1.ObjectMeta{Name: "gw-x", Namespace: "default", Labels: map[string]string{"kubernetes.io/service-name": "istio-ingressgateway"}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.9.9.9"}}}},
			// The status port where the Service maps it elsewhere.
			{ObjectMeta: metav1.ObjectMeta{Name: "gw-2", Namespace: "istio-system", Labels: map[string]string{"kubernetes.io/service-name": "istio-ingressgateway"}},
				Ports:     []discoveryv1.EndpointPort{{Name: ptr("http2"), Port: ptr[int32](8080)}, {Name: ptr("status-port"), Port: ptr[int32](9021)}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.8"}}}},
		},
	}
	got := KubernetesTargets(res, map[string]map[string]string{class: {"istio": "ingressgateway", "app": "istio-ingressgateway"}}, 0)
	want := []Target{
		{Class: class, Proxy: "istio-system/gw-abc", StatsURL: "http://10.1.0.5:15021/stats/prometheus"},
		{Class: class, Proxy: "istio-system/istio-ingressgateway", StatsURL: "http://[fd00::7]:15021/stats/prometheus"},
		{Class: class, Proxy: "istio-system/istio-ingressgateway", StatsURL: "http://10.1.0.8:9021/stats/prometheus"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("targets\n got %v\nwant %v", got, want)
	}
	if got := KubernetesTargets(nil, nil, 0); got != nil {
		t.Errorf("no resources: %v", got)
	}
}

func TestSourceEndpoint(t *testing.T) {
	st := state(t, shopYAML+`
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: istio-system}
data: {key: c2VjcmV0}
`)
	// What a kubectl apply leaves on an object is not what the user wrote.
	for _, vs := range st.Resources.VirtualServices {
		vs.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
		vs.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}
	}
	h := &Handler{State: func() *controller.State { return st }}
	mux := http.NewServeMux()
	h.Register(mux)
	tests := []struct {
		query    string
		code     int
		has, not []string
	}{
		{"kind=VirtualService&namespace=default&name=shop", 200, []string{"kind: VirtualService", "apiVersion: networking.istio.io/v1", "shop.example.com", "keep: me"}, []string{"managedFields", "last-applied"}},
		{"kind=ServiceEntry&namespace=default&name=web", 200, []string{"kind: ServiceEntry", "10.0.0.1"}, nil},
		{"kind=Secret&namespace=istio-system&name=cert", 400, nil, []string{"c2VjcmV0"}},
		{"kind=VirtualService&namespace=default&name=nope", 404, nil, nil},
		{"kind=%3Cscript%3E&namespace=x&name=y", 400, nil, []string{"<script>"}},
	}
	for _, tc := range tests {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, SourcePath+"?"+tc.query, nil))
		body := rec.Body.String()
		if rec.Code != tc.code {
			t.Errorf("%s: %d, want %d: %s", tc.query, rec.Code, tc.code, body)
		}
		for _, s := range tc.has {
			if !strings.Contains(body, s) {
				t.Errorf("%s: no %q in\n%s", tc.query, s, body)
			}
		}
		for _, s := range tc.not {
			if strings.Contains(body, s) {
				t.Errorf("%s: %q in\n%s", tc.query, s, body)
			}
		}
		if ct := rec.Header().Get("Content-Type"); rec.Code == 200 && !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s: served as %s", tc.query, ct)
		}
	}
	// Nothing but the page's own files under the assets path.
	for path, code := range map[string]int{"/debug/topology/topology.js": 200, "/debug/topology/topology.css": 200,
		"/debug/topology/index.html": 404, "/debug/topology/src/main.js": 404, "/debug/topology/../ui/embed.go": 404} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != code && !(code == 404 && rec.Code >= 300 && rec.Code < 500) {
			t.Errorf("%s: %d, want %d", path, rec.Code, code)
		}
	}
	// Before the first build: an empty graph, not an error.
	empty := &Handler{State: func() *controller.State { return nil }}
	rec := httptest.NewRecorder()
	m2 := http.NewServeMux()
	empty.Register(m2)
	m2.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, JSONPath, nil))
	var g Graph
	if err := json.Unmarshal(rec.Body.Bytes(), &g); err != nil || rec.Code != 200 || len(g.Nodes) != 0 {
		t.Errorf("before a build: %d %v %s", rec.Code, err, rec.Body.String())
	}
}

// Gateway API objects appear as themselves, not as the synthetic Istio
// objects the conversion makes of them, with their own statuses.
func TestGraphGatewayAPI(t *testing.T) {
	b, err := os.ReadFile("../gateway/testdata/gatewayapi-attached-routes.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g := Build(BuildInput{State: state(t, string(b)), Source: SourcePath, Now: time.Unix(3000, 0)})
	kinds := map[string]int{}
	for _, n := range g.Nodes {
		if strings.Contains(n.ID, "~") || strings.Contains(n.Label, "~") {
			t.Errorf("synthetic object shown: %s", n.ID)
		}
		if n.Resource != nil {
			kinds[n.Resource.Kind+"/"+n.Resource.Group]++
		}
		t.Logf("%s %s %s %v", n.Kind, n.ID, n.Health, n.Problems)
	}
	if kinds["Gateway/"+resource.GatewayAPIGroup] == 0 || kinds["HTTPRoute/"] == 0 {
		t.Errorf("no Gateway API Gateway or HTTPRoute node: %v", kinds)
	}
	served := false
	for _, e := range g.Edges {
		if strings.HasPrefix(e.Source, "Gateway.gateway.networking.k8s.io/") && strings.HasPrefix(e.Target, "server:") {
			served = true
		}
	}
	if !served {
		t.Error("no edge from a Gateway API Gateway to a server")
	}

	// A route a listener does not allow is an error, with its condition.
	b, err = os.ReadFile("../gateway/testdata/gatewayapi-allowed-routes-namespaces.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g = Build(BuildInput{State: state(t, string(b)), Now: time.Unix(3000, 0)})
	refused := 0
	for _, n := range g.Nodes {
		if n.Resource != nil && n.Resource.IsGatewayAPI() && n.Health == "error" {
			for _, p := range n.Problems {
				if strings.Contains(p.Message, "NotAllowedByListeners") {
					refused++
				}
			}
		}
	}
	if refused == 0 {
		t.Error("no route shows NotAllowedByListeners")
	}
}

func ptr[T any](v T) *T { return &v }

// Two proxy classes: each has its own servers, routes and clusters, and
// servers say which class they belong to.
func TestGraphTwoClasses(t *testing.T) {
	yamlText := `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: in, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: out, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: both, namespace: default}
spec:
  hosts: [web.example.com]
  gateways: [istio-system/in, istio-system/out]
  http: [{route: [{destination: {host: web.default.svc.cluster.local, port: {number: 80}}}]}]
` + serviceEntries
	objs, errs := resource.Decode([]byte(yamlText), "test.yaml")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	res, err := resource.FromObjects(objs)
	if err != nil {
		t.Fatal(err)
	}
	egress := map[string]string{"istio": "egressgateway"}
	result := gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress, egress}})
	st := &controller.State{Resources: res, Result: result, Versions: map[string]string{class: "1", "istio=egressgateway": "1"}}
	g := Build(BuildInput{State: st, Now: time.Unix(3000, 0)})
	for _, c := range []string{class, "istio=egressgateway"} {
		srv := node(t, g, "server:"+c+":0.0.0.0_80")
		if !strings.HasSuffix(srv.Detail, " · "+c) {
			t.Errorf("server of %s says %q", c, srv.Detail)
		}
		node(t, g, "route:"+c+":VirtualService/default/both:default.both.0")
		node(t, g, "cluster:"+c+":"+webCluster)
	}
	// One VirtualService node, routed from both classes' servers.
	from := 0
	for _, e := range g.Edges {
		if e.Target == "VirtualService/default/both" {
			from++
		}
	}
	if from != 2 {
		t.Errorf("the VirtualService is reached from %d servers, want 2", from)
	}
}
