package proxy_test

import (
	"net/http"
	"testing"

	"github.com/portico-gateway/portico/internal/testenv"
)

// gatewayAPIHTTPGateway is a GatewayClass attached to the test proxy and
// a Gateway with one HTTP listener on port 80, for routes to attach to.
const gatewayAPIHTTPGateway = `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico, annotations: {portico.io/proxy-selector: istio=ingressgateway}}
spec: {controllerName: portico.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
`

// gatewayAPIInvalidBackends is an HTTPRoute whose rules mix valid and
// invalid backendRefs: Gateway API requires the invalid ones' share of
// the requests to get 500 while the valid ones keep serving theirs.
const gatewayAPIInvalidBackends = gatewayAPIHTTPGateway + `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mixed, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /mixed}}]
    backendRefs:
    - {name: rating, port: 80, weight: 1}
    - {name: nonexistent, port: 80, weight: 3}
    - {group: example.com, kind: Unknown, name: rating, port: 80, weight: 0}
  - matches: [{path: {type: PathPrefix, value: /none}}]
    backendRefs: [{name: nonexistent, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /valid}}]
    backendRefs: [{name: rating, port: 80}, {name: nonexistent, port: 80, weight: 0}]
`

// TestGatewayAPIInvalidBackendShareGets500 runs the conversion, the
// binder, the translator, xDS and the proxy end to end: a rule with a
// valid backend (weight 1) and an invalid one (weight 3) answers about
// 3/4 of its requests with 500 and sends the rest to the backend; a rule
// with only invalid backends answers 500 always; an invalid backend of
// weight 0 takes nothing.
func TestGatewayAPIInvalidBackendShareGets500(t *testing.T) {
	be := testenv.StartBackend(t, "v1")
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, gatewayAPIInvalidBackends+testenv.ServiceEntry("rating", "rating.default.svc.cluster.local", 80, "HTTP", be))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	c := ownClient(t)
	t.Cleanup(func() {
		if t.Failed() {
			p.Stop()
			t.Logf("access log:\n%s", p.Log.String())
		}
	})

	// Ready is the first configuration applied; the route table may
	// follow it.
	testenv.WaitFor(t, "the route table", func() bool {
		code, _, _ := do(t, c, "GET", p.URL(80)+"/valid", nil)
		return code == 200
	})
	be.Hits.Store(0)

	const n = 800
	fails := 0
	for i := 0; i < n; i++ {
		switch code, _, _ := do(t, c, "GET", p.URL(80)+"/mixed", nil); code {
		case 500:
			fails++
		case 200:
		default:
			t.Fatalf("/mixed: status %d, want 200 or 500", code)
		}
	}
	withinBinomial(t, "/mixed answered 500", fails, n, 0.75)
	if got := int(be.Hits.Load()); got != n-fails {
		t.Errorf("backend saw %d requests, want the %d that were not answered 500", got, n-fails)
	}

	for i := 0; i < 20; i++ {
		if code, _, _ := do(t, c, "GET", p.URL(80)+"/none", nil); code != 500 {
			t.Fatalf("/none (no valid backend): status %d, want 500", code)
		}
		if code, _, _ := do(t, c, "GET", p.URL(80)+"/valid", nil); code != 200 {
			t.Fatalf("/valid (invalid backend has weight 0): status %d, want 200", code)
		}
	}
}

// TestGatewayAPICORSPreflight: a Gateway API CORS filter end to end. A
// preflight is answered at the gateway with the expose headers too; with
// allowCredentials, wildcard methods and headers answer with what the
// preflight asked for (browsers ignore "*" there); a preflight from an
// origin not allowed is answered without CORS headers and never reaches
// the backend.
func TestGatewayAPICORSPreflight(t *testing.T) {
	be := testenv.StartBackend(t, "v1")
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, gatewayAPIHTTPGateway+`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /listed}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["https://www.foo.com"], allowMethods: [GET, OPTIONS], allowHeaders: [x-a], exposeHeaders: [x-b, x-c], maxAge: 60}
    backendRefs: [{name: rating, port: 80}]
  - matches: [{path: {value: /wild}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"], allowCredentials: true}
    backendRefs: [{name: rating, port: 80}]
`+testenv.ServiceEntry("rating", "rating.default.svc.cluster.local", 80, "HTTP", be))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	c := ownClient(t)
	testenv.WaitFor(t, "the route table", func() bool {
		code, _, _ := do(t, c, "GET", p.URL(80)+"/listed", nil)
		return code == 200
	})
	be.Hits.Store(0)

	code, hdr, _ := do(t, c, "OPTIONS", p.URL(80)+"/listed", map[string]string{"Origin": "https://www.foo.com", "Access-Control-Request-Method": "GET"})
	if code != 200 || hdr.Get("access-control-allow-origin") != "https://www.foo.com" || hdr.Get("access-control-expose-headers") != "x-b,x-c" ||
		hdr.Get("access-control-allow-methods") != "GET,OPTIONS" || hdr.Get("access-control-max-age") != "60" {
		t.Errorf("preflight: %d %v", code, hdr)
	}
	code, hdr, _ = do(t, c, "OPTIONS", p.URL(80)+"/wild", map[string]string{"Origin": "https://x.example.com",
		"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-one, x-two"})
	if code != 200 || hdr.Get("access-control-allow-origin") != "https://x.example.com" || hdr.Get("access-control-allow-methods") != "PUT" ||
		hdr.Get("access-control-allow-headers") != "x-one, x-two" || hdr.Get("access-control-allow-credentials") != "true" {
		t.Errorf("credentialed wildcard preflight: %d %v", code, hdr)
	}
	code, hdr, _ = do(t, c, "OPTIONS", p.URL(80)+"/listed", map[string]string{"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"})
	if code != 200 || hdr.Get("access-control-allow-origin") != "" {
		t.Errorf("preflight from a foreign origin: %d %v", code, hdr)
	}
	if n := be.Hits.Load(); n != 0 {
		t.Errorf("%d preflights reached the backend", n)
	}
}

// ownClient is a client with its own connection pool: a pooled
// keep-alive connection from an earlier test may still reach that test's
// proxy on a port number the kernel has handed out again.
func ownClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}
