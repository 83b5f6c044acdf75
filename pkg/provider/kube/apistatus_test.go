package kube

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

func apiGVK(kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: resource.GatewayAPIGroup, Version: "v1", Kind: kind}
}

func apiObject(t *testing.T, c client.Client, kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(apiGVK(kind))
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, u); err != nil {
		t.Fatal(err)
	}
	return u
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func cond(typ string, st metav1.ConditionStatus, reason string, gen int64, ltt time.Time) metav1.Condition {
	return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: reason, ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(ltt)}
}

const apiStatusObjects = `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico, generation: 1}
spec: {controllerName: portico.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other, generation: 1}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge, generation: 2}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: attached, namespace: edge, generation: 1, annotations: {portico.io/proxy-selector: istio=ingressgateway}}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: pending, namespace: edge, generation: 1}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: edge, generation: 1}
spec:
  parentRefs: [{name: gw}]
status:
  parents:
  - parentRef: {group: gateway.networking.k8s.io, kind: Gateway, name: theirs}
    controllerName: example.com/other
    conditions: [{type: Accepted, status: "True", reason: Accepted, message: theirs, lastTransitionTime: "2020-01-01T00:00:00Z", observedGeneration: 1}]
  - parentRef: {group: gateway.networking.k8s.io, kind: Gateway, name: old}
    controllerName: portico.io/gateway-controller
    conditions: [{type: Accepted, status: "False", reason: NoMatchingParent, message: stale, lastTransitionTime: "2020-01-01T00:00:00Z", observedGeneration: 1}]
`

// Gateway API statuses are written to .status in their own shape: only
// for our GatewayClasses, keeping other controllers' route parents, with
// the Gateway's addresses from its Service, transition times kept while
// a condition holds, nothing written when nothing changed, and our
// entries removed from a route the build no longer covers.
func TestAPIStatusWriter(t *testing.T) {
	objs := gatewayAPIObjects(t, apiStatusObjects)
	provisionedSvc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "gw-portico", Namespace: "edge"},
		Spec:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.0.0.9", Selector: map[string]string{LabelGatewayName: "gw"}},
		Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}, {Hostname: "lb.example.com"}}}}}
	proxyPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ingress-1", Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway", "app": "ingress"}}}
	ingressSvc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ingress", Namespace: "istio-system"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.0.0.80", ClusterIPs: []string{"10.0.0.80", "fd00::80"}, Selector: map[string]string{"app": "ingress"}}}
	unrelatedSvc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "istio-system"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.81", Selector: map[string]string{"app": "web"}}}
	objs = append(objs, provisionedSvc, proxyPod, ingressSvc, unrelatedSvc)
	p, c := fakeProvider(t, objs...)
	w := NewStatusWriter(p, nil, logr.Discard())
	w.limiter = rate.NewLimiter(rate.Inf, 1)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	gwKey := resource.Key{Group: resource.GatewayAPIGroup, Kind: resource.KindGateway, Namespace: "edge", Name: "gw"}
	routeKey := resource.Key{Kind: resource.KindHTTPRoute, Namespace: "edge", Name: "web"}
	build := func(ltt time.Time, withRoute bool) []*status.APIStatus {
		out := []*status.APIStatus{
			{Key: resource.Key{Kind: resource.KindGatewayClass, Name: "portico"}, Status: &gwv1.GatewayClassStatus{
				Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", 1, ltt)}}},
			{Key: resource.Key{Kind: resource.KindGatewayClass, Name: "other"}, Status: &gwv1.GatewayClassStatus{
				Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", 1, ltt)}}},
			{Key: gwKey, Status: &gwv1.GatewayStatus{
				Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", 2, ltt), cond("Programmed", metav1.ConditionTrue, "Programmed", 2, ltt)},
				Listeners: []gwv1.ListenerStatus{{Name: "http", AttachedRoutes: 1, SupportedKinds: []gwv1.RouteGroupKind{{Kind: "HTTPRoute"}},
					Conditions: []metav1.Condition{cond("Programmed", metav1.ConditionTrue, "Programmed", 2, ltt)}}}}},
			{Key: resource.Key{Group: resource.GatewayAPIGroup, Kind: resource.KindGateway, Namespace: "edge", Name: "attached"}, Status: &gwv1.GatewayStatus{
				Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", 1, ltt)}}},
		}
		if withRoute {
			out = append(out, &status.APIStatus{Key: routeKey, Status: &gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{{
				ParentRef:      gwv1.ParentReference{Name: "gw"},
				ControllerName: "portico.io/gateway-controller",
				Conditions:     []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", 1, ltt), cond("ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", 1, ltt)},
			}}}})
		}
		return out
	}
	w.writeAPIStatuses(ctx, build(t0, true))

	if st := apiObject(t, c, "GatewayClass", "", "portico").Object["status"]; !strings.Contains(jsonOf(t, st), `"reason":"Accepted"`) {
		t.Errorf("our GatewayClass: %v", st)
	}
	if st := apiObject(t, c, "GatewayClass", "", "other").Object["status"]; st != nil {
		t.Errorf("another controller's GatewayClass got a status: %v", st)
	}
	gw := apiObject(t, c, "Gateway", "edge", "gw")
	addrs, _, _ := unstructured.NestedSlice(gw.Object, "status", "addresses")
	if got := jsonOf(t, addrs); got != `[{"type":"IPAddress","value":"203.0.113.7"},{"type":"Hostname","value":"lb.example.com"}]` {
		t.Errorf("provisioned Gateway addresses %s", got)
	}
	if kinds, _, _ := unstructured.NestedSlice(gw.Object, "status", "listeners"); !strings.Contains(jsonOf(t, kinds), `"group":"gateway.networking.k8s.io","kind":"HTTPRoute"`) {
		t.Errorf("listener supportedKinds without the group the CRD defaults: %s", jsonOf(t, kinds))
	}
	attached := apiObject(t, c, "Gateway", "edge", "attached")
	addrs, _, _ = unstructured.NestedSlice(attached.Object, "status", "addresses")
	if got := jsonOf(t, addrs); got != `[{"type":"IPAddress","value":"10.0.0.80"},{"type":"IPAddress","value":"fd00::80"}]` {
		t.Errorf("attached Gateway addresses (the Service in front of the selected proxies, a NodePort: its cluster IPs) %s", got)
	}
	route := apiObject(t, c, "HTTPRoute", "edge", "web")
	parents, _, _ := unstructured.NestedSlice(route.Object, "status", "parents")
	if len(parents) != 2 || parents[0].(map[string]any)["controllerName"] != "example.com/other" ||
		!strings.Contains(jsonOf(t, parents[1]), `"parentRef":{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"gw"}`) ||
		strings.Contains(jsonOf(t, parents), "stale") {
		t.Fatalf("route parents: %s", jsonOf(t, parents))
	}

	// A later build, same conditions computed at another time: nothing
	// to write (transition times stay those of the first write).
	rvs := map[string]string{}
	for _, k := range []struct{ kind, ns, name string }{{"GatewayClass", "", "portico"}, {"Gateway", "edge", "gw"}, {"Gateway", "edge", "attached"}, {"HTTPRoute", "edge", "web"}} {
		rvs[k.kind+k.name] = apiObject(t, c, k.kind, k.ns, k.name).GetResourceVersion()
	}
	w.writeAPIStatuses(ctx, build(t0.Add(time.Hour), true))
	for _, k := range []struct{ kind, ns, name string }{{"GatewayClass", "", "portico"}, {"Gateway", "edge", "gw"}, {"Gateway", "edge", "attached"}, {"HTTPRoute", "edge", "web"}} {
		if rv := apiObject(t, c, k.kind, k.ns, k.name).GetResourceVersion(); rv != rvs[k.kind+k.name] {
			t.Errorf("%s %s: an unchanged status was written again", k.kind, k.name)
		}
	}

	// A condition that changes gets a new transition time; one that
	// holds keeps its own.
	next := build(t0.Add(2*time.Hour), true)
	next[2].Status.(*gwv1.GatewayStatus).Conditions[1] = cond("Programmed", metav1.ConditionFalse, "Invalid", 2, t0.Add(2*time.Hour))
	w.writeAPIStatuses(ctx, next)
	conds, _, _ := unstructured.NestedSlice(apiObject(t, c, "Gateway", "edge", "gw").Object, "status", "conditions")
	if a, p := conds[0].(map[string]any), conds[1].(map[string]any); a["lastTransitionTime"] != "2026-01-01T00:00:00Z" ||
		p["status"] != "False" || p["lastTransitionTime"] != "2026-01-01T02:00:00Z" {
		t.Errorf("conditions %s", jsonOf(t, conds))
	}

	// A status computed for an older generation than the object's is
	// not written.
	stale := build(t0, false)[2]
	stale.Status = &gwv1.GatewayStatus{Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionFalse, "Invalid", 1, t0)}}
	w.writeAPIStatuses(ctx, []*status.APIStatus{stale})
	if got := jsonOf(t, apiObject(t, c, "Gateway", "edge", "gw").Object["status"]); strings.Contains(got, `"reason":"Invalid","status":"False","type":"Accepted"`) {
		t.Errorf("a stale generation's status was written: %s", got)
	}

	// The route no longer covered by a build: our entry goes, theirs stays.
	w.writeAPIStatuses(ctx, build(t0, false))
	parents, _, _ = unstructured.NestedSlice(apiObject(t, c, "HTTPRoute", "edge", "web").Object, "status", "parents")
	if len(parents) != 1 || parents[0].(map[string]any)["controllerName"] != "example.com/other" {
		t.Errorf("after the route left our Gateway: %s", jsonOf(t, parents))
	}

	// An Istio-keyed status never lands on the Gateway API Gateway of the
	// same name, nor the reverse.
	if err := w.write(ctx, &status.Status{Key: resource.Key{Group: resource.GatewayAPIGroup, Kind: "Gateway", Namespace: "edge", Name: "gw"}}, map[resource.Key]checkedStatus{}); err != nil {
		t.Error(err)
	}
	if err := w.writeAPI(ctx, resource.Key{Kind: "Gateway", Namespace: "istio-system", Name: "gw"}, &gwv1.GatewayStatus{}); err != nil {
		t.Error(err)
	}
}

// A provisioned Gateway whose Service does not exist yet has no address:
// Programmed is written False with the spec's AddressNotAssigned, even
// though the build found it programmed, until the Service is there.
func TestAPIStatusWriterAddressNotAssigned(t *testing.T) {
	objs := gatewayAPIObjects(t, apiStatusObjects)
	p, c := fakeProvider(t, objs...)
	w := NewStatusWriter(p, nil, logr.Discard())
	w.limiter = rate.NewLimiter(rate.Inf, 1)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	key := resource.Key{Group: resource.GatewayAPIGroup, Kind: resource.KindGateway, Namespace: "edge", Name: "pending"}
	build := func() []*status.APIStatus {
		return []*status.APIStatus{{Key: key, Status: &gwv1.GatewayStatus{
			Conditions: []metav1.Condition{cond("Accepted", metav1.ConditionTrue, "Accepted", 1, t0), cond("Programmed", metav1.ConditionTrue, "Programmed", 1, t0)}}}}
	}
	programmed := func() map[string]any {
		t.Helper()
		conds, _, _ := unstructured.NestedSlice(apiObject(t, c, "Gateway", "edge", "pending").Object, "status", "conditions")
		for _, x := range conds {
			if m := x.(map[string]any); m["type"] == "Programmed" {
				return m
			}
		}
		t.Fatalf("no Programmed condition in %s", jsonOf(t, conds))
		return nil
	}
	w.writeAPIStatuses(ctx, build())
	if m := programmed(); m["status"] != "False" || m["reason"] != "AddressNotAssigned" {
		t.Errorf("without a Service: Programmed %s, want False/AddressNotAssigned", jsonOf(t, m))
	}

	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "pending-portico", Namespace: "edge"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.0.0.10", Selector: map[string]string{LabelGatewayName: "pending"}}}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	w.writeAPIStatuses(ctx, build())
	if m := programmed(); m["status"] != "True" || m["reason"] != "Programmed" {
		t.Errorf("with the Service: Programmed %s, want True/Programmed", jsonOf(t, m))
	}
	addrs, _, _ := unstructured.NestedSlice(apiObject(t, c, "Gateway", "edge", "pending").Object, "status", "addresses")
	if got := jsonOf(t, addrs); got != `[{"type":"IPAddress","value":"10.0.0.10"}]` {
		t.Errorf("addresses %s", got)
	}
}
