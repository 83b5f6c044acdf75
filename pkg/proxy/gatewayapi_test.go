package proxy_test

import (
	"net/http"
	"testing"

	"github.com/portico-gateway/portico/internal/testenv"
)

// gatewayAPIInvalidBackends is an HTTPRoute whose rules mix valid and
// invalid backendRefs: Gateway API requires the invalid ones' share of
// the requests to get 500 while the valid ones keep serving theirs.
const gatewayAPIInvalidBackends = `
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
	t.Cleanup(func() {
		if t.Failed() {
			p.Stop()
			t.Logf("access log:\n%s", p.Log.String())
		}
	})

	const n = 800
	fails := 0
	for i := 0; i < n; i++ {
		switch code, _, _ := do(t, http.DefaultClient, "GET", p.URL(80)+"/mixed", nil); code {
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
		if code, _, _ := do(t, http.DefaultClient, "GET", p.URL(80)+"/none", nil); code != 500 {
			t.Fatalf("/none (no valid backend): status %d, want 500", code)
		}
		if code, _, _ := do(t, http.DefaultClient, "GET", p.URL(80)+"/valid", nil); code != 200 {
			t.Fatalf("/valid (invalid backend has weight 0): status %d, want 200", code)
		}
	}
}
