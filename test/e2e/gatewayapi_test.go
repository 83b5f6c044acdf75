//go:build linux

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/portico-gateway/portico/internal/testpki"
)

// The Gateway API tests use the GatewayClass "portico" (Portico's
// default controllerName). The traffic tests attach a Gateway to the
// harness's ingress proxy (istio=ingressgateway) with the
// portico.io/proxy-selector annotation; the provisioning test lets the
// controller create a proxy Deployment (which nothing runs here: there
// is no scheduler or kubelet) and checks the objects.

const gwapiClass = `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.io/gateway-controller}
`

// gwapiGateway is attached to the harness proxy: HTTP 80 (routes from
// every namespace), TLS passthrough on 8443, TCP 3306.
const gwapiGateway = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gwapi
  namespace: gwapi
  annotations: {portico.io/proxy-selector: istio=ingressgateway}
spec:
  gatewayClassName: portico
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
  - name: tls-pass
    port: 8443
    protocol: TLS
    hostname: passthrough.example.com
    tls: {mode: Passthrough}
  - name: mysql
    port: 3306
    protocol: TCP
`

func (hs *harness) namespace(t *testing.T, names ...string) {
	t.Helper()
	for _, ns := range names {
		if err := hs.client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// gwapiObject reads a Gateway API object.
func (hs *harness) gwapiObject(t *testing.T, kind, namespace, name string) (*unstructured.Unstructured, error) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("gateway.networking.k8s.io/v1")
	u.SetKind(kind)
	err := hs.client.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: name}, u)
	return u, err
}

// gwapiCondition finds a condition at a path of a Gateway API status
// ("conditions", or a parent's: "parents", i).
func gwapiConditions(u *unstructured.Unstructured, path ...string) []any {
	list, _, _ := unstructured.NestedSlice(u.Object, append([]string{"status"}, path...)...)
	return list
}

func findCondition(conds []any, typ string) map[string]any {
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}

// ourParent returns our controller's parent status entry of a route.
func ourParent(u *unstructured.Unstructured) map[string]any {
	for _, p := range gwapiConditions(u, "parents") {
		if m, ok := p.(map[string]any); ok && m["controllerName"] == "portico.io/gateway-controller" {
			return m
		}
	}
	return nil
}

// attachedSetup applies the class, the attached Gateway and a Service in
// front of the harness proxy (its pod is registered with these labels),
// whose cluster IP becomes the Gateway's address.
func attachedSetup(t *testing.T) {
	t.Helper()
	h.namespace(t, "gwapi", "gwapi-routes", "gwapi-backends")
	h.apply(t, gwapiClass+"---"+gwapiGateway+`
---
apiVersion: v1
kind: Service
metadata: {name: gwapi-ingress, namespace: istio-system}
spec:
  selector: {app: istio-ingressgateway}
  ports: [{name: http, port: 80}]
`)
}

// TestGatewayAPIHTTPRouteCanary: seed 002's 75/25 canary written as an
// HTTPRoute with weighted backendRefs; the measured split must fit.
func TestGatewayAPIHTTPRouteCanary(t *testing.T) {
	needHarness(t)
	attachedSetup(t)
	v1 := h.startPod(t, "gwapi", "gwapi-rating-v1", map[string]string{"app": "gwapi-rating-v1"}, "v1")
	v2 := h.startPod(t, "gwapi", "gwapi-rating-v2", map[string]string{"app": "gwapi-rating-v2"}, "v2")
	h.service(t, "gwapi", "gwapi-rating-v1", []corev1.ServicePort{httpPort("http", 8080, 8080)}, v1)
	h.service(t, "gwapi", "gwapi-rating-v2", []corev1.ServicePort{httpPort("http", 8080, 8080)}, v2)
	route := func(w1, w2 int) string {
		return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rating, namespace: gwapi}
spec:
  parentRefs: [{name: gwapi, sectionName: http}]
  hostnames: [rating-gwapi.example.com]
  rules:
  - backendRefs:
    - {name: gwapi-rating-v1, port: 8080, weight: %d}
    - {name: gwapi-rating-v2, port: 8080, weight: %d}
`, w1, w2)
	}
	h.apply(t, route(100, 0))
	only := func(want string) func() error {
		return func() error {
			for i := 0; i < 20; i++ {
				code, body, err := h.httpGet(80, "rating-gwapi.example.com", "/", nil)
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
	h.apply(t, route(0, 100))
	eventually(t, "all traffic on v2", 30*time.Second, only("v2"))
	h.apply(t, route(75, 25))
	eventually(t, "the 75/25 split to start", 30*time.Second, func() error {
		_, body, err := h.httpGet(80, "rating-gwapi.example.com", "/", nil)
		if err != nil || version(body) != "v1" {
			return fmt.Errorf("still v2 (%v)", err)
		}
		return nil
	})
	counts := map[string]int{}
	for i := 0; i < 1000; i++ {
		_, body, err := h.httpGet(80, "rating-gwapi.example.com", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[version(body)]++
	}
	t.Logf("75/25 HTTPRoute weights: %v of 1000", counts)
	withinBinomial(t, "75/25: requests on v2", counts["v2"], 1000, 0.25)
	if counts["v1"]+counts["v2"] != 1000 {
		t.Errorf("requests answered by neither version: %v", counts)
	}
}

// TestGatewayAPITLSRoutePassthrough: a TLSRoute on a Passthrough
// listener carries the client's TLS, unterminated, to the backend chosen
// by SNI: the certificate the client sees is the backend's.
func TestGatewayAPITLSRoutePassthrough(t *testing.T) {
	needHarness(t)
	attachedSetup(t)
	// The backend runs in the test, on the bridge's address (reachable
	// from the proxy, which runs in the host's network namespace).
	cert, err := tls.X509KeyPair(testpki.Read("server.crt"), testpki.Read("server.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "10.244.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					return
				}
				fmt.Fprintf(c, "passthrough backend, SNI %s\n", tc.ConnectionState().ServerName)
			}()
		}
	}()
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "passthrough", Namespace: "gwapi"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tls", Port: 9443, Protocol: corev1.ProtocolTCP}}}}
	if err := h.client.Create(ctx, svc); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "passthrough-e2e", Namespace: "gwapi", Labels: map[string]string{discoveryv1.LabelServiceName: "passthrough"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("tls"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	if err := h.client.Create(ctx, es); err != nil {
		t.Fatal(err)
	}
	h.apply(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: passthrough, namespace: gwapi}
spec:
  parentRefs: [{name: gwapi, sectionName: tls-pass}]
  hostnames: [passthrough.example.com]
  rules: [{backendRefs: [{name: passthrough, port: 9443}]}]
`)
	eventually(t, "TLS passthrough by SNI", 30*time.Second, func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", "127.0.0.1:8443",
			&tls.Config{ServerName: "passthrough.example.com", RootCAs: caPool()})
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "passthrough backend, SNI passthrough.example.com\n" {
			return fmt.Errorf("%q", line)
		}
		if serial := c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16); serial != "64" {
			return fmt.Errorf("certificate serial %s is not the backend's", serial)
		}
		return nil
	})
}

// withoutIstioServerOn takes a port off seed 001's Istio Gateway while a
// test needs it for a Gateway API listener (the older Istio server would
// win the conflict), and puts it back afterwards.
func withoutIstioServerOn(t *testing.T, port int64) {
	t.Helper()
	ctx := context.Background()
	gw := &unstructured.Unstructured{}
	gw.SetAPIVersion("networking.istio.io/v1")
	gw.SetKind("Gateway")
	if err := h.client.Get(ctx, types.NamespacedName{Namespace: "istio-system", Name: "default-gateway"}, gw); apierrors.IsNotFound(err) {
		return
	} else if err != nil {
		t.Fatal(err)
	}
	orig, _, _ := unstructured.NestedSlice(gw.Object, "spec", "servers")
	kept := slices.DeleteFunc(slices.Clone(orig), func(s any) bool {
		n, _, _ := unstructured.NestedInt64(s.(map[string]any), "port", "number")
		return n == port
	})
	if len(kept) == len(orig) {
		return
	}
	set := func(servers []any) error {
		cur := &unstructured.Unstructured{}
		cur.SetGroupVersionKind(gw.GroupVersionKind())
		if err := h.client.Get(ctx, client.ObjectKeyFromObject(gw), cur); err != nil {
			return err
		}
		unstructured.SetNestedSlice(cur.Object, servers, "spec", "servers")
		return h.client.Update(ctx, cur)
	}
	if err := set(kept); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := set(orig); err != nil {
			t.Errorf("restoring default-gateway: %v", err)
		}
	})
}

// TestGatewayAPITCPRoute: a TCPRoute on the 3306 listener reaches the
// MySQL-like backend.
func TestGatewayAPITCPRoute(t *testing.T) {
	needHarness(t)
	attachedSetup(t)
	withoutIstioServerOn(t, 3306)
	db := h.startPod(t, "gwapi", "gwapi-mysql-1", map[string]string{"app": "gwapi-mysql"}, "v1")
	h.service(t, "gwapi", "gwapi-mysql", []corev1.ServicePort{httpPort("tcp-mysql", 3306, 3306)}, db)
	h.apply(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: mysql, namespace: gwapi}
spec:
  parentRefs: [{name: gwapi, sectionName: mysql}]
  rules: [{backendRefs: [{name: gwapi-mysql, port: 3306}]}]
`)
	eventually(t, "TCP through the TCPRoute", 30*time.Second, func() error {
		banner, err := h.tcpGreeting(3306)
		if err != nil {
			return err
		}
		if !strings.Contains(banner, "gwapi-mysql-1") {
			return fmt.Errorf("banner %q", banner)
		}
		return nil
	})
	eventually(t, "the TCPRoute's status", 30*time.Second, func() error {
		u, err := h.gwapiObject(t, "TCPRoute", "gwapi", "mysql")
		if err != nil {
			return err
		}
		p := ourParent(u)
		if c := findCondition(asSlice(p["conditions"]), "Accepted"); c == nil || c["status"] != "True" {
			return fmt.Errorf("parents %v", gwapiConditions(u, "parents"))
		}
		return nil
	})
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// TestGatewayAPICrossNamespaceReferenceGrant: an HTTPRoute naming a
// Service in another namespace gets ResolvedRefs False (RefNotPermitted)
// and a 500 until a ReferenceGrant in the Service's namespace allows it;
// then traffic flows and the condition turns True.
func TestGatewayAPICrossNamespaceReferenceGrant(t *testing.T) {
	needHarness(t)
	attachedSetup(t)
	be := h.startPod(t, "gwapi-backends", "gwapi-shared-1", map[string]string{"app": "gwapi-shared"}, "v1")
	h.service(t, "gwapi-backends", "gwapi-shared", []corev1.ServicePort{httpPort("http", 8080, 8080)}, be)
	h.apply(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross, namespace: gwapi-routes}
spec:
  parentRefs: [{name: gwapi, namespace: gwapi, sectionName: http}]
  hostnames: [cross-gwapi.example.com]
  rules: [{backendRefs: [{name: gwapi-shared, namespace: gwapi-backends, port: 8080}]}]
`)
	resolved := func(want, reason string) func() error {
		return func() error {
			u, err := h.gwapiObject(t, "HTTPRoute", "gwapi-routes", "cross")
			if err != nil {
				return err
			}
			p := ourParent(u)
			c := findCondition(asSlice(p["conditions"]), "ResolvedRefs")
			if c == nil || c["status"] != want || c["reason"] != reason {
				return fmt.Errorf("parents %v", gwapiConditions(u, "parents"))
			}
			if a := findCondition(asSlice(p["conditions"]), "Accepted"); a == nil || a["status"] != "True" {
				return fmt.Errorf("not accepted: %v", p)
			}
			return nil
		}
	}
	eventually(t, "ResolvedRefs False, RefNotPermitted", 30*time.Second, resolved("False", "RefNotPermitted"))
	code, body, err := h.httpGet(80, "cross-gwapi.example.com", "/", nil)
	if err != nil || code != 500 {
		t.Errorf("without a ReferenceGrant: %d %s %v, want the 500 the spec requires", code, body, err)
	}
	h.apply(t, `
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: routes-to-shared, namespace: gwapi-backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gwapi-routes}]
  to: [{group: "", kind: Service, name: gwapi-shared}]
`)
	eventually(t, "traffic after the grant", 30*time.Second, func() error {
		code, body, err := h.httpGet(80, "cross-gwapi.example.com", "/", nil)
		if err != nil || code != 200 || !strings.Contains(body, "gwapi-shared-1") {
			return fmt.Errorf("%d %s %v", code, body, err)
		}
		return nil
	})
	eventually(t, "ResolvedRefs True", 30*time.Second, resolved("True", "ResolvedRefs"))
}

// TestGatewayAPIStatusesOnObjects: what the controller writes on the
// objects: GatewayClass Accepted, the Gateway's conditions, listeners
// (attachedRoutes) and addresses (the cluster IP of the Service in front
// of the attached proxy), written once, not on every build.
func TestGatewayAPIStatusesOnObjects(t *testing.T) {
	needHarness(t)
	attachedSetup(t)
	h.apply(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: status-probe, namespace: gwapi}
spec:
  parentRefs: [{name: gwapi, sectionName: http}]
  hostnames: [status-gwapi.example.com]
  rules: [{backendRefs: [{name: gwapi-none, port: 8080}]}]
`)
	svc := &corev1.Service{}
	if err := h.client.Get(context.Background(), types.NamespacedName{Namespace: "istio-system", Name: "gwapi-ingress"}, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "GatewayClass Accepted", 30*time.Second, func() error {
		u, err := h.gwapiObject(t, "GatewayClass", "", "portico")
		if err != nil {
			return err
		}
		if c := findCondition(gwapiConditions(u, "conditions"), "Accepted"); c == nil || c["status"] != "True" {
			return fmt.Errorf("%v", u.Object["status"])
		}
		return nil
	})
	// The writer writes a build's statuses in key order, Gateways before
	// HTTPRoutes: once the probe route has its status, the Gateway's
	// status of the same build (counting the probe) is written too.
	eventually(t, "the probe route's status", 30*time.Second, func() error {
		u, err := h.gwapiObject(t, "HTTPRoute", "gwapi", "status-probe")
		if err != nil {
			return err
		}
		parents, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
		for _, p := range parents {
			m, _ := p.(map[string]any)
			conds, _ := m["conditions"].([]any)
			if c := findCondition(conds, "Accepted"); c != nil && c["status"] == "True" {
				return nil
			}
		}
		return fmt.Errorf("parents %v", parents)
	})
	var rv string
	eventually(t, "the Gateway's status", 30*time.Second, func() error {
		u, err := h.gwapiObject(t, "Gateway", "gwapi", "gwapi")
		if err != nil {
			return err
		}
		if c := findCondition(gwapiConditions(u, "conditions"), "Accepted"); c == nil || c["status"] != "True" {
			return fmt.Errorf("conditions %v", gwapiConditions(u, "conditions"))
		}
		addrs := gwapiConditions(u, "addresses")
		if !slices.ContainsFunc(addrs, func(a any) bool {
			m, _ := a.(map[string]any)
			return m["type"] == "IPAddress" && m["value"] == svc.Spec.ClusterIP
		}) {
			return fmt.Errorf("addresses %v, want %s", addrs, svc.Spec.ClusterIP)
		}
		for _, l := range gwapiConditions(u, "listeners") {
			m := l.(map[string]any)
			if m["name"] == "http" {
				if n, _ := m["attachedRoutes"].(int64); n < 1 {
					return fmt.Errorf("listener http: %v", m)
				}
			}
		}
		rv = u.GetResourceVersion()
		return nil
	})
	// Another build (an unrelated change) leaves the status alone.
	h.apply(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gwapi-nudge, namespace: gwapi}
spec:
  hosts: [nudge.example.com]
  gateways: [istio-system/default-gateway]
  http: [{route: [{destination: {host: counter.default.svc.cluster.local}}]}]
`)
	eventually(t, "the nudge built", 30*time.Second, func() error {
		st := h.istioStatus(t, "VirtualService", "gwapi", "gwapi-nudge")
		if st == nil {
			return fmt.Errorf("no status yet")
		}
		return nil
	})
	if u, err := h.gwapiObject(t, "Gateway", "gwapi", "gwapi"); err != nil || u.GetResourceVersion() != rv {
		t.Errorf("the Gateway was rewritten by an unrelated build (resourceVersion %s → %s)", rv, u.GetResourceVersion())
	}
}

// TestGatewayAPIProvisioning: a Gateway of our class without a proxy
// selector gets a ServiceAccount, Deployment and Service in its
// namespace, owned by it; the Service's ports follow the listeners and
// its type the networking.istio.io/service-type annotation; a
// provisioned object deleted by hand comes back; and everything goes
// when the Gateway does (deleted by the controller: there is no garbage
// collector here).
func TestGatewayAPIProvisioning(t *testing.T) {
	needHarness(t)
	h.namespace(t, "gwapi-prov")
	gateway := func(annotations, extra string) string {
		return gwapiClass + `
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: prov
  namespace: gwapi-prov
  annotations: {` + annotations + `}
spec:
  gatewayClassName: portico
  infrastructure:
    labels: {team: web}
    annotations: {example.com/cost-center: "42"}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: prov-cert}]}}
` + extra
	}
	h.apply(t, gateway("", "  - {name: mysql, port: 3306, protocol: TCP}\n"))
	gw, err := h.gwapiObject(t, "Gateway", "gwapi-prov", "prov")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "gwapi-prov", Name: "prov-portico"}
	get := func() (*corev1.ServiceAccount, *appsv1.Deployment, *corev1.Service, error) {
		sa, d, svc := &corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.Service{}
		for _, o := range []client.Object{sa, d, svc} {
			if err := h.client.Get(ctx, key, o); err != nil {
				return nil, nil, nil, err
			}
		}
		return sa, d, svc, nil
	}
	ports := func(svc *corev1.Service) string {
		var out []string
		for _, p := range svc.Spec.Ports {
			out = append(out, fmt.Sprintf("%s:%d", p.Name, p.Port))
		}
		return strings.Join(out, " ")
	}
	eventually(t, "the provisioned objects", 30*time.Second, func() error {
		sa, d, svc, err := get()
		if err != nil {
			return err
		}
		for _, o := range []client.Object{sa, d, svc} {
			refs := o.GetOwnerReferences()
			if len(refs) != 1 || refs[0].UID != gw.GetUID() || refs[0].Kind != "Gateway" || !ptr.Deref(refs[0].Controller, false) {
				return fmt.Errorf("%T owner references %+v", o, refs)
			}
			if o.GetLabels()["team"] != "web" || o.GetAnnotations()["example.com/cost-center"] != "42" {
				return fmt.Errorf("%T infrastructure labels/annotations not propagated: %v %v", o, o.GetLabels(), o.GetAnnotations())
			}
		}
		if got := ports(svc); got != "status-port:15021 http-80:80 https-443:443 tcp-3306:3306" {
			return fmt.Errorf("Service ports %s", got)
		}
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.Selector["gateway.networking.k8s.io/gateway-name"] != "prov" {
			return fmt.Errorf("Service %s selecting %v", svc.Spec.Type, svc.Spec.Selector)
		}
		if l := d.Spec.Template.Labels; l["gateway.networking.k8s.io/gateway-name"] != "prov" || l["team"] != "web" {
			return fmt.Errorf("pod labels %v", l)
		}
		if d.Spec.Template.Spec.ServiceAccountName != "prov-portico" {
			return fmt.Errorf("service account %s", d.Spec.Template.Spec.ServiceAccountName)
		}
		// The proxy may receive its listeners' private keys.
		for _, o := range []client.Object{&rbacv1.Role{}, &rbacv1.RoleBinding{}} {
			if err := h.client.Get(ctx, key, o); err != nil {
				return fmt.Errorf("%T: %w", o, err)
			}
		}
		return nil
	})
	_, _, svc, _ := get()
	nodePort80 := svc.Spec.Ports[1].NodePort

	// Listeners change (3306 goes, 8080 comes) and the Service type is
	// overridden: the Service follows; 80 keeps its node port.
	h.apply(t, gateway("networking.istio.io/service-type: NodePort", "  - {name: alt, port: 8080, protocol: HTTP}\n"))
	eventually(t, "the Service to follow the listeners", 30*time.Second, func() error {
		_, d, svc, err := get()
		if err != nil {
			return err
		}
		if got := ports(svc); got != "status-port:15021 http-80:80 https-443:443 http-8080:8080" || svc.Spec.Type != corev1.ServiceTypeNodePort {
			return fmt.Errorf("Service %s ports %s", svc.Spec.Type, got)
		}
		if svc.Spec.Ports[1].NodePort != nodePort80 {
			return fmt.Errorf("80's node port changed %d → %d", nodePort80, svc.Spec.Ports[1].NodePort)
		}
		var cps []int32
		for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
			cps = append(cps, p.ContainerPort)
		}
		if fmt.Sprint(cps) != "[80 443 8080 15021]" {
			return fmt.Errorf("container ports %v", cps)
		}
		return nil
	})

	// Deleted by hand: provisioned again.
	_, d, _, _ := get()
	if err := h.client.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Deployment to come back", 30*time.Second, func() error {
		_, d2, _, err := get()
		if err != nil {
			return err
		}
		if d2.UID == d.UID {
			return fmt.Errorf("still the old one")
		}
		return nil
	})

	// The Gateway goes: so does everything provisioned for it.
	h.delete(t, "gateway.networking.k8s.io/v1", "Gateway", "gwapi-prov", "prov")
	eventually(t, "the provisioned objects to go", 30*time.Second, func() error {
		for _, o := range []client.Object{&corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.Service{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}} {
			if err := h.client.Get(ctx, key, o); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%T still there (%v)", o, err)
			}
		}
		return nil
	})
}

// TestGatewayAPIProvisionedAddress: a provisioned Gateway's
// status.addresses come from its Service: a LoadBalancer without an
// ingress yet (nothing assigns one here) reports its cluster IP; once
// the load balancer has an address, that one.
func TestGatewayAPIProvisionedAddress(t *testing.T) {
	needHarness(t)
	h.namespace(t, "gwapi-prov")
	h.apply(t, gwapiClass+`
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: addr, namespace: gwapi-prov}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
`)
	ctx := context.Background()
	svc := &corev1.Service{}
	eventually(t, "the provisioned Service", 30*time.Second, func() error {
		return h.client.Get(ctx, types.NamespacedName{Namespace: "gwapi-prov", Name: "addr-portico"}, svc)
	})
	addresses := func(want ...string) func() error {
		return func() error {
			u, err := h.gwapiObject(t, "Gateway", "gwapi-prov", "addr")
			if err != nil {
				return err
			}
			var got []string
			for _, a := range gwapiConditions(u, "addresses") {
				m := a.(map[string]any)
				got = append(got, fmt.Sprint(m["type"], "=", m["value"]))
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("addresses %v, want %v", got, want)
			}
			return nil
		}
	}
	eventually(t, "the cluster IP as the address", 30*time.Second, addresses("IPAddress="+svc.Spec.ClusterIP))
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}, {Hostname: "lb.example.net"}}
	if err := h.client.Status().Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the load balancer's addresses", 30*time.Second, addresses("IPAddress=203.0.113.10", "Hostname=lb.example.net"))
	h.delete(t, "gateway.networking.k8s.io/v1", "Gateway", "gwapi-prov", "addr")
}

// TestGatewayAPICRDsInstalledLater: on a cluster without the Gateway API
// CRDs the controller starts and serves the Istio kinds, saying once why
// Gateway API resources are not read; when the CRDs are installed later
// it starts reading them without a restart (it looks again every 30 s).
func TestGatewayAPICRDsInstalledLater(t *testing.T) {
	needHarness(t)
	env := &envtest.Environment{BinaryAssetsDirectory: h.assets, CRDDirectoryPaths: []string{filepath.Join(h.root, "config", "crd")},
		ErrorIfCRDPathMissing: true, ControlPlaneStartTimeout: 2 * time.Minute}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ns := range []string{"istio-system", "portico-system", "late"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := writeKubeconfig(cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	ctrl, err := h.start("gateway-controller-late-crds", h.bins["gateway-controller"], "--kubeconfig", kubeconfig,
		"--xds-address", fmt.Sprintf("127.0.0.1:%d", freePort()), "--debug-address", fmt.Sprintf("127.0.0.1:%d", freePort()),
		"--health-address", fmt.Sprintf("127.0.0.1:%d", freePort()), "--metrics-address", "",
		"--leader-election-namespace", "portico-system")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrl.stop)
	if err := applyYAML(ctx, c, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Istio Gateway's status without Gateway API CRDs", 60*time.Second, func() error {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("networking.istio.io/v1")
		u.SetKind("Gateway")
		if err := c.Get(ctx, types.NamespacedName{Namespace: "istio-system", Name: "gw"}, u); err != nil {
			return err
		}
		st, _ := u.Object["status"].(map[string]any)
		if cond := condition(st, "Accepted"); cond == nil || cond["status"] != "True" {
			return fmt.Errorf("%v", st)
		}
		return nil
	})
	logText := func() string { b, _ := os.ReadFile(ctrl.logPath); return string(b) }
	if n := strings.Count(logText(), "the Gateway API CRDs are not installed"); n != 1 {
		t.Errorf("the missing CRDs were logged %d times, want once", n)
	}
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join(h.root, "config", "crd", "gateway-api", "standard")},
		ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	if err := applyYAML(ctx, c, gwapiClass+`
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: late, namespace: late}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Gateway to be read (and provisioned for) after the CRDs were installed", 90*time.Second, func() error {
		return c.Get(ctx, types.NamespacedName{Namespace: "late", Name: "late-portico"}, &appsv1.Deployment{})
	})
	if !strings.Contains(logText(), "watching Gateway API kinds") {
		t.Error("no log line saying the Gateway API kinds are now watched")
	}
}
