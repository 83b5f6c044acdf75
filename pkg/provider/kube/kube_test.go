package kube

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

func istioGVK(kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: resource.GroupOf(kind), Version: "v1", Kind: kind}
}

func istioObject(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := sigsyaml.Unmarshal([]byte(y), &u.Object); err != nil {
		t.Fatal(err)
	}
	if u.GetUID() == "" {
		u.SetUID(types.UID(u.GetNamespace() + "/" + u.GetName()))
	}
	return u
}

// fakeProvider is a Provider reading and writing through
// controller-runtime's fake client instead of a manager.
func fakeProvider(t *testing.T, objs ...client.Object) (*Provider, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mapper := meta.NewDefaultRESTMapper(nil)
	gvks := map[string]schema.GroupVersionKind{}
	var withStatus []client.Object
	for _, kind := range append(append([]string(nil), istioKinds...), securityKinds...) {
		gvk := istioGVK(kind)
		gvks[kind] = gvk
		mapper.Add(gvk, meta.RESTScopeNamespace)
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		withStatus = append(withStatus, u)
	}
	apiGVKs := map[string]schema.GroupVersionKind{}
	for _, kind := range gatewayAPIKinds {
		gvk := schema.GroupVersionKind{Group: resource.GatewayAPIGroup, Version: "v1", Kind: kind}
		apiGVKs[kind] = gvk
		scope := meta.RESTScopeNamespace
		if kind == resource.KindGatewayClass {
			scope = meta.RESTScopeRoot
		}
		mapper.Add(gvk, scope)
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		withStatus = append(withStatus, u)
	}
	mapper.Add(corev1.SchemeGroupVersion.WithKind("Namespace"), meta.RESTScopeRoot)
	for _, gvk := range []schema.GroupVersionKind{corev1.SchemeGroupVersion.WithKind("Service"), corev1.SchemeGroupVersion.WithKind("Pod"),
		corev1.SchemeGroupVersion.WithKind("ServiceAccount"), corev1.SchemeGroupVersion.WithKind("ConfigMap"), appsv1.SchemeGroupVersion.WithKind("Deployment"),
		rbacv1.SchemeGroupVersion.WithKind("Role"), rbacv1.SchemeGroupVersion.WithKind("RoleBinding"),
		corev1.SchemeGroupVersion.WithKind("Secret"), discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice")} {
		mapper.Add(gvk, meta.RESTScopeNamespace)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithRESTMapper(mapper).WithObjects(objs...).WithStatusSubresource(withStatus...).Build()
	p := &Provider{log: logr.Discard(), cached: c, api: c, gvks: gvks, decoded: map[string]decodedObject{}, trigger: make(chan struct{}, 1),
		apiGVKs: apiGVKs, nsCache: map[string]*corev1.Namespace{}}
	return p, c
}

const gatewayYAML = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system, generation: 1}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: web-cert}
`

// The snapshot holds every watched kind; an object the API server took but
// Portico cannot use (Istio's CRDs are permissive) is reported invalid,
// named; unchanged objects keep their identity from one snapshot to the
// next (the binder reuses work on identity).
func TestSnapshotFromTheCache(t *testing.T) {
	bad := istioObject(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: default, resourceVersion: "7"}
spec:
  hosts: [a.example.com]
  http: [{retries: {attempts: two}}]
`)
	good := istioObject(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: good, namespace: default}
spec:
  hosts: [b.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: web}}]}]
`)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default", Labels: map[string]string{"app": "web"}}}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "web-x", Namespace: "default"}, AddressType: discoveryv1.AddressTypeIPv4}
	p, c := fakeProvider(t, istioObject(t, gatewayYAML), bad, good, svc, pod, slice)

	res, err := p.snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Gateways) != 1 || len(res.VirtualServices) != 1 || res.VirtualServices[0].Name != "good" ||
		len(res.Services) != 1 || len(res.Pods) != 1 || len(res.EndpointSlices) != 1 {
		t.Fatalf("snapshot: %d gateways, %d virtual services, %d services, %d pods, %d slices",
			len(res.Gateways), len(res.VirtualServices), len(res.Services), len(res.Pods), len(res.EndpointSlices))
	}
	if res.Pods[0].Labels["app"] != "web" {
		t.Errorf("pod labels lost: %v", res.Pods[0].Labels)
	}
	if len(res.Invalid) != 1 || res.Invalid[0].Key != (resource.Key{Kind: "VirtualService", Namespace: "default", Name: "bad"}) ||
		!strings.Contains(res.Invalid[0].Error, "spec.http[0].retries.attempts") {
		t.Fatalf("invalid: %+v", res.Invalid)
	}
	first := res.VirtualServices[0]

	// Nothing changed: the same decoded object. The good one edited: a
	// new one.
	res2, _ := p.snapshot(context.Background())
	if res2.VirtualServices[0] != first {
		t.Error("an unchanged object was decoded again")
	}
	good.Object["spec"].(map[string]any)["hosts"] = []any{"c.example.com"}
	if err := c.Update(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	res3, _ := p.snapshot(context.Background())
	if res3.VirtualServices[0] == first || res3.VirtualServices[0].Spec.Hosts[0] != "c.example.com" {
		t.Errorf("an edit was not seen: %v", res3.VirtualServices[0].Spec.Hosts)
	}
	// A deleted object's decode is forgotten.
	if err := c.Delete(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	p.snapshot(context.Background())
	if _, ok := p.decoded[string(bad.GetUID())]; ok {
		t.Error("the decode of a deleted object is kept")
	}
}

func TestReferencedSecrets(t *testing.T) {
	res := testenv.Resources(t, gatewayYAML+`---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: default}
spec:
  host: web
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: client-cert}
    portLevelSettings: [{port: {number: 8443}, tls: {mode: SIMPLE, credentialName: port-cert}}]
  subsets: [{name: v1, labels: {v: "1"}, trafficPolicy: {tls: {mode: SIMPLE, credentialName: subset-cert}}}]
`)
	got := strings.Join(sortedKeys(referencedSecrets(res)), " ")
	want := "default/client-cert default/port-cert default/subset-cert istio-system/web-cert istio-system/web-cert-cacert"
	if got != want {
		t.Errorf("referenced secrets %q, want %q", got, want)
	}
}

func statusOf(t *testing.T, c client.Client, kind, ns, name string) (map[string]any, string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(istioGVK(kind))
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, u); err != nil {
		t.Fatal(err)
	}
	st, _ := u.Object["status"].(map[string]any)
	return st, u.GetResourceVersion()
}

// Statuses are written in Istio's shape, only when they change, and never
// for a generation older than the object's.
func TestStatusWriter(t *testing.T) {
	p, c := fakeProvider(t, istioObject(t, gatewayYAML))
	w := NewStatusWriter(p, nil, logr.Discard())
	w.limiter = rate.NewLimiter(rate.Inf, 1)
	key := resource.Key{Kind: "Gateway", Namespace: "istio-system", Name: "gw"}
	r := status.NewReport()
	r.Track(key, 1)
	r.Add(key, status.Message{Code: status.InvalidGatewayCredential, Level: status.Error, Reason: status.ReasonSecretNotFound,
		Field: "spec.servers[1].tls.credentialName", Message: `Secret istio-system/web-cert not found`})
	st := r.Finalize()[0]
	ctx := context.Background()
	if err := w.write(ctx, st, map[resource.Key]checkedStatus{}); err != nil {
		t.Fatal(err)
	}
	got, rv := statusOf(t, c, "Gateway", "istio-system", "gw")
	conds, _ := got["conditions"].([]any)
	msgs, _ := got["validationMessages"].([]any)
	if len(conds) != 2 || len(msgs) != 1 || got["observedGeneration"] != "1" {
		t.Fatalf("status %v", got)
	}
	vm := msgs[0].(map[string]any)
	if vm["level"] != "ERROR" || vm["field"] != "spec.servers[1].tls.credentialName" || vm["type"].(map[string]any)["code"] != "IST0161" ||
		vm["documentationUrl"] != "https://istio.io/latest/docs/reference/config/analysis/ist0161/" {
		t.Errorf("validation message %v", vm)
	}
	acc := conds[0].(map[string]any)
	if acc["type"] != "Accepted" || acc["reason"] != status.ReasonPartiallyInvalid || acc["lastTransitionTime"] == nil {
		t.Errorf("Accepted %v", acc)
	}

	// The same status again: no write.
	if err := w.write(ctx, st, map[resource.Key]checkedStatus{}); err != nil {
		t.Fatal(err)
	}
	if _, rv2 := statusOf(t, c, "Gateway", "istio-system", "gw"); rv2 != rv {
		t.Errorf("an unchanged status was written again (resourceVersion %s → %s)", rv, rv2)
	}
	// A status for an older generation than the object's: not written.
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(istioGVK("Gateway"))
	c.Get(ctx, types.NamespacedName{Namespace: "istio-system", Name: "gw"}, u)
	u.SetGeneration(2)
	if err := c.Update(ctx, u); err != nil {
		t.Fatal(err)
	}
	r2 := status.NewReport()
	r2.Track(key, 1)
	if err := w.write(ctx, r2.Finalize()[0], map[resource.Key]checkedStatus{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := statusOf(t, c, "Gateway", "istio-system", "gw"); len(got["validationMessages"].([]any)) != 1 {
		t.Errorf("a stale generation's status replaced the current one: %v", got)
	}
	// Deleted meanwhile: nothing to do, no error.
	if err := w.write(ctx, &status.Status{Key: resource.Key{Kind: "Gateway", Namespace: "x", Name: "gone"}}, map[resource.Key]checkedStatus{}); err != nil {
		t.Errorf("writing for a deleted object: %v", err)
	}
}

// TestStatusWriterMemoEqualsComparingEverything: over random sequences
// of new statuses, statuses clobbered by someone else, and passes with
// nothing new, the writer that skips what it already checked leaves on
// the object exactly what comparing every time would (the status of the
// last pass), and writes only when something changed.
func TestStatusWriterMemoEqualsComparingEverything(t *testing.T) {
	p, c := fakeProvider(t, istioObject(t, gatewayYAML))
	w := NewStatusWriter(p, nil, logr.Discard())
	w.limiter = rate.NewLimiter(rate.Inf, 1)
	ctx := context.Background()
	key := resource.Key{Kind: "Gateway", Namespace: "istio-system", Name: "gw"}
	rng := rand.New(rand.NewPCG(3, 11))
	statusFor := func(n int) *status.Status {
		r := status.NewReport()
		r.Track(key, 1)
		if n%3 != 0 {
			r.Add(key, status.Message{Code: status.InvalidGatewayCredential, Level: status.Error, Reason: status.ReasonSecretNotFound,
				Field: "spec.servers[1].tls.credentialName", Message: fmt.Sprintf("Secret istio-system/web-cert-%d not found", n)})
		}
		return r.Finalize()[0]
	}
	n := 0
	st := statusFor(n)
	wroteLast := false
	for step := range 60 {
		clobbered, changed := false, false
		switch rng.IntN(3) {
		case 0: // a new status
			n++
			changed = true
			st = statusFor(n)
		case 1: // someone else writes the status
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(istioGVK("Gateway"))
			if err := c.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.Name}, u); err != nil {
				t.Fatal(err)
			}
			u.Object["status"] = map[string]any{"observedGeneration": "0", "conditions": []any{}}
			if err := c.Status().Update(ctx, u); err != nil {
				t.Fatal(err)
			}
			clobbered = true
		}
		_, before := statusOf(t, c, "Gateway", "istio-system", "gw")
		compared := w.compared
		next := map[resource.Key]checkedStatus{}
		if err := w.write(ctx, st, next); err != nil {
			t.Fatal(err)
		}
		w.checked = next
		got, after := statusOf(t, c, "Gateway", "istio-system", "gw")
		want := istioStatus(st, got, time.Now())
		if !reflect.DeepEqual(normalise(got), normalise(want)) {
			t.Fatalf("step %d: status %v, want %v", step, got, want)
		}
		// Written exactly when something changed since the last pass
		// (every new status here renders differently).
		if wrote := before != after; wrote != (changed || clobbered || step == 0) {
			t.Fatalf("step %d: wrote %v, though changed %v, clobbered %v", step, wrote, changed, clobbered)
		}
		// And compared only then, or right after a write (the memo holds
		// the version the write made, which the cache may not have yet).
		if w.compared != compared && !changed && !clobbered && step > 0 && !wroteLast {
			t.Fatalf("step %d: an unchanged status on an unchanged object compared again", step)
		}
		wroteLast = before != after
	}
}

// The lastTransitionTime of a condition that did not change is kept.
func TestIstioStatusKeepsTransitionTimes(t *testing.T) {
	r := status.NewReport()
	key := resource.Key{Kind: "Gateway", Name: "gw"}
	r.Track(key, 3)
	st := r.Finalize()[0]
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	first := istioStatus(st, nil, t0)
	second := istioStatus(st, normalise(first).(map[string]any), t0.Add(time.Hour))
	c1 := first["conditions"].([]any)[0].(map[string]any)
	c2 := second["conditions"].([]any)[0].(map[string]any)
	if c1["lastTransitionTime"] != "2026-01-01T00:00:00Z" || c2["lastTransitionTime"] != c1["lastTransitionTime"] || c2["observedGeneration"] != "3" {
		t.Errorf("conditions %v then %v", c1, c2)
	}
}

// Managed gateway Services gain the ports their Gateways open (with the
// preferred node port), lose only the ports Portico added, and Gateways
// learn where their ports are reachable.
func TestServicePortsFollowGateways(t *testing.T) {
	managed := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-ingressgateway", Namespace: "istio-system", Annotations: map[string]string{AnnotationManagePorts: "true"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"istio": "ingressgateway"},
			Ports: []corev1.ServicePort{{Name: "status-port", Port: 15021, NodePort: 30021}}},
	}
	unmanaged := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "istio-system"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"istio": "ingressgateway"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	p, c := fakeProvider(t, managed, unmanaged)
	sp := NewServicePorts(p, logr.Discard(), map[uint32]uint32{80: 31380}, map[uint32]uint32{80: 8080})
	build := func(y string) *gateway.Result { return buildIngress(t, y) }
	ctx := context.Background()
	// File certificates: the controller does not read them, so the
	// server is bound whatever the files hold.
	gwFiles := strings.Replace(gatewayYAML, "credentialName: web-cert", "serverCertificate: /etc/certs/tls.crt, privateKey: /etc/certs/tls.key", 1)
	exposed, err := sp.Reconcile(ctx, build(gwFiles))
	if err != nil {
		t.Fatal(err)
	}
	got := &corev1.Service{}
	c.Get(ctx, types.NamespacedName{Namespace: "istio-system", Name: "istio-ingressgateway"}, got)
	ports := map[int32]corev1.ServicePort{}
	for _, p := range got.Spec.Ports {
		ports[p.Port] = p
	}
	if ports[80].NodePort != 31380 || ports[80].TargetPort.IntVal != 8080 || ports[80].Name != "http2-80" || ports[443].Name != "https-443" ||
		ports[15021].NodePort != 30021 || got.Annotations[AnnotationManagedPorts] != "443,80" {
		t.Fatalf("managed Service: ports %+v annotations %v", got.Spec.Ports, got.Annotations)
	}
	gw := resource.Key{Kind: "Gateway", Namespace: "istio-system", Name: "gw"}
	// The unmanaged Service lacks 443: the Gateway hears about it.
	if cond := exposed[gw]; cond.Status != "False" || !strings.Contains(cond.Message, "443 (Service istio-system/other)") {
		t.Errorf("Exposed = %+v", cond)
	}

	// The HTTPS server goes: its port goes; the status port stays.
	if _, err := sp.Reconcile(ctx, build(strings.Split(gwFiles, "  - port: {number: 443")[0])); err != nil {
		t.Fatal(err)
	}
	c.Get(ctx, types.NamespacedName{Namespace: "istio-system", Name: "istio-ingressgateway"}, got)
	var names []string
	for _, p := range got.Spec.Ports {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "status-port,http2-80" || got.Annotations[AnnotationManagedPorts] != "80" {
		t.Errorf("after removing 443: ports %v, managed %q", names, got.Annotations[AnnotationManagedPorts])
	}
	if cls := sp.Classes(); len(cls) != 1 || cls[0]["istio"] != "ingressgateway" {
		t.Errorf("Classes = %v", cls)
	}
}

// RequestAuthentications and AuthorizationPolicies are read from the cache
// like the networking kinds; one Portico cannot use is reported invalid,
// named, with the field at fault.
func TestSnapshotReadsSecurityKinds(t *testing.T) {
	ra := istioObject(t, `
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules: [{issuer: testing@secure.istio.io, jwksUri: "http://127.0.0.1:1/jwks.json"}]
`)
	ap := istioObject(t, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: istio-system}
spec:
  action: ALLOW
  rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]
`)
	bad := istioObject(t, `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: istio-system}
spec:
  rules: [{to: [{operation: {method: [GET]}}]}]
`)
	p, _ := fakeProvider(t, ra, ap, bad)
	res, err := p.snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.RequestAuthentications) != 1 || res.RequestAuthentications[0].Spec.JwtRules[0].Issuer != "testing@secure.istio.io" {
		t.Fatalf("request authentications: %v", res.RequestAuthentications)
	}
	if len(res.AuthorizationPolicies) != 1 || res.AuthorizationPolicies[0].Name != "require-jwt" {
		t.Fatalf("authorization policies: %v", res.AuthorizationPolicies)
	}
	if len(res.Invalid) != 1 || res.Invalid[0].Key != (resource.Key{Kind: resource.KindAuthorizationPolicy, Namespace: "istio-system", Name: "bad"}) ||
		!strings.Contains(res.Invalid[0].Error, "spec.rules[0].to[0].operation.method") {
		t.Fatalf("invalid: %+v", res.Invalid)
	}
}

// A pass that fails (here a conflict updating the gateway Service) is
// tried again by itself: no event need follow a failed update.
func TestStatusWriterRetriesAFailedPass(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-ingressgateway", Namespace: "istio-system", Annotations: map[string]string{AnnotationManagePorts: "true"}},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"istio": "ingressgateway"}, Ports: []corev1.ServicePort{{Name: "status-port", Port: 15021}}},
	}
	p, c := fakeProvider(t, svc, istioObject(t, gatewayYAML))
	var updates atomic.Int32
	p.api = interceptor.NewClient(c.(client.WithWatch), interceptor.Funcs{
		Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.Service); ok && updates.Add(1) <= 2 {
				return apierrors.NewConflict(corev1.Resource("services"), obj.GetName(), errors.New("injected"))
			}
			return cl.Update(ctx, obj, opts...)
		},
	})
	w := NewStatusWriter(p, NewServicePorts(p, logr.Discard(), nil, nil), logr.Discard())
	w.provisioner = nil
	w.limiter = rate.NewLimiter(rate.Inf, 1)
	elected := make(chan struct{})
	close(elected)
	w.elected = elected
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	w.Update(ctx, buildIngress(t, strings.Replace(gatewayYAML, "credentialName: web-cert", "serverCertificate: /c.crt, privateKey: /c.key", 1)))
	err := poll.WaitUpTo(ctxWithTimeout(t, 10*time.Second), 10*time.Millisecond, func() error {
		got := &corev1.Service{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: "istio-system", Name: "istio-ingressgateway"}, got); err != nil {
			return err
		}
		if len(got.Spec.Ports) != 3 {
			return fmt.Errorf("ports %v after %d updates", got.Spec.Ports, updates.Load())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the failed update was not tried again: %v", err)
	}
	if n := updates.Load(); n != 3 {
		t.Errorf("%d updates, want 3 (two failures, one success)", n)
	}
}

// buildIngress binds YAML for the ingress class.
func buildIngress(t *testing.T, y string) *gateway.Result {
	t.Helper()
	res := testenv.Resources(t, y)
	return gateway.Build(res, gateway.Options{Classes: []map[string]string{{"istio": "ingressgateway"}}})
}

func ctxWithTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestStatusOnly(t *testing.T) {
	base := func() *unstructured.Unstructured {
		u := istioObject(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default, uid: u1, resourceVersion: "10", labels: {a: "1"}, annotations: {b: "2"}}
spec: {hosts: [a.example.com]}
`)
		u.SetGeneration(3) // YAML numbers decode as float64, which GetGeneration does not read
		return u
	}
	now := metav1.Now()
	for _, c := range []struct {
		name   string
		change func(u *unstructured.Unstructured)
		want   bool
	}{
		{"status written", func(u *unstructured.Unstructured) {
			u.Object["status"] = map[string]any{"observedGeneration": "3"}
			u.SetResourceVersion("11")
		}, true},
		{"spec changed", func(u *unstructured.Unstructured) { u.SetGeneration(4) }, false},
		{"label changed", func(u *unstructured.Unstructured) { u.SetLabels(map[string]string{"a": "2"}) }, false},
		{"annotation added", func(u *unstructured.Unstructured) { u.SetAnnotations(map[string]string{"b": "2", "c": "3"}) }, false},
		{"being deleted", func(u *unstructured.Unstructured) { u.SetDeletionTimestamp(&now) }, false},
		{"re-created", func(u *unstructured.Unstructured) { u.SetUID("u2") }, false},
		{"no generation kept", func(u *unstructured.Unstructured) { u.SetGeneration(0) }, false},
	} {
		old, n := base(), base()
		c.change(n)
		if c.name == "no generation kept" {
			old.SetGeneration(0)
		}
		if got := statusOnly(old, n); got != c.want {
			t.Errorf("%s: statusOnly = %v, want %v", c.name, got, c.want)
		}
	}
	if statusOnly(&corev1.Service{}, &corev1.Service{}) {
		t.Error("a typed object's update taken for a status write")
	}
}
