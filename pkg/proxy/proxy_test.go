package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/internal/testpki"
)

const gateway80 = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
`

func get(t *testing.T, c *http.Client, url, host string, hdr map[string]string) (*http.Response, testenv.Echo) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", url, host, err)
	}
	defer resp.Body.Close()
	var e testenv.Echo
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return resp, e
}

func TestHTTPRouting(t *testing.T) {
	for _, sotw := range []bool{false, true} {
		t.Run(map[bool]string{false: "delta", true: "sotw"}[sotw], func(t *testing.T) {
			testHTTPRouting(t, sotw)
		})
	}
}

func testHTTPRouting(t *testing.T, sotw bool) {
	v1, v2, other := testenv.StartBackend(t, "v1"), testenv.StartBackend(t, "v2"), testenv.StartBackend(t, "other")
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, gateway80+`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: [app.example.com, '*.wild.example.com']
  gateways: [istio-system/gw]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: app, subset: v2}}]
  - match: [{uri: {prefix: /other}}]
    rewrite: {uri: /rewritten}
    route: [{destination: {host: other}}]
  - match: [{uri: {exact: /redirect}}]
    redirect: {uri: /new, authority: new.example.com}
  - match: [{uri: {exact: /health}}]
    directResponse: {status: 200, body: {string: "healthy"}}
  - match: [{uri: {prefix: /empty}}]
    route: [{destination: {host: app, subset: nobody}}]
  - match: [{uri: {regex: '/items/[0-9]+'}, method: {exact: DELETE}}]
    route: [{destination: {host: app, subset: v2}}]
  - route: [{destination: {host: app, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: app}
spec:
  host: app
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: nobody, labels: {version: none}}
`+testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", v1, v2)+
		testenv.ServiceEntry("other", "other.default.svc.cluster.local", 80, "HTTP", other))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}, SOTW: sotw})
	p.WaitReady(t)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	url := p.URL(80)

	cases := []struct {
		name, path, host string
		hdr              map[string]string
		method           string
		status           int
		backend          string
		flag             string
	}{
		{"default route", "/", "app.example.com", nil, "GET", 200, "v1", ""},
		{"port in Host is ignored", "/", "app.example.com:80", nil, "GET", 200, "v1", ""},
		{"wildcard host", "/x", "a.wild.example.com", nil, "GET", 200, "v1", ""},
		{"header match", "/", "app.example.com", map[string]string{"end-user": "jason"}, "GET", 200, "v2", ""},
		{"rewrite", "/other/path?q=1", "app.example.com", nil, "GET", 200, "other", ""},
		{"regex and method", "/items/42", "app.example.com", nil, "DELETE", 200, "v2", ""},
		{"regex, other method", "/items/42", "app.example.com", nil, "GET", 200, "v1", ""},
		{"redirect", "/redirect", "app.example.com", nil, "GET", 301, "", ""},
		{"direct response", "/health", "app.example.com", nil, "GET", 200, "", ""},
		{"no endpoints", "/empty", "app.example.com", nil, "GET", 503, "", "UH"},
		{"unknown host", "/", "nobody.example.com", nil, "GET", 404, "", "NR"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, url+tc.path, nil)
		req.Host = tc.host
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e testenv.Echo
		json.Unmarshal(body, &e)
		if resp.StatusCode != tc.status || tc.backend != "" && e.Backend != tc.backend {
			t.Errorf("%s: status %d backend %q, want %d %q (body %s)", tc.name, resp.StatusCode, e.Backend, tc.status, tc.backend, body)
		}
		switch tc.name {
		case "rewrite":
			if e.Path != "/rewritten/path?q=1" {
				t.Errorf("rewrite: upstream saw %s", e.Path)
			}
		case "redirect":
			if loc := resp.Header.Get("Location"); loc != "http://new.example.com/new" {
				t.Errorf("redirect location %q", loc)
			}
		case "direct response":
			if string(body) != "healthy" {
				t.Errorf("direct response body %q", body)
			}
		case "default route":
			// Envoy's edge headers.
			if e.Headers["x-forwarded-for"] != "127.0.0.1" || e.Headers["x-forwarded-proto"] != "http" || len(e.Headers["x-request-id"]) != 36 {
				t.Errorf("forwarding headers: %v", e.Headers)
			}
			if e.Host != "app.example.com" || resp.Header.Get("server") != "istio-envoy" || resp.Header.Get("x-envoy-upstream-service-time") == "" {
				t.Errorf("host %q, response headers %v", e.Host, resp.Header)
			}
		case "port in Host is ignored":
			// ignore_port_in_host_matching: the port plays no part in
			// choosing the virtual host and is forwarded unchanged, as
			// Istio's gateways and Gateway API conformance expect.
			if e.Host != "app.example.com:80" {
				t.Errorf("upstream Host %q, want the client's app.example.com:80", e.Host)
			}
		}
	}
	p.Proxy.Flush()
	log := p.Log.String()
	for _, want := range []string{`"GET /empty HTTP/1.1" 503 UH`, `"GET / HTTP/1.1" 404 NR`, `"DELETE /items/42 HTTP/1.1" 200 -`} {
		if !strings.Contains(log, want) {
			t.Errorf("access log lacks %q:\n%s", want, log)
		}
	}
}

func TestTLSTerminationPassthroughAndTCP(t *testing.T) {
	dir := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key", "other.crt", "other.key", "ca.crt")
	web := testenv.StartBackend(t, "web")
	tlsBackend := testenv.StartTLSBackend(t, "passthrough")
	echo := startEcho(t)
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*.example.com']
    tls: {mode: SIMPLE, serverCertificate: %[1]s/server.crt, privateKey: %[1]s/server.key}
  - port: {number: 443, name: https-other, protocol: HTTPS}
    hosts: [other.test]
    tls: {mode: SIMPLE, serverCertificate: %[1]s/other.crt, privateKey: %[1]s/other.key}
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: [passthrough.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 3306, name: mysql, protocol: TCP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [app.example.com, other.test]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: passthrough}
spec:
  hosts: [passthrough.example.com]
  gateways: [istio-system/gw]
  tls:
  - match: [{sniHosts: [passthrough.example.com]}]
    route: [{destination: {host: tlsbackend}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  tcp: [{route: [{destination: {host: mysql}}]}]
`, dir)+testenv.ServiceEntry("web", "web.default.svc.cluster.local", 80, "HTTP", web)+
		testenv.ServiceEntry("tlsbackend", "tlsbackend.default.svc.cluster.local", 443, "TLS", tlsBackend)+
		testenv.ServiceEntry("mysql", "mysql.default.svc.cluster.local", 3306, "TCP", echo))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{443, 8443, 3306}})
	p.WaitReady(t)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(testpki.Read("ca.crt"))
	dial := func(sni string, alpn ...string) *tls.ConnectionState {
		conn, err := tls.Dial("tcp", p.Addr(443), &tls.Config{ServerName: sni, RootCAs: pool, NextProtos: alpn})
		if err != nil {
			t.Fatalf("TLS to %s: %v", sni, err)
		}
		defer conn.Close()
		cs := conn.ConnectionState()
		return &cs
	}
	if cs := dial("app.example.com"); cs.PeerCertificates[0].Subject.CommonName != "counter.lab.example.com" {
		t.Errorf("*.example.com served %s", cs.PeerCertificates[0].Subject.CommonName)
	}
	if cs := dial("other.test"); cs.PeerCertificates[0].Subject.CommonName != "other.test" {
		t.Errorf("other.test served %s", cs.PeerCertificates[0].Subject.CommonName)
	}
	if cs := dial("app.example.com", "h2", "http/1.1"); cs.NegotiatedProtocol != "h2" {
		t.Errorf("ALPN negotiated %q", cs.NegotiatedProtocol)
	}
	if _, err := tls.Dial("tcp", p.Addr(443), &tls.Config{ServerName: "unknown.org", RootCAs: pool}); err == nil {
		t.Error("a handshake for a host no server serves succeeded")
	}

	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", p.Addr(443))
			}}
		if h2 {
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetHTTP2(true)
		}
		_, e := get(t, &http.Client{Transport: tr}, "https://app.example.com/", "app.example.com", nil)
		want := map[bool]string{false: "HTTP/1.1", true: "HTTP/1.1"}[h2] // upstream is HTTP/1.1 either way
		if e.Backend != "web" || e.Proto != want || e.Headers["x-forwarded-proto"] != "https" {
			t.Errorf("https (h2=%v): %+v", h2, e)
		}
		// A GET without a body must not grow one on the way (an HTTP/2
		// stream ended by its HEADERS has no DATA to forward).
		if len(e.TransferEncoding) > 0 || e.ContentLength != 0 {
			t.Errorf("https (h2=%v): a GET reached the backend with a body: %v %d", h2, e.TransferEncoding, e.ContentLength)
		}
	}

	// Passthrough: the client's TLS session ends at the backend itself.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "passthrough.example.com"},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", p.Addr(8443))
		}}
	if _, e := get(t, &http.Client{Transport: tr}, "https://passthrough.example.com/", "passthrough.example.com", nil); e.Backend != "passthrough" {
		t.Errorf("passthrough reached %q", e.Backend)
	}
	if c, err := tls.Dial("tcp", p.Addr(8443), &tls.Config{InsecureSkipVerify: true}); err == nil {
		c.Close()
		t.Error("passthrough without SNI should find no filter chain")
	}

	// TCP: the MySQL-style port.
	conn, err := net.Dial("tcp", p.Addr(3306))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PING\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "PING\n" {
		t.Errorf("TCP echo: %q %v", line, err)
	}
}

// startEcho runs a TCP line echo backend.
func startEcho(t *testing.T) *testenv.Backend {
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
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return &testenv.Backend{Name: "echo", Addr: lis.Addr().String(), Port: uint32(lis.Addr().(*net.TCPAddr).Port)}
}

func TestNACKKeepsLastGoodConfig(t *testing.T) {
	v1 := testenv.StartBackend(t, "v1")
	cp := testenv.StartControlPlane(t, "")
	yaml := gateway80 + `
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: app}}]}]
` + testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", v1)
	cp.Publish(t, yaml)
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)

	// A cluster with active health checking: valid Envoy, but the Go proxy
	// does not implement it, so it must say so instead of ignoring it.
	tr, _ := testenv.Build(t, yaml, testenv.Ingress)
	c := proto.Clone(tr.Clusters[0]).(*clusterv3.Cluster)
	c.HealthChecks = []*corev3.HealthCheck{{Timeout: durationpb.New(time.Second), Interval: durationpb.New(time.Second),
		UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
		HealthChecker: &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}}}
	tr.Clusters[0] = c
	cp.PublishResources(t, tr)
	testenv.WaitFor(t, "the NACK to reach the control plane", func() bool {
		for _, n := range cp.Server.Nodes() {
			if strings.Contains(n.Nacked[resourcev3.ClusterType], "health_checks") {
				return true
			}
		}
		return false
	})
	for i := 0; i < 5; i++ {
		if resp, e := get(t, http.DefaultClient, p.URL(80)+"/", "app.example.com", nil); resp.StatusCode != 200 || e.Backend != "v1" {
			t.Fatalf("after a NACK the last good config must keep serving: %d %q", resp.StatusCode, e.Backend)
		}
	}
	resp, err := http.Get(p.Admin.URL + "/config_dump?resource=dynamic_active_clusters")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "error_state") || strings.Contains(string(body), "health_checks\":") {
		t.Errorf("config_dump should show the rejection, not the rejected config:\n%.600s", body)
	}
}

func TestControllerRestartKeepsServing(t *testing.T) {
	v1, v2 := testenv.StartBackend(t, "v1"), testenv.StartBackend(t, "v2")
	cp := testenv.StartControlPlane(t, "")
	addr := cp.Addr
	route := func(backend string) string {
		return gateway80 + `
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: app, subset: ` + backend + `}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: app}
spec: {host: app, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}
` + testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", v1, v2)
	}
	cp.Publish(t, route("v1"))
	p := testenv.StartProxy(t, addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	cp.Stop()
	for i := 0; i < 10; i++ {
		if _, e := get(t, http.DefaultClient, p.URL(80)+"/", "x", nil); e.Backend != "v1" {
			t.Fatalf("without a controller the proxy must keep serving, got %q", e.Backend)
		}
	}
	cp2 := testenv.StartControlPlane(t, addr)
	cp2.Publish(t, route("v2"))
	testenv.WaitFor(t, "the proxy to reconnect and apply the new config", func() bool {
		_, e := get(t, http.DefaultClient, p.URL(80)+"/", "x", nil)
		return e.Backend == "v2"
	})
}

// TestConfigPushUnderLoad: configuration keeps changing — routes, weights,
// cluster policies, endpoints, an HTTPS server added to and removed from a
// listener — while clients send requests; not one request may fail.
func TestConfigPushUnderLoad(t *testing.T) {
	dir := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key")
	v1, v2 := testenv.StartBackend(t, "v1"), testenv.StartBackend(t, "v2")
	cp := testenv.StartControlPlane(t, "")
	version := func(i int) string {
		y := fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
%s---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /v%d}}]
    route: [{destination: {host: app, subset: v1}}]
  - route:
    - {destination: {host: app, subset: v1}, weight: %d}
    - {destination: {host: app, subset: v2}, weight: %d}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: app}
spec:
  host: app
  trafficPolicy: {connectionPool: {tcp: {maxConnections: %d}}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`, map[bool]string{true: fmt.Sprintf("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE, serverCertificate: %s/server.crt, privateKey: %s/server.key}\n", dir, dir), false: ""}[i%2 == 1],
			i, 100-10*(i%10), 10*(i%10), 1000+i)
		backends := []*testenv.Backend{v1, v2}
		return y + testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", backends...)
	}
	cp.Publish(t, version(0))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80, 443}, DrainTime: time.Second})
	p.WaitReady(t)

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", p.URL(80)+"/", nil)
				req.Host = "app.example.com"
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for i := 1; i <= 12; i++ {
		cp.Publish(t, version(i))
		before := ok.Load()
		testenv.WaitFor(t, "requests to flow after a push", func() bool { return ok.Load() > before+20 })
	}
	close(stop)
	wg.Wait()
	if failed.Load() > 0 {
		p.Proxy.Flush()
		var bad []string
		for _, l := range strings.Split(p.Log.String(), "\n") {
			if !strings.Contains(l, "\" 200 ") && l != "" {
				bad = append(bad, l)
			}
		}
		t.Fatalf("%d of %d requests failed across 12 config pushes; first: %v\n%s", failed.Load(), failed.Load()+ok.Load(), firstErr.Load(), strings.Join(bad, "\n"))
	}
	t.Logf("%d requests across 12 pushes, none failed", ok.Load())
	if v1.Hits.Load() == 0 || v2.Hits.Load() == 0 {
		t.Errorf("weights never moved traffic: v1=%d v2=%d", v1.Hits.Load(), v2.Hits.Load())
	}
}

func TestAdminInterface(t *testing.T) {
	v1 := testenv.StartBackend(t, "v1")
	cp := testenv.StartControlPlane(t, "")
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	getAdmin := func(path string) (int, string) {
		resp, err := http.Get(p.Admin.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := getAdmin("/ready"); code != 503 || !strings.Contains(body, "PRE_INITIALIZING") {
		t.Errorf("/ready before any configuration: %d %s", code, body)
	}
	cp.Publish(t, gateway80+`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: counter}
spec:
  hosts: [counter.lab.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: app}}]}]
`+testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", v1))
	p.WaitReady(t)
	if code, body := getAdmin("/ready"); code != 200 || strings.TrimSpace(body) != "LIVE" {
		t.Errorf("/ready: %d %s", code, body)
	}
	get(t, http.DefaultClient, p.URL(80)+"/", "counter.lab.example.com", nil)

	// The seed's jq path: .configs[3].dynamic_route_configs[].route_config.virtual_hosts[]
	_, body := getAdmin("/config_dump")
	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatal(err)
	}
	wantTypes := []string{"BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump", "SecretsConfigDump"}
	for i, w := range wantTypes {
		if typ, _ := dump.Configs[i]["@type"].(string); !strings.HasSuffix(typ, "envoy.admin.v3."+w) {
			t.Errorf("configs[%d] is %s, want %s", i, typ, w)
		}
	}
	rcs := dump.Configs[3]["dynamic_route_configs"].([]any)
	vhs := rcs[0].(map[string]any)["route_config"].(map[string]any)["virtual_hosts"].([]any)
	if name := vhs[0].(map[string]any)["name"]; name != "counter.lab.example.com:80" {
		t.Errorf("virtual host %v", name)
	}
	if _, body := getAdmin("/config_dump?resource=dynamic_listeners&name_regex=0.0.0.0_80"); !strings.Contains(body, "0.0.0.0_80") || strings.Contains(body, "BootstrapConfigDump") {
		t.Errorf("resource/name_regex filtering: %.300s", body)
	}
	if _, body := getAdmin("/listeners"); !strings.HasPrefix(body, "0.0.0.0_80::127.0.0.1:") && !strings.HasPrefix(body, "0.0.0.0_80::0.0.0.0:") {
		t.Errorf("/listeners: %s", body)
	}
	_, stats := getAdmin("/stats")
	for _, want := range []string{"http.outbound_0.0.0.0_80.downstream_rq_2xx: 1", "cluster.outbound|80||app.default.svc.cluster.local.upstream_rq_total: 1",
		"cluster.outbound|80||app.default.svc.cluster.local.upstream_cx_active: 1", "downstream_rq_total: 1"} {
		if !strings.Contains(stats, want) {
			t.Errorf("/stats lacks %q", want)
		}
	}
	if _, prom := getAdmin("/stats/prometheus"); !strings.Contains(prom, `envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||app.default.svc.cluster.local"} 1`) {
		t.Errorf("/stats/prometheus lacks tagged cluster stats")
	}
	if _, clusters := getAdmin("/clusters"); !strings.Contains(clusters, "::rq_success::1") {
		t.Errorf("/clusters: %s", clusters)
	}
	// The endpoints istioctl and Envoy users reach for, in Envoy's shapes.
	if code, help := getAdmin("/help"); code != 200 || !strings.Contains(help, "/reset_counters") || !strings.Contains(help, "/memory") {
		t.Errorf("/help: %d %s", code, help)
	}
	var mem map[string]string
	if _, body := getAdmin("/memory"); json.Unmarshal([]byte(body), &mem) != nil || mem["allocated"] == "" || mem["heap_size"] == "" {
		t.Errorf("/memory: %s", body)
	}
	if _, body := getAdmin("/runtime"); !json.Valid([]byte(body)) || !strings.Contains(body, `"layers"`) {
		t.Errorf("/runtime: %s", body)
	}
	var initDump struct {
		Unready []any `json:"unready_targets_dumps"`
	}
	if _, body := getAdmin("/init_dump"); json.Unmarshal([]byte(body), &initDump) != nil || len(initDump.Unready) != 0 {
		t.Errorf("/init_dump once ready: %q, want nothing unready", body)
	}
	if _, body := getAdmin("/stats?filter=upstream_rq_time"); !strings.Contains(body, "upstream_rq_time: P0(nan,") || !strings.Contains(body, " P99(nan,") {
		t.Errorf("/stats histograms lack Envoy's quantiles: %s", body)
	}
	var js struct {
		Stats []map[string]any `json:"stats"`
	}
	if _, body := getAdmin("/stats?format=json&filter=upstream_rq_time"); json.Unmarshal([]byte(body), &js) != nil || len(js.Stats) == 0 || js.Stats[len(js.Stats)-1]["histograms"] == nil {
		t.Errorf("/stats?format=json lacks the histograms entry: %s", body)
	}
	var sd struct {
		Configs []struct {
			Bootstrap struct {
				Node struct {
					Version struct {
						Version map[string]any `json:"version"`
					} `json:"user_agent_build_version"`
				} `json:"node"`
			} `json:"bootstrap"`
		} `json:"configs"`
	}
	if _, body := getAdmin("/config_dump"); json.Unmarshal([]byte(body), &sd) != nil || len(sd.Configs) == 0 || sd.Configs[0].Bootstrap.Node.Version.Version["minor_number"] == nil {
		t.Errorf("bootstrap node lacks user_agent_build_version (istioctl prints it as the Envoy version): %.400s", body)
	}
	if code, _ := getAdmin("/reset_counters"); code != 405 {
		t.Errorf("GET /reset_counters must require POST, got %d", code)
	}
	resp, _ := http.Post(p.Admin.URL+"/reset_counters", "", nil)
	resp.Body.Close()
	if _, stats := getAdmin("/stats"); !strings.Contains(stats, "cluster.outbound|80||app.default.svc.cluster.local.upstream_rq_total: 0\n") ||
		!strings.Contains(stats, "cluster.outbound|80||app.default.svc.cluster.local.upstream_cx_active: 1") {
		t.Errorf("after /reset_counters counters must be 0 and gauges kept")
	}
	if code, _ := getAdmin("/healthcheck/fail"); code != 405 {
		t.Errorf("GET /healthcheck/fail must require POST, got %d", code)
	}
	resp, _ = http.Post(p.Admin.URL+"/healthcheck/fail", "", nil)
	resp.Body.Close()
	if code, _ := getAdmin("/ready"); code != 503 {
		t.Errorf("/ready after /healthcheck/fail: %d", code)
	}
	resp, _ = http.Post(p.Admin.URL+"/healthcheck/ok", "", nil)
	resp.Body.Close()
	if _, info := getAdmin("/server_info"); !strings.Contains(info, `"state": "LIVE"`) {
		t.Errorf("/server_info: %.300s", info)
	}
	resp, _ = http.Post(p.Admin.URL+"/quitquitquit", "", nil)
	resp.Body.Close()
	testenv.WaitFor(t, "quitquitquit to stop the proxy", func() bool {
		_, err := net.DialTimeout("tcp", p.Addr(80), 100*time.Millisecond)
		return err != nil
	})
}

// TestTerminationDrain: told to stop, the proxy fails readiness at once but
// keeps serving for the termination drain — the request in flight
// completes, a client arriving late is still served and told to close —
// then exits.
func TestTerminationDrain(t *testing.T) {
	v1 := testenv.StartBackend(t, "v1")
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, gateway80+`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: app}}]}]
`+testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", v1))
	status := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	const drain = 1500 * time.Millisecond
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}, TerminationDrain: drain, StatusAddress: status})
	p.WaitReady(t)
	ready := func() int {
		resp, err := http.Get("http://" + status + "/healthz/ready")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := ready(); got != 200 {
		t.Fatalf("status port /healthz/ready before termination: %d", got)
	}

	keepAlive := &http.Client{Transport: &http.Transport{}}
	defer keepAlive.CloseIdleConnections()
	get(t, keepAlive, p.URL(80)+"/", "app.example.com", nil) // opens a pooled connection

	v1.Delay.Store(500)
	inflight := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest("GET", p.URL(80)+"/slow", nil)
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			t.Errorf("request in flight at termination: %v", err)
			inflight <- nil
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		inflight <- resp
	}()
	testenv.WaitFor(t, "the slow request to reach the backend", func() bool { return v1.Hits.Load() >= 2 })
	started := time.Now()
	done := p.Terminate()

	testenv.WaitFor(t, "readiness to fail", func() bool { return ready() == http.StatusServiceUnavailable })
	if resp := <-inflight; resp != nil && resp.StatusCode != 200 {
		t.Errorf("request in flight at termination: %d", resp.StatusCode)
	}
	v1.Delay.Store(0)
	// A pooled connection is served and told to close; a new connection
	// (a client the load balancer still sent) is accepted and served.
	resp, _ := get(t, keepAlive, p.URL(80)+"/", "app.example.com", nil)
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("during the drain a keep-alive request gets 200 and Connection: close, got %d close=%v", resp.StatusCode, resp.Close)
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, _ := get(t, fresh, p.URL(80)+"/", "app.example.com", nil); resp.StatusCode != 200 {
		t.Errorf("a new connection during the drain: %d", resp.StatusCode)
	}
	select {
	case <-done:
		if err := p.Err(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if took := time.Since(started); took < drain {
			t.Errorf("the proxy exited %v after termination, before its %v drain", took, drain)
		}
	case <-time.After(drain + 10*time.Second):
		t.Fatal("the proxy did not exit after its drain")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(80), time.Second); err == nil {
		t.Error("the listener still accepts after the proxy exited")
	}
}
