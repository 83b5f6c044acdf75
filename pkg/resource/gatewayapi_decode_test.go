package resource

import (
	"strings"
	"testing"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestDecodeGatewayAPI(t *testing.T) {
	data := []byte(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: portico
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules:
  - backendRefs: [{name: svc, port: 80, weight: 75}]
    bogus: 1
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: t}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: tcp}]
  rules: [{backendRefs: [{name: mysql, port: 3306}]}]
---
apiVersion: gateway.networking.k8s.io/v9
kind: HTTPRoute
metadata: {name: future}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: ignored}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: a}}
`)
	objs, errs := Decode(data, "test.yaml")
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, KeyOf(o).String())
	}
	want := "GatewayClass portico|Gateway.gateway.networking.k8s.io infra/gw|TCPRoute default/t|Namespace apps"
	if got := strings.Join(kinds, "|"); got != want {
		t.Errorf("decoded %s, want %s", got, want)
	}
	if len(errs) != 2 {
		t.Fatalf("want 2 errors (unknown field, unknown version), got %d: %v", len(errs), errs)
	}
	if msg := errs[0].Error(); !strings.Contains(msg, "bogus") || !strings.Contains(msg, "HTTPRoute default/bad") {
		t.Errorf("unknown field error should name the field and the route: %s", msg)
	}
	if msg := errs[1].Error(); !strings.Contains(msg, `"v9"`) {
		t.Errorf("version error should name the version: %s", msg)
	}
	gw := objs[1].(*gwv1.Gateway)
	if gw.Spec.Listeners[0].AllowedRoutes.Namespaces.From == nil || *gw.Spec.Listeners[0].AllowedRoutes.Namespaces.From != gwv1.NamespacesFromAll {
		t.Errorf("allowedRoutes not decoded: %+v", gw.Spec.Listeners[0].AllowedRoutes)
	}
	if objs[0].GetNamespace() != "" {
		t.Errorf("GatewayClass is cluster-scoped, got namespace %q", objs[0].GetNamespace())
	}
}
