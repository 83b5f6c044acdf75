package proxy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/portico-gateway/portico/internal/testenv"
)

// istioLabels are the labels of Istio's HTTP metrics, as Istio's stats
// filter emits them.
var istioLabels = []string{"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
	"source_principal", "source_app", "source_version", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_canonical_service", "destination_canonical_revision",
	"destination_service_name", "destination_service_namespace", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy"}

// istioTCPLabels are the TCP metrics' labels: no response code or gRPC
// status.
var istioTCPLabels = func() []string {
	var out []string
	for _, l := range istioLabels {
		if l != "response_code" && l != "grpc_response_status" {
			out = append(out, l)
		}
	}
	return out
}()

// istioTraffic runs a proxy with an HTTP service whose endpoint has
// workload labels, a service whose endpoint refuses connections, and a
// TCP service, and sends: okCount 200s, one 404 (no route), one 503 (UF)
// and one TCP connection carrying payload both ways. It returns the
// proxy and its status port address.
func istioTraffic(t *testing.T, okCount int, payload string) (*testenv.Proxy, string) {
	reviews := testenv.StartBackend(t, "reviews")
	echo := startEcho(t)
	dead := testenv.FreePort(t)
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 3306, name: mysql, protocol: TCP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /broken}}]
    route: [{destination: {host: broken.default.svc.cluster.local}}]
  - route: [{destination: {host: reviews.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql, namespace: default}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  tcp: [{route: [{destination: {host: mysql.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {http: %d}
    labels: {app: reviews, version: v1, service.istio.io/workload-name: reviews-v1}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: broken, namespace: default}
spec:
  hosts: [broken.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: %d}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql, namespace: default}
spec:
  hosts: [mysql.default.svc.cluster.local]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {tcp: %d}
    labels: {app: mysql, version: v8, service.istio.io/workload-name: mysql-v8}
`, reviews.Port, dead, echo.Port))
	status := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80, 3306}, StatusAddress: status})
	p.WaitReady(t)

	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	send := func(method, host, path, body string, want int) {
		t.Helper()
		req, _ := http.NewRequest(method, p.URL(80)+path, strings.NewReader(body))
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s%s: %v", method, host, path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s%s: status %d, want %d", method, host, path, resp.StatusCode, want)
		}
	}
	for i := 0; i < okCount; i++ {
		send("POST", "shop.example.com", "/cart", "item=42", 200)
	}
	send("GET", "nowhere.example.com", "/", "", 404)
	send("GET", "shop.example.com", "/broken", "", 503)

	conn, err := net.Dial("tcp", p.Addr(3306))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, payload); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(payload))
	if _, err := io.ReadFull(bufio.NewReader(conn), back); err != nil || string(back) != payload {
		t.Fatalf("TCP echo: %q %v", back, err)
	}
	conn.Close()
	return p, status
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return fams
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.Label {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// find returns the series of a family whose labels include want.
func find(fams map[string]*dto.MetricFamily, name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range fams[name].GetMetric() {
		lm := labelMap(m)
		ok := true
		for k, v := range want {
			if lm[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// TestIstioStandardMetrics drives real traffic through a real proxy and
// checks Istio's metric names, label sets, values and histogram buckets
// on both Prometheus endpoints (the admin port and the status port the
// scrape annotations name).
func TestIstioStandardMetrics(t *testing.T) {
	const okCount = 5
	payload := strings.Repeat("select 1;\n", 30)
	p, status := istioTraffic(t, okCount, payload)

	for _, url := range []string{p.Admin.URL + "/stats/prometheus", "http://" + status + "/stats/prometheus"} {
		t.Run(strings.SplitN(strings.TrimPrefix(url, "http://"), "/", 2)[0], func(t *testing.T) {
			// TCP connection close is reported when the proxy sees both
			// directions end: poll for it.
			deadline := time.Now().Add(10 * time.Second)
			fams := scrape(t, url)
			// The series exists (at 0) from the moment the connection
			// opens; wait for the count.
			closed := func() bool {
				for _, m := range find(fams, "istio_tcp_connections_closed_total", map[string]string{"destination_workload": "mysql-v8"}) {
					if m.GetCounter().GetValue() >= 1 {
						return true
					}
				}
				return false
			}
			for !closed() && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
				fams = scrape(t, url)
			}
			if _, ok := fams["envoy_cluster_upstream_rq_total"]; !ok {
				t.Error("Envoy's stats are missing next to Istio's")
			}
			types := map[string]dto.MetricType{
				"istio_requests_total": dto.MetricType_COUNTER, "istio_request_duration_milliseconds": dto.MetricType_HISTOGRAM,
				"istio_request_bytes": dto.MetricType_HISTOGRAM, "istio_response_bytes": dto.MetricType_HISTOGRAM,
				"istio_tcp_sent_bytes_total": dto.MetricType_COUNTER, "istio_tcp_received_bytes_total": dto.MetricType_COUNTER,
				"istio_tcp_connections_opened_total": dto.MetricType_COUNTER, "istio_tcp_connections_closed_total": dto.MetricType_COUNTER,
			}
			for name, typ := range types {
				f := fams[name]
				if f == nil {
					t.Errorf("%s missing", name)
					continue
				}
				if f.GetType() != typ || f.GetHelp() == "" {
					t.Errorf("%s: type %v help %q", name, f.GetType(), f.GetHelp())
				}
				want := istioLabels
				if strings.HasPrefix(name, "istio_tcp_") {
					want = istioTCPLabels
				}
				for _, m := range f.Metric {
					var got []string
					for _, l := range m.Label {
						got = append(got, l.GetName())
					}
					if strings.Join(sortedCopy(got), ",") != strings.Join(sortedCopy(want), ",") {
						t.Errorf("%s labels %v, want Istio's %v", name, got, want)
					}
					if h := m.GetHistogram(); h != nil {
						var les []string
						for _, b := range h.Bucket {
							les = append(les, fmt.Sprint(b.GetUpperBound()))
						}
						if strings.Join(les, " ") != "0.5 1 5 10 25 50 100 250 500 1000 2500 5000 10000 30000 60000 300000 600000 1.8e+06 3.6e+06 +Inf" {
							t.Errorf("%s buckets %v", name, les)
						}
					}
				}
			}

			source := map[string]string{"reporter": "source", "source_workload": "istio-ingressgateway",
				"source_workload_namespace": "istio-system", "source_principal": "unknown", "source_app": "istio-ingressgateway",
				"source_canonical_service": "istio-ingressgateway", "source_canonical_revision": "latest", "source_version": "unknown",
				"source_cluster":             "Kubernetes",
				"connection_security_policy": "unknown"}
			with := func(extra map[string]string) map[string]string {
				out := map[string]string{}
				for k, v := range source {
					out[k] = v
				}
				for k, v := range extra {
					out[k] = v
				}
				return out
			}
			cases := []struct {
				name   string
				labels map[string]string
				count  uint64
			}{
				{"200 to a labelled endpoint", with(map[string]string{"destination_service": "reviews.default.svc.cluster.local",
					"destination_service_name": "reviews", "destination_service_namespace": "default", "destination_workload": "reviews-v1",
					"destination_workload_namespace": "default", "destination_app": "reviews", "destination_version": "v1",
					"destination_canonical_service": "reviews", "destination_canonical_revision": "v1", "destination_cluster": "Kubernetes",
					"destination_principal": "unknown", "request_protocol": "http", "response_code": "200", "grpc_response_status": "",
					"response_flags": "-"}), okCount},
				{"404 without a route", with(map[string]string{"destination_service": "unknown", "destination_service_name": "unknown",
					"destination_workload": "unknown", "destination_app": "unknown", "destination_cluster": "unknown",
					"destination_canonical_revision": "latest", "response_code": "404", "response_flags": "NR"}), 1},
				{"503 connection failure", with(map[string]string{"destination_service": "broken.default.svc.cluster.local",
					"destination_service_name": "broken", "destination_service_namespace": "default", "destination_workload": "unknown",
					"response_code": "503", "response_flags": "UF,URX"}), 1}, // Istio's default retry on connect-failure
			}
			for _, c := range cases {
				ms := find(fams, "istio_requests_total", c.labels)
				if len(ms) != 1 || ms[0].GetCounter().GetValue() != float64(c.count) {
					t.Errorf("%s: istio_requests_total%v: %v; have %v", c.name, c.labels, ms, fams["istio_requests_total"].GetMetric())
					continue
				}
				for _, h := range []string{"istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"} {
					hs := find(fams, h, c.labels)
					if len(hs) != 1 || hs[0].GetHistogram().GetSampleCount() != c.count {
						t.Errorf("%s: %s count %v", c.name, h, hs)
					}
				}
			}
			ok := with(map[string]string{"response_code": "200", "destination_workload": "reviews-v1"})
			if hs := find(fams, "istio_request_bytes", ok); len(hs) == 1 {
				// Each request: its body (7 bytes) and at least its headers.
				if s := hs[0].GetHistogram().GetSampleSum(); s < float64(okCount*(7+len(":methodPOST:path/cart"))) {
					t.Errorf("istio_request_bytes sum %v: headers and body not counted", s)
				}
			}

			tcp := with(map[string]string{"destination_service": "mysql.default.svc.cluster.local", "destination_service_name": "mysql",
				"destination_workload": "mysql-v8", "destination_app": "mysql", "destination_version": "v8", "request_protocol": "tcp",
				"response_flags": "-"})
			for name, want := range map[string]float64{"istio_tcp_connections_opened_total": 1, "istio_tcp_connections_closed_total": 1,
				"istio_tcp_sent_bytes_total": float64(len(payload)), "istio_tcp_received_bytes_total": float64(len(payload))} {
				ms := find(fams, name, tcp)
				if len(ms) != 1 || ms[0].GetCounter().GetValue() != want {
					t.Errorf("%s%v: %v, want %v", name, tcp, ms, want)
				}
			}
			if ms := find(fams, "istio_build", map[string]string{"component": "proxy"}); len(ms) != 1 {
				t.Errorf("istio_build{component=proxy}: %v", ms)
			}
		})
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// dashboardQueries is config/observability/istio-dashboard-queries.json.
type dashboardQueries struct {
	Commit       string `json:"commit"`
	IstioVersion string `json:"istioVersion"`
	Dashboards   []struct {
		File      string `json:"file"`
		Variables []struct {
			Name  string `json:"name"`
			Query string `json:"query"`
		} `json:"variables"`
		Queries []struct {
			Panel string `json:"panel"`
			Expr  string `json:"expr"`
		} `json:"queries"`
	} `json:"dashboards"`
}

var (
	selectorRE = regexp.MustCompile(`\b(istio_[a-z_]+)\s*(\{([^}]*)\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	byRE       = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
)

type matcher struct {
	name, op, value string
	re              *regexp.Regexp
}

func (m matcher) matches(labels map[string]string) bool {
	v := labels[m.name]
	switch m.op {
	case "=":
		return v == m.value
	case "!=":
		return v != m.value
	case "=~":
		return m.re.MatchString(v)
	}
	return !m.re.MatchString(v)
}

// notFromAGateway says why a selector reads series an Istio ingress
// gateway never produces either (so Portico must not): server-side
// reports, mutual TLS between sidecars, SPIFFE peers, and the
// pre-1.5 seconds histogram the dashboards read as a fallback.
func notFromAGateway(metric string, ms []matcher) string {
	if metric == "istio_request_duration_seconds_bucket" {
		return "legacy seconds histogram"
	}
	for _, m := range ms {
		switch {
		case m.name == "reporter" && m.op == "=" && m.value == "destination":
			return "reporter=destination is a server-side sidecar's report"
		case m.name == "connection_security_policy" && m.op == "=" && m.value == "mutual_tls":
			return "a gateway reports connection_security_policy=unknown"
		case m.name == "destination_principal" && m.op == "=~" && strings.HasPrefix(m.value, "spiffe"):
			return "no SPIFFE peer identity upstream of the edge proxy"
		}
	}
	return ""
}

// TestIstioDashboardQueries takes every PromQL expression of Istio's
// published Grafana dashboards (mesh, service, workload), binds their
// template variables the way a user looking at this traffic would, and
// checks that every series selector they contain matches series in a
// scrape, carrying the labels their "by" clauses group on — or that the
// selector reads what only sidecars produce, and then matches nothing.
func TestIstioDashboardQueries(t *testing.T) {
	raw, err := os.ReadFile("../../config/observability/istio-dashboard-queries.json")
	if err != nil {
		t.Fatal(err)
	}
	var dq dashboardQueries
	if err := json.Unmarshal(raw, &dq); err != nil {
		t.Fatal(err)
	}
	if len(dq.Dashboards) != 3 || dq.Commit == "" {
		t.Fatalf("unexpected queries file: %d dashboards, commit %q", len(dq.Dashboards), dq.Commit)
	}
	p, _ := istioTraffic(t, 3, "ping\n")
	fams := scrape(t, p.Admin.URL+"/stats/prometheus")
	deadline := time.Now().Add(10 * time.Second)
	closed := func() bool {
		for _, m := range fams["istio_tcp_connections_closed_total"].GetMetric() {
			if m.GetCounter().GetValue() >= 1 {
				return true
			}
		}
		return false
	}
	for !closed() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		fams = scrape(t, p.Admin.URL+"/stats/prometheus")
	}
	// series lists every sample's name (histograms as _bucket, _sum,
	// _count, buckets with le) and labels.
	type sample struct {
		name   string
		labels map[string]string
	}
	var series []sample
	for name, f := range fams {
		for _, m := range f.Metric {
			lm := labelMap(m)
			if h := m.GetHistogram(); h != nil {
				series = append(series, sample{name + "_sum", lm}, sample{name + "_count", lm})
				for _, b := range h.Bucket {
					bl := map[string]string{"le": fmt.Sprint(b.GetUpperBound())}
					for k, v := range lm {
						bl[k] = v
					}
					series = append(series, sample{name + "_bucket", bl})
				}
				continue
			}
			series = append(series, sample{name, lm})
		}
	}

	// Views bind the variables as a user would: the service dashboard for
	// the HTTP and the TCP service, the workload dashboard for the
	// gateway (outbound panels) and for the destination workloads
	// (inbound panels). "All" is Grafana's ".*".
	all := ".*"
	views := map[string][]map[string]string{
		"istio-mesh-dashboard.gen.json": {{}},
		"istio-service-dashboard.json": {
			{"service": "reviews.default.svc.cluster.local", "qrep": "source"},
			{"service": "mysql.default.svc.cluster.local", "qrep": "source"},
		},
		"istio-workload-dashboard.json": {
			{"workload": "istio-ingressgateway", "namespace": "istio-system", "qrep": "source"},
			{"workload": "reviews-v1", "namespace": "default", "qrep": "source"},
			{"workload": "mysql-v8", "namespace": "default", "qrep": "source"},
		},
	}
	checked, exempt := 0, 0
	for _, d := range dq.Dashboards {
		vs, ok := views[d.File]
		if !ok {
			t.Fatalf("no views for %s", d.File)
		}
		exprs := map[string]string{}
		for _, q := range d.Queries {
			exprs[q.Expr] = d.File + " panel " + q.Panel
		}
		for _, v := range d.Variables {
			if strings.Contains(v.Query, "istio_") {
				exprs[v.Query] = d.File + " variable " + v.Name
			}
		}
		for expr, where := range exprs {
			type sel struct {
				metric string
				body   string
			}
			var sels []sel
			for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
				sels = append(sels, sel{m[1], m[3]})
			}
			var by []string
			for _, m := range byRE.FindAllStringSubmatch(expr, -1) {
				for _, l := range strings.Split(m[1], ",") {
					by = append(by, strings.TrimSpace(l))
				}
			}
			for _, s := range sels {
				matchedIn, why := 0, ""
				for _, view := range vs {
					body := s.body
					for _, name := range []string{"srccluster", "srcns", "srcwl", "dstcluster", "dstns", "dstwl", "dstsvc"} {
						if _, bound := view[name]; !bound {
							body = strings.ReplaceAll(body, "$"+name, all)
						}
					}
					for name, val := range view {
						body = strings.ReplaceAll(body, "$"+name, val)
					}
					if strings.Contains(body, "$") {
						t.Fatalf("%s: unbound variable in %q", where, body)
					}
					var ms []matcher
					for _, m := range matcherRE.FindAllStringSubmatch(body, -1) {
						mm := matcher{name: m[1], op: m[2], value: m[3]}
						if strings.Contains(mm.op, "~") {
							mm.re = regexp.MustCompile("^(?:" + mm.value + ")$")
						}
						ms = append(ms, mm)
					}
					why = notFromAGateway(s.metric, ms)
					for _, smp := range series {
						if smp.name != s.metric {
							continue
						}
						ok := true
						for _, m := range ms {
							if !m.matches(smp.labels) {
								ok = false
								break
							}
						}
						for _, l := range by {
							if _, has := smp.labels[l]; !has && !strings.HasSuffix(l, "_var") {
								ok = false
							}
						}
						if ok {
							matchedIn++
							break
						}
					}
				}
				switch {
				case why != "" && matchedIn > 0:
					t.Errorf("%s: %s{%s} matches series, but %s", where, s.metric, s.body, why)
				case why != "":
					exempt++
				case matchedIn == 0:
					t.Errorf("%s: %s{%s} (by %v) matches no series", where, s.metric, s.body, by)
				default:
					checked++
				}
			}
		}
	}
	t.Logf("Istio %s (%s): %d selectors return data, %d read what only sidecars produce", dq.IstioVersion, dq.Commit[:12], checked, exempt)
	if checked < 50 {
		t.Errorf("only %d selectors checked: the queries file or the extraction is wrong", checked)
	}
}
