//go:build linux

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/portico-gateway/portico/internal/testpki"
)

func version(body string) string {
	var v struct {
		Version string `json:"version"`
	}
	json.Unmarshal([]byte(body), &v)
	return v.Version
}

func httpPort(name string, port, target int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: intstr.FromInt32(target), Protocol: corev1.ProtocolTCP}
}

func caPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(testpki.Read("ca.crt"))
	return p
}

func withinBinomial(t *testing.T, what string, got, n int, q float64) {
	t.Helper()
	mean, sd := float64(n)*q, math.Sqrt(float64(n)*q*(1-q))
	if math.Abs(float64(got)-mean) > 5*sd {
		t.Errorf("%s: %d of %d, expected %.0f ± %.0f", what, got, n, mean, 5*sd)
	}
}

// TestSeed001ThreeProtocols: one Gateway with HTTP 80, HTTPS 443 (SIMPLE,
// file certificates) and MySQL on 3306; the counter VirtualService names
// the Gateway by FQDN; a TCP VirtualService routes 3306.
func TestSeed001ThreeProtocols(t *testing.T) {
	needHarness(t)
	certs := filepath.Join(h.work, "ingressgateway-certs")
	os.MkdirAll(certs, 0o755)
	os.WriteFile(filepath.Join(certs, "tls.crt"), testpki.Read("server.crt"), 0o644)
	os.WriteFile(filepath.Join(certs, "tls.key"), testpki.Read("server.key"), 0o600)
	counter := h.startPod(t, "default", "counter-1", map[string]string{"app": "counter"}, "v1")
	mysql := h.startPod(t, "default", "mysql-1", map[string]string{"app": "mysql"}, "v1")
	h.service(t, "default", "counter", []corev1.ServicePort{httpPort("http", 80, 8080)}, counter)
	h.service(t, "default", "mysql", []corev1.ServicePort{httpPort("tcp-mysql", 3306, 3306)}, mysql)
	h.apply(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: default-gateway
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - hosts:
    - '*'
    port:
      name: http
      number: 80
      protocol: HTTP
  - hosts:
    - '*'
    port:
      name: https
      number: 443
      protocol: HTTPS
    tls:
      mode: SIMPLE
      privateKey: %[1]s/tls.key
      serverCertificate: %[1]s/tls.crt
  - hosts:
    - '*'
    port:
      name: mysql
      number: 3306
      protocol: TCP
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: counter
spec:
  gateways:
  - default-gateway.istio-system.svc.cluster.local
  hosts:
  - counter.lab.example.com
  http:
  - match:
    - uri:
        prefix: /
    route:
    - destination:
        host: counter
        port:
          number: 80
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: mysql
spec:
  gateways:
  - default-gateway.istio-system.svc.cluster.local
  hosts:
  - '*'
  tcp:
  - match:
    - port: 3306
    route:
    - destination:
        host: mysql
        port:
          number: 3306
`, certs))
	eventually(t, "HTTP through the gateway", 30*time.Second, func() error {
		code, body, err := h.httpGet(80, "counter.lab.example.com", "/", nil)
		if err != nil {
			return err
		}
		if code != 200 || !strings.Contains(body, `"service":"counter-1"`) {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	eventually(t, "HTTPS through the gateway", 15*time.Second, func() error {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.ports[443]), &tls.Config{ServerName: "counter.lab.example.com", RootCAs: caPool()})
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: counter.lab.example.com\r\nConnection: close\r\n\r\n")
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			return fmt.Errorf("%q", buf[:n])
		}
		return nil
	})
	eventually(t, "MySQL-style TCP through the gateway", 15*time.Second, func() error {
		banner, err := h.tcpGreeting(3306)
		if err != nil {
			return err
		}
		if !strings.Contains(banner, "mysql-1") {
			return fmt.Errorf("banner %q", banner)
		}
		return nil
	})
	eventually(t, "the VirtualService's status", 30*time.Second, func() error {
		st := h.istioStatus(t, "VirtualService", "default", "counter")
		if c := condition(st, "Accepted"); c == nil || c["status"] != "True" || st["observedGeneration"] != "1" {
			return fmt.Errorf("status %v", st)
		}
		return nil
	})
	// The seed's debugging command.
	dump, err := h.admin("/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	var cd struct {
		Configs []map[string]any `json:"configs"`
	}
	json.Unmarshal([]byte(dump), &cd)
	found := false
	for _, rc := range cd.Configs[3]["dynamic_route_configs"].([]any) {
		for _, vh := range rc.(map[string]any)["route_config"].(map[string]any)["virtual_hosts"].([]any) {
			if vh.(map[string]any)["name"] == "counter.lab.example.com:80" {
				found = true
			}
		}
	}
	if !found {
		t.Error(".configs[3].dynamic_route_configs[].route_config.virtual_hosts[] lacks counter.lab.example.com:80")
	}
}

// TestSeed002Canary: subsets by pod labels; 100/0 → 0/100 → 75/25 →
// canary deleted → round robin over every endpoint.
func TestSeed002Canary(t *testing.T) {
	needHarness(t)
	v1 := h.startPod(t, "default", "rating-v1", map[string]string{"app": "rating", "app.kubernetes.io/version": "v1.0.0"}, "v1")
	v2 := h.startPod(t, "default", "rating-v2", map[string]string{"app": "rating", "app.kubernetes.io/version": "v2.0.0"}, "v2")
	h.service(t, "default", "rating", []corev1.ServicePort{httpPort("http", 8080, 8080)}, v1, v2)
	canary := func(w1, w2 int) string {
		return fmt.Sprintf(`
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: rating
spec:
  hosts:
  - rating.example.com
  gateways: [rating-gateway]
  http:
  - route:
    - destination:
        host: rating
        subset: version-v1
      weight: %d
    - destination:
        host: rating
        subset: version-v2
      weight: %d
`, w1, w2)
	}
	h.apply(t, `
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: rating-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [rating.example.com]
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: rating
spec:
  host: rating
  subsets:
  - labels:
      app.kubernetes.io/version: v1.0.0
    name: version-v1
  - labels:
      app.kubernetes.io/version: v2.0.0
    name: version-v2
`+canary(100, 0))
	only := func(want string) func() error {
		return func() error {
			for i := 0; i < 20; i++ {
				code, body, err := h.httpGet(80, "rating.example.com", "/", nil)
				if err != nil {
					return err
				}
				if code != 200 || version(body) != want {
					return fmt.Errorf("request %d: %d %s", i, code, body)
				}
			}
			return nil
		}
	}
	eventually(t, "all traffic on v1", 30*time.Second, only("v1"))
	// The fallback route, newer than the canary: it takes over when the
	// canary goes (older VirtualServices' routes come first).
	h.apply(t, `
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: rating-default
spec:
  hosts: [rating.example.com]
  gateways: [rating-gateway]
  http:
  - route:
    - destination: {host: rating}
`)
	h.apply(t, canary(0, 100))
	eventually(t, "all traffic on v2", 30*time.Second, only("v2"))
	h.apply(t, canary(75, 25))
	eventually(t, "the 75/25 split to start", 30*time.Second, func() error {
		_, body, err := h.httpGet(80, "rating.example.com", "/", nil)
		if err != nil || version(body) != "v1" {
			return fmt.Errorf("still v2")
		}
		return nil
	})
	counts := map[string]int{}
	for i := 0; i < 1000; i++ {
		_, body, err := h.httpGet(80, "rating.example.com", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[version(body)]++
	}
	withinBinomial(t, "75/25: requests on v2", counts["v2"], 1000, 0.25)
	h.delete(t, "networking.istio.io/v1alpha3", "VirtualService", "default", "rating")
	eventually(t, "round robin over both versions", 30*time.Second, func() error {
		counts := map[string]int{}
		for i := 0; i < 40; i++ {
			_, body, err := h.httpGet(80, "rating.example.com", "/", nil)
			if err != nil {
				return err
			}
			counts[version(body)]++
		}
		if counts["v1"] != 20 || counts["v2"] != 20 {
			return fmt.Errorf("counts %v", counts)
		}
		return nil
	})
}

// TestSeed004HeaderRouting: some users (by header) get v2.
func TestSeed004HeaderRouting(t *testing.T) {
	needHarness(t)
	v1 := h.startPod(t, "springistiodemo", "springbootapp-v1", map[string]string{"app": "springbootapp", "version": "v1"}, "v1")
	v2 := h.startPod(t, "springistiodemo", "springbootapp-v2", map[string]string{"app": "springbootapp", "version": "v2"}, "v2")
	h.service(t, "springistiodemo", "springbootapp", []corev1.ServicePort{httpPort("http", 8080, 8080)}, v1, v2)
	h.apply(t, `
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: springbootapp-gateway
  namespace: springistiodemo
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "springbootapp.example.com"
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: springbootapp
  namespace: springistiodemo
spec:
  host: springbootapp
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: springbootapp
  namespace: springistiodemo
spec:
  hosts:
  - "springbootapp.example.com"
  gateways:
  - springbootapp-gateway
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: springbootapp
        subset: v2
  - route:
    - destination:
        host: springbootapp
        subset: v1
`)
	eventually(t, "header-based routing", 30*time.Second, func() error {
		for i := 0; i < 10; i++ {
			_, body, err := h.httpGet(80, "springbootapp.example.com", "/hello", map[string]string{"end-user": "jason"})
			if err != nil || version(body) != "v2" {
				return fmt.Errorf("jason got %s (%v)", body, err)
			}
			_, body, err = h.httpGet(80, "springbootapp.example.com", "/hello", nil)
			if err != nil || version(body) != "v1" {
				return fmt.Errorf("others got %s (%v)", body, err)
			}
		}
		return nil
	})
}

// TestBadInputIsReportedAndNothingBreaks: a VirtualService naming a
// missing Gateway and one with an invalid regex get status conditions,
// while every existing route keeps serving.
func TestBadInputIsReportedAndNothingBreaks(t *testing.T) {
	needHarness(t)
	ensureCounter(t)
	stop, _, failures := requestLoop(t, "counter.lab.example.com")
	h.apply(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-gateway}
spec:
  hosts: [bad.example.com]
  gateways: [no-such-gateway]
  http: [{route: [{destination: {host: counter}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-regex}
spec:
  hosts: [regex.example.com]
  gateways: [istio-system/default-gateway]
  http:
  - match: [{uri: {regex: "/(unclosed"}}]
    route: [{destination: {host: counter}}]
`)
	eventually(t, "GatewayNotFound on bad-gateway", 30*time.Second, func() error {
		c := condition(h.istioStatus(t, "VirtualService", "default", "bad-gateway"), "Accepted")
		if c == nil || c["status"] != "False" || c["reason"] != "GatewayNotFound" {
			return fmt.Errorf("%v", c)
		}
		return nil
	})
	eventually(t, "InvalidSpec on bad-regex", 30*time.Second, func() error {
		st := h.istioStatus(t, "VirtualService", "default", "bad-regex")
		c := condition(st, "Accepted")
		if c == nil || c["status"] != "False" || c["reason"] != "InvalidSpec" {
			return fmt.Errorf("%v", c)
		}
		msgs, _ := st["validationMessages"].([]any)
		if len(msgs) == 0 || !strings.Contains(fmt.Sprint(msgs), "invalid regular expression") {
			return fmt.Errorf("validationMessages %v", msgs)
		}
		return nil
	})
	if n := stop(); n == 0 || failures.Load() > 0 {
		t.Fatalf("%d requests failed (of %d) while bad input was applied", failures.Load(), n)
	}

	// Statuses are written only when they change: an unrelated change
	// rebuilds everything but leaves bad-gateway's object untouched.
	rv := h.istioObject(t, "VirtualService", "default", "bad-gateway").GetResourceVersion()
	h.apply(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unrelated}
spec:
  hosts: [unrelated.example.com]
  gateways: [istio-system/default-gateway]
  http: [{route: [{destination: {host: counter}}]}]
`)
	eventually(t, "the unrelated route and its status", 30*time.Second, func() error {
		if code, _, err := h.httpGet(80, "unrelated.example.com", "/", nil); err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		if c := condition(h.istioStatus(t, "VirtualService", "default", "unrelated"), "Accepted"); c == nil || c["status"] != "True" {
			return fmt.Errorf("unrelated: %v", c)
		}
		return nil
	})
	if got := h.istioObject(t, "VirtualService", "default", "bad-gateway").GetResourceVersion(); got != rv {
		t.Errorf("bad-gateway was rewritten (resourceVersion %s → %s) although its status did not change", rv, got)
	}
}

// TestGatewayServicePortsFollowGateways: a managed gateway Service gains
// the ports Gateways open (with Istio's classic node ports) and loses them
// when the servers go; the Gateway's status says where it is exposed.
func TestGatewayServicePortsFollowGateways(t *testing.T) {
	needHarness(t)
	ctx := context.Background()
	svc := &corev1.Service{}
	svc.Name, svc.Namespace = "istio-ingressgateway", "istio-system"
	svc.Annotations = map[string]string{"portico.io/manage-ports": "true"}
	svc.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"istio": "ingressgateway"},
		Ports: []corev1.ServicePort{{Name: "status-port", Port: 15021, TargetPort: intstr.FromInt32(15021)}}}
	if err := h.client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	gw := func(extra string) string {
		return `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ports-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [ports.example.com]
` + extra
	}
	h.apply(t, gw(`  - port: {number: 8080, name: http-alt, protocol: HTTP}
    hosts: [ports.example.com]
`))
	ports := func() map[int32]int32 {
		s := &corev1.Service{}
		if err := h.client.Get(ctx, types.NamespacedName{Namespace: "istio-system", Name: "istio-ingressgateway"}, s); err != nil {
			t.Fatal(err)
		}
		out := map[int32]int32{}
		for _, p := range s.Spec.Ports {
			out[p.Port] = p.NodePort
		}
		return out
	}
	// 31380 is in the API server's dynamic node-port band: a Service an
	// earlier test made may hold it, and then the API server chooses.
	want80 := func() int32 {
		var list corev1.ServiceList
		if err := h.client.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			for _, p := range s.Spec.Ports {
				if p.NodePort == 31380 && (s.Namespace != "istio-system" || s.Name != "istio-ingressgateway") {
					return 0 // any
				}
			}
		}
		return 31380
	}
	var np80 int32
	eventually(t, "the Service to gain 80 (31380) and 8080", 30*time.Second, func() error {
		p := ports()
		if w := want80(); p[80] == 0 || (w != 0 && p[80] != w) || p[8080] == 0 || p[15021] == 0 {
			return fmt.Errorf("ports %v", p)
		}
		np80 = p[80]
		return nil
	})
	eventually(t, "the Gateway's Exposed condition", 30*time.Second, func() error {
		c := condition(h.istioStatus(t, "Gateway", "istio-system", "ports-gateway"), "Exposed")
		if c == nil || c["status"] != "True" || !strings.Contains(fmt.Sprint(c["message"]), fmt.Sprintf("80 → Service istio-system/istio-ingressgateway nodePort %d", np80)) {
			return fmt.Errorf("%v", c)
		}
		return nil
	})
	h.apply(t, gw(""))
	eventually(t, "the Service to lose 8080", 30*time.Second, func() error {
		p := ports()
		if _, ok := p[8080]; ok || p[80] != np80 || p[15021] == 0 {
			return fmt.Errorf("ports %v", p)
		}
		return nil
	})
}

// TestSecretRotationThroughKubernetes: updating a credentialName Secret
// rotates the certificate served, without restarting anything.
func TestSecretRotationThroughKubernetes(t *testing.T) {
	needHarness(t)
	ensureCounter(t)
	secret := func(cert, key string) string {
		q := func(name string) string { b, _ := json.Marshal(string(testpki.Read(name))); return string(b) }
		return fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: secure-cert, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: %s, tls.key: %s}
`, q(cert), q(key))
	}
	h.apply(t, secret("server.crt", "server.key")+`
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-secure, protocol: HTTPS}
    hosts: [secure.example.com]
    tls: {mode: SIMPLE, credentialName: secure-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure}
spec:
  hosts: [secure.example.com]
  gateways: [istio-system/secure-gateway]
  http: [{route: [{destination: {host: counter}}]}]
`)
	serial := func() (string, error) {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.ports[443]), &tls.Config{ServerName: "secure.example.com", RootCAs: caPool()})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
	}
	want := func(s string) func() error {
		return func() error {
			got, err := serial()
			if err != nil {
				return err
			}
			if got != s {
				return fmt.Errorf("serial %s", got)
			}
			return nil
		}
	}
	eventually(t, "the credential's certificate", 30*time.Second, want("64"))
	h.apply(t, secret("server-rotated.crt", "server-rotated.key"))
	eventually(t, "the rotated certificate", 30*time.Second, want("65"))
}

// ensureCounter makes sure seed 001's counter service is routed (when a
// test runs alone).
func ensureCounter(t *testing.T) {
	t.Helper()
	if code, _, err := h.httpGet(80, "counter.lab.example.com", "/", nil); err == nil && code == 200 {
		return
	}
	TestSeed001ThreeProtocols(t)
}

// requestLoop sends requests until stopped; stop returns how many were sent.
func requestLoop(t *testing.T, host string) (stop func() int64, sent, failures *atomic.Int64) {
	sent, failures = &atomic.Int64{}, &atomic.Int64{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var firstMu sync.Mutex
	var first string
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(2 * time.Minute) // every loop stops by itself
			for time.Now().Before(deadline) {
				select {
				case <-done:
					return
				default:
				}
				code, body, err := h.httpGet(80, host, "/", nil)
				sent.Add(1)
				if err != nil || code != 200 {
					failures.Add(1)
					firstMu.Lock()
					if first == "" {
						first = fmt.Sprintf("%d %s %v", code, body, err)
					}
					firstMu.Unlock()
				}
			}
		}()
	}
	return func() int64 {
		close(done)
		wg.Wait()
		if first != "" {
			t.Logf("first failure: %s", first)
		}
		return sent.Load()
	}, sent, failures
}

// waitSent waits until a request loop has sent n requests.
func waitSent(t *testing.T, sent *atomic.Int64, n int64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d requests", n), time.Minute, func() error {
		if got := sent.Load(); got < n {
			return fmt.Errorf("%d sent", got)
		}
		return nil
	})
}

// TestControllerRestartUnderLoad kills the controller during a request
// loop and starts it again: the proxy keeps serving what it has, no
// request fails, and it picks up changes once the controller is back.
func TestControllerRestartUnderLoad(t *testing.T) {
	needHarness(t)
	ensureCounter(t)
	stop, sent, failures := requestLoop(t, "counter.lab.example.com")
	// Observe the loop against a healthy system first, then again while
	// the proxy has no control plane.
	waitSent(t, sent, 200)
	h.controller.kill()
	eventually(t, "the proxy to notice the control plane is gone", 30*time.Second, func() error {
		st, err := h.admin("/stats?filter=control_plane.connected_state")
		if err != nil || !strings.Contains(st, "control_plane.connected_state: 0") {
			return fmt.Errorf("%q %v", st, err)
		}
		return nil
	})
	waitSent(t, sent, sent.Load()+200)
	if err := h.startController(); err != nil {
		t.Fatal(err)
	}
	h.apply(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: after-restart}
spec:
  hosts: [after.example.com]
  gateways: [istio-system/default-gateway]
  http: [{route: [{destination: {host: counter}}]}]
`)
	eventually(t, "a route created after the restart", 60*time.Second, func() error {
		code, _, err := h.httpGet(80, "after.example.com", "/", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})
	if n := stop(); n == 0 || failures.Load() > 0 {
		t.Fatalf("%d of %d requests failed across a controller restart", failures.Load(), n)
	}
}

// TestControllerProbesAndMetrics: the probes the Deployments use (the
// controller's and the proxy's status port) and the Prometheus endpoints
// answer, with Portico's own metrics.
func TestControllerProbesAndMetrics(t *testing.T) {
	needHarness(t)
	get := func(url string) (int, string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	for _, url := range []string{h.healthAddr + "/healthz", h.healthAddr + "/readyz", h.proxyStatus + "/healthz/ready"} {
		eventually(t, url, 30*time.Second, func() error {
			code, body, err := get("http://" + url)
			if err != nil || code != 200 {
				return fmt.Errorf("%d %s %v", code, body, err)
			}
			return nil
		})
	}
	code, body, err := get("http://" + h.metricsAddr + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, m := range []string{"portico_resources ", "portico_build_duration_seconds_count", "controller_runtime_"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	code, body, err = get("http://" + h.proxyStatus + "/stats/prometheus")
	if err != nil || code != 200 || !strings.Contains(body, "envoy_cluster_upstream_rq_total") {
		t.Errorf("proxy /stats/prometheus: %d %v\n%.300s", code, err, body)
	}
}
