package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/testenv"
)

// trafficSetup publishes a gateway on port 80, the given rules, and a
// ServiceEntry "rating" for the backends; it returns a ready proxy.
func trafficSetup(t *testing.T, rules string, backends ...*testenv.Backend) *testenv.Proxy {
	t.Helper()
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, gateway80+"---\n"+rules+testenv.ServiceEntry("rating", "rating.default.svc.cluster.local", 80, "HTTP", backends...))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	t.Cleanup(func() {
		if t.Failed() {
			p.Stop() // flushes the access log
			t.Logf("access log:\n%s", p.Log.String())
		}
	})
	return p
}

func do(t *testing.T, c *http.Client, method, url string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Host = "rating.example.com"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func stat(p *testenv.Proxy, name string) int64 {
	v, _ := p.Stats.Lookup(name)
	return v
}

const ratingCluster = "cluster.outbound|80||rating.default.svc.cluster.local."

// withinBinomial checks a count against n trials of probability q, at five
// standard deviations (a false failure about once in 3.5 million runs).
func withinBinomial(t *testing.T, what string, got, n int, q float64) {
	t.Helper()
	mean, sd := float64(n)*q, math.Sqrt(float64(n)*q*(1-q))
	if math.Abs(float64(got)-mean) > 5*sd {
		t.Errorf("%s: %d of %d, expected %.0f ± %.0f", what, got, n, mean, 5*sd)
	}
}

// TestRetriesHideAFailingVersion is seed 002: one of two backends answers
// 503; with retries every client request succeeds, without them about half
// fail.
func TestRetriesHideAFailingVersion(t *testing.T) {
	v1, v2 := testenv.StartBackend(t, "v1"), testenv.StartBackend(t, "v2")
	v2.Status.Store(503)
	vs := func(retries string) string {
		return `apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: rating}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - route:
    - destination:
        host: rating
    retries: ` + retries + "\n"
	}
	p := trafficSetup(t, vs("{attempts: 2, perTryTimeout: 5s, retryOn: 5xx}"), v1, v2)
	attempts := map[string]int{}
	for i := 0; i < 100; i++ {
		code, _, body := do(t, http.DefaultClient, "GET", p.URL(80)+"/", nil)
		if code != 200 {
			t.Fatalf("request %d failed despite retries: %d %s", i, code, body)
		}
		// Istio's virtual hosts set include_request_attempt_count: the
		// backend sees which try this is.
		var echo testenv.Echo
		if err := json.Unmarshal([]byte(body), &echo); err != nil {
			t.Fatalf("request %d: %v in %q", i, err, body)
		}
		for k, v := range echo.Headers {
			if strings.EqualFold(k, "x-envoy-attempt-count") {
				attempts[v]++
			}
		}
	}
	// attempts: 2 is up to three tries (a retry may pick v2 again when
	// host selection runs out of other hosts).
	if attempts["1"] == 0 || attempts["2"] == 0 || attempts["1"]+attempts["2"]+attempts["3"] != 100 {
		t.Errorf("x-envoy-attempt-count seen by the healthy backend: %v; want 1, 2 (and rarely 3) on all 100 requests", attempts)
	}
	if r := stat(p, ratingCluster+"upstream_rq_retry"); r < 20 {
		t.Errorf("upstream_rq_retry = %d; v2 should have been retried about 50 times", r)
	}
	// Per attempt, as Envoy counts: every retried 503 is a 503, and the
	// total is every attempt.
	n200, n503, total, retried := stat(p, ratingCluster+"upstream_rq_200"), stat(p, ratingCluster+"upstream_rq_503"),
		stat(p, ratingCluster+"upstream_rq_total"), stat(p, ratingCluster+"upstream_rq_retry")
	if n200 != 100 || n503 != retried || total != n200+n503 || stat(p, ratingCluster+"upstream_rq_5xx") != n503 {
		t.Errorf("upstream_rq_200 %d (want 100), upstream_rq_503 %d (want = upstream_rq_retry %d), upstream_rq_total %d (want their sum)",
			n200, n503, retried, total)
	}

	q := trafficSetup(t, vs("{attempts: 0}"), v1, v2)
	failed := 0
	for i := 0; i < 200; i++ {
		if code, _, _ := do(t, http.DefaultClient, "GET", q.URL(80)+"/", nil); code == 503 {
			failed++
		}
	}
	withinBinomial(t, "503s without retries (round robin over v1, v2)", failed, 200, 0.5)
}

// TestCircuitBreakerAndOutlierDetection is seed 002's circuit breaker: with
// the seed's connectionPool and outlierDetection, 4 clients × 10 requests
// all succeed (with the retry policy) and the failing v2 is ejected after
// its first error.
func TestCircuitBreakerAndOutlierDetection(t *testing.T) {
	v1, v2 := testenv.StartBackend(t, "v1"), testenv.StartBackend(t, "v2")
	v2.Status.Store(503)
	p := trafficSetup(t, `apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: rating
spec:
  host: rating
  subsets:
  - labels:
      version: v1
    name: version-v1
  - labels:
      version: v2
    name: version-v2
  trafficPolicy:
    connectionPool:
      http:
        http1MaxPendingRequests: 3
        maxRequestsPerConnection: 3
      tcp:
        maxConnections: 3
    outlierDetection:
      baseEjectionTime: 3m
      consecutive5xxErrors: 1
      interval: 1s
      maxEjectionPercent: 100
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: rating}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - route:
    - destination: {host: rating}
    retries: {attempts: 2, perTryTimeout: 5s, retryOn: 5xx}
`, v1, v2)
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ { // siege -r 10 -c 4
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{}
			for i := 0; i < 10; i++ {
				if code, _, _ := do(t, client, "GET", p.URL(80)+"/book/1", nil); code == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 40 {
		t.Errorf("%d of 40 requests succeeded", ok.Load())
	}
	// Hosts are picked before waiting for one of the 3 connections, so v2
	// can see its first request plus at most two picked concurrently.
	if h := v2.Hits.Load(); h < 1 || h > 3 {
		t.Errorf("v2 received %d requests; it should be ejected after its first error", h)
	}
	if e := stat(p, ratingCluster+"outlier_detection.ejections_active"); e != 1 {
		t.Errorf("outlier_detection.ejections_active = %d, want 1", e)
	}
	if e := stat(p, ratingCluster+"outlier_detection.ejections_enforced_consecutive_5xx"); e < 1 {
		t.Errorf("ejections_enforced_consecutive_5xx = %d", e)
	}
	resp, err := http.Get(p.Admin.URL + "/clusters")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "health_flags::/failed_outlier_check") {
		t.Errorf("/clusters should flag the ejected host:\n%s", b)
	}
	// The EDS dump shows each host's health as the proxy sees it now, as
	// Envoy's does (istioctl proxy-config endpoints -f reads it): the
	// ejected v2 UNHEALTHY though EDS sent it HEALTHY, v1 HEALTHY.
	health := edsHealth(t, p.Admin.URL, strings.TrimSuffix(strings.TrimPrefix(ratingCluster, "cluster."), "."))
	if got, want := health[v1.Addr], "HEALTHY/1"; got != want {
		t.Errorf("EDS dump: v1 %s is %q, want %q (all: %v)", v1.Addr, got, want, health)
	}
	if got, want := health[v2.Addr], "UNHEALTHY/1"; got != want {
		t.Errorf("EDS dump: ejected v2 %s is %q, want %q (all: %v)", v2.Addr, got, want, health)
	}
}

// edsHealth reads /config_dump?include_eds and returns, for one cluster,
// each endpoint's "health_status/load_balancing_weight" by address.
func edsHealth(t *testing.T, admin, cluster string) map[string]string {
	t.Helper()
	resp, err := http.Get(admin + "/config_dump?include_eds")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dump struct {
		Configs []struct {
			Type string `json:"@type"`
			EDS  []struct {
				Config struct {
					ClusterName string `json:"cluster_name"`
					Endpoints   []struct {
						LB []struct {
							Endpoint struct {
								Address struct {
									Socket struct {
										Address string `json:"address"`
										Port    int    `json:"port_value"`
									} `json:"socket_address"`
								} `json:"address"`
							} `json:"endpoint"`
							Health string `json:"health_status"`
							Weight int    `json:"load_balancing_weight"`
						} `json:"lb_endpoints"`
					} `json:"endpoints"`
				} `json:"endpoint_config"`
			} `json:"dynamic_endpoint_configs"`
		} `json:"configs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range dump.Configs {
		for _, e := range c.EDS {
			if e.Config.ClusterName != cluster {
				continue
			}
			for _, l := range e.Config.Endpoints {
				for _, lb := range l.LB {
					a := lb.Endpoint.Address.Socket
					out[net.JoinHostPort(a.Address, strconv.Itoa(a.Port))] = fmt.Sprintf("%s/%d", lb.Health, lb.Weight)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no endpoints of %s in the EDS dump", cluster)
	}
	return out
}

func TestCircuitBreakerOverflow(t *testing.T) {
	slow := testenv.StartBackend(t, "slow")
	slow.Delay.Store(300)
	p := trafficSetup(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: rating}
spec:
  host: rating
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: rating}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: rating}}], retries: {attempts: 0}}]
`, slow)
	var codes sync.Map
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, body := do(t, &http.Client{}, "GET", p.URL(80)+"/", nil)
			codes.Store(fmt.Sprintf("%d:%s", code, strings.TrimSpace(body)), true)
		}()
	}
	wg.Wait()
	if _, ok := codes.Load("503:upstream connect error or disconnect/reset before headers. reset reason: overflow"); !ok {
		t.Error("6 concurrent requests against 1 connection and 1 pending slot must overflow")
	}
	if n := stat(p, ratingCluster+"upstream_rq_pending_overflow"); n < 1 {
		t.Errorf("upstream_rq_pending_overflow = %d", n)
	}
	p.Proxy.Flush()
	if !strings.Contains(p.Log.String(), " 503 UO ") {
		t.Errorf("overflow must be logged with UO:\n%s", p.Log.String())
	}
}

// TestCanaryWeights is seed 002's 75/25 split over 1,000 requests.
func TestCanaryWeights(t *testing.T) {
	v1, v2 := testenv.StartBackend(t, "v1"), testenv.StartBackend(t, "v2")
	p := trafficSetup(t, `apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: rating}
spec:
  host: rating
  subsets:
  - {name: version-v1, labels: {version: v1}}
  - {name: version-v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: rating}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - route:
    - destination: {host: rating, subset: version-v1}
      weight: 75
    - destination: {host: rating, subset: version-v2}
      weight: 25
`, v1, v2)
	for i := 0; i < 1000; i++ {
		if code, _, _ := do(t, http.DefaultClient, "GET", p.URL(80)+"/", nil); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	withinBinomial(t, "requests to v2", int(v2.Hits.Load()), 1000, 0.25)
	if v1.Hits.Load()+v2.Hits.Load() != 1000 {
		t.Errorf("hits %d + %d", v1.Hits.Load(), v2.Hits.Load())
	}
}

func TestFaultInjection(t *testing.T) {
	v1 := testenv.StartBackend(t, "v1")
	p := trafficSetup(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: rating}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 50}}}
    route: [{destination: {host: rating}}]
  - match: [{uri: {prefix: /delay}}]
    fault: {delay: {fixedDelay: 200ms, percentage: {value: 100}}}
    route: [{destination: {host: rating}}]
  - match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: rating}}]
`, v1)
	aborted := 0
	for i := 0; i < 1000; i++ {
		code, _, body := do(t, http.DefaultClient, "GET", p.URL(80)+"/abort", nil)
		if code == 418 {
			aborted++
			if body != "fault filter abort" {
				t.Fatalf("abort body %q", body)
			}
		}
	}
	withinBinomial(t, "aborted requests", aborted, 1000, 0.5)
	if int(v1.Hits.Load()) != 1000-aborted {
		t.Errorf("aborted requests reached the backend: %d hits for %d passed", v1.Hits.Load(), 1000-aborted)
	}
	start := time.Now()
	if code, _, _ := do(t, http.DefaultClient, "GET", p.URL(80)+"/delay", nil); code != 200 {
		t.Errorf("delayed request: %d", code)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("a 200ms fixed delay took %v", d)
	}
	_, hdr, _ := do(t, http.DefaultClient, "GET", p.URL(80)+"/grpc", nil)
	if hdr.Get("grpc-status") != "14" {
		t.Errorf("gRPC abort: grpc-status %q", hdr.Get("grpc-status"))
	}
	p.Proxy.Flush()
	if !strings.Contains(p.Log.String(), " 418 FI ") || !strings.Contains(p.Log.String(), " 200 DI ") {
		t.Errorf("fault flags missing from the access log")
	}
}

func TestConsistentHashAndLoadBalancers(t *testing.T) {
	a, b, c := testenv.StartBackend(t, "a"), testenv.StartBackend(t, "b"), testenv.StartBackend(t, "c")
	p := trafficSetup(t, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: rating}
spec:
  host: rating
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - name: by-user
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
  - name: by-cookie
    trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: session, ttl: 60s}, maglev: {tableSize: 1031}}}}
  - name: least
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: rating}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /user}}]
    route: [{destination: {host: rating, subset: by-user}}]
  - match: [{uri: {prefix: /cookie}}]
    route: [{destination: {host: rating, subset: by-cookie}}]
  - match: [{uri: {prefix: /least}}]
    route: [{destination: {host: rating, subset: least}}]
  - route: [{destination: {host: rating}}]
`, a, b, c)
	backendOf := func(path string, hdr map[string]string) string {
		_, h, _ := do(t, http.DefaultClient, "GET", p.URL(80)+path, hdr)
		return h.Get("x-backend")
	}
	used := map[string]bool{}
	for u := 0; u < 30; u++ {
		user := fmt.Sprintf("user-%d", u)
		first := backendOf("/user", map[string]string{"x-user": user})
		used[first] = true
		for i := 0; i < 5; i++ {
			if got := backendOf("/user", map[string]string{"x-user": user}); got != first {
				t.Fatalf("%s moved from %s to %s", user, first, got)
			}
		}
	}
	if len(used) < 2 {
		t.Errorf("30 users all hashed to %v", used)
	}
	// A generated cookie keeps a client on one backend.
	_, h, _ := do(t, http.DefaultClient, "GET", p.URL(80)+"/cookie", nil)
	cookie := h.Get("Set-Cookie")
	if !strings.HasPrefix(cookie, "session=") || !strings.Contains(cookie, "Max-Age=60") {
		t.Fatalf("Set-Cookie = %q", cookie)
	}
	value := strings.Split(cookie, ";")[0]
	first := backendOf("/cookie", map[string]string{"Cookie": value})
	for i := 0; i < 10; i++ {
		if got := backendOf("/cookie", map[string]string{"Cookie": value}); got != first {
			t.Fatalf("cookie %s moved from %s to %s", value, first, got)
		}
	}
	// Round robin is exact over a multiple of the host count.
	a.Hits.Store(0)
	b.Hits.Store(0)
	c.Hits.Store(0)
	for i := 0; i < 30; i++ {
		backendOf("/", nil)
	}
	if a.Hits.Load() != 10 || b.Hits.Load() != 10 || c.Hits.Load() != 10 {
		t.Errorf("round robin: %d %d %d", a.Hits.Load(), b.Hits.Load(), c.Hits.Load())
	}
	for i := 0; i < 30; i++ {
		if backendOf("/least", nil) == "" {
			t.Fatal("least request failed")
		}
	}
}

func TestMirrorTimeoutsAndHeaders(t *testing.T) {
	primary, shadow, slow := testenv.StartBackend(t, "primary"), testenv.StartBackend(t, "shadow"), testenv.StartBackend(t, "slow")
	shadow.Status.Store(500)
	shadow.Delay.Store(100)
	slow.Delay.Store(2000)
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, gateway80+`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: rating}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /mirror}}]
    route: [{destination: {host: primary}}]
    mirror: {host: shadow}
    mirrorPercentage: {value: 100}
  - match: [{uri: {prefix: /timeout}}]
    timeout: 200ms
    route: [{destination: {host: slow}}]
  - match: [{uri: {prefix: /headers}}]
    headers:
      request: {set: {x-env: prod}, add: {x-added: "1"}, remove: [x-secret]}
      response: {set: {cache-control: no-store}, remove: [x-backend]}
    route:
    - destination: {host: primary}
      headers: {request: {set: {x-dest: primary}}, response: {add: {x-served-by: primary}}}
  - match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://app.example.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [authorization]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: primary}}]
`+testenv.ServiceEntry("primary", "primary.default.svc.cluster.local", 80, "HTTP", primary)+
		testenv.ServiceEntry("shadow", "shadow.default.svc.cluster.local", 80, "HTTP", shadow)+
		testenv.ServiceEntry("slow", "slow.default.svc.cluster.local", 80, "HTTP", slow))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)

	// Mirrors never change the client's response, even when they fail.
	for i := 0; i < 10; i++ {
		if code, _, _ := do(t, http.DefaultClient, "GET", p.URL(80)+"/mirror", nil); code != 200 {
			t.Fatalf("mirror request %d: %d", i, code)
		}
	}
	testenv.WaitFor(t, "the mirrored copies", func() bool { return shadow.Hits.Load() == 10 })

	start := time.Now()
	code, _, body := do(t, http.DefaultClient, "GET", p.URL(80)+"/timeout", nil)
	if code != 504 || body != "upstream request timeout" {
		t.Errorf("route timeout: %d %q", code, body)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("a 200ms route timeout took %v", d)
	}

	code, hdr, body := do(t, http.DefaultClient, "GET", p.URL(80)+"/headers", map[string]string{"x-secret": "s", "x-added": "0"})
	var e struct{ Headers map[string]string }
	jsonUnmarshal(body, &e)
	if code != 200 || e.Headers["x-env"] != "prod" || e.Headers["x-added"] != "0,1" || e.Headers["x-secret"] != "" || e.Headers["x-dest"] != "primary" {
		t.Errorf("request headers at the backend: %v", e.Headers)
	}
	if hdr.Get("cache-control") != "no-store" || hdr.Get("x-backend") != "" || hdr.Get("x-served-by") != "primary" {
		t.Errorf("response headers: %v", hdr)
	}

	// CORS: preflights are answered at the gateway; actual responses decorated.
	before := primary.Hits.Load()
	code, hdr, _ = do(t, http.DefaultClient, "OPTIONS", p.URL(80)+"/cors", map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"})
	if code != 200 || hdr.Get("access-control-allow-origin") != "https://app.example.com" || hdr.Get("access-control-allow-methods") != "GET,POST" ||
		hdr.Get("access-control-max-age") != "86400" || hdr.Get("access-control-allow-credentials") != "true" || primary.Hits.Load() != before {
		t.Errorf("preflight: %d %v (backend hit: %v)", code, hdr, primary.Hits.Load() != before)
	}
	_, hdr, _ = do(t, http.DefaultClient, "GET", p.URL(80)+"/cors", map[string]string{"Origin": "https://app.example.com"})
	if hdr.Get("access-control-allow-origin") != "https://app.example.com" {
		t.Errorf("actual CORS response: %v", hdr)
	}
	_, hdr, _ = do(t, http.DefaultClient, "GET", p.URL(80)+"/cors", map[string]string{"Origin": "https://evil.example.com"})
	if hdr.Get("access-control-allow-origin") != "" {
		t.Errorf("a foreign origin was allowed: %v", hdr)
	}
}

func jsonUnmarshal(s string, v any) { _ = json.Unmarshal([]byte(s), v) }
