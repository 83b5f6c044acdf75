package gatewayapi

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/resource"
)

func world() *resource.Resources {
	res := &resource.Resources{}
	res.Services = []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}, {Port: 8080}}}}}
	res.GatewayClasses = []*gwv1.GatewayClass{{ObjectMeta: metav1.ObjectMeta{Name: "portico"},
		Spec: gwv1.GatewayClassSpec{ControllerName: DefaultControllerName}}}
	res.KubeGateways = []*gwv1.Gateway{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "gw"},
		Spec: gwv1.GatewaySpec{GatewayClassName: "portico", Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: "HTTP"}}}}}
	for _, host := range []string{"a.example.com", "b.example.com"} {
		res.HTTPRoutes = append(res.HTTPRoutes, &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: host},
			Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gw"}}},
				Hostnames: []gwv1.Hostname{gwv1.Hostname(host)},
				Rules:     []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "svc", Port: ptr(gwv1.PortNumber(80))}}}}}}}})
	}
	return res
}

// TestSyntheticIdentity: the synthetic objects' versions (what the
// binder's caches key on) are equal exactly when their content is, so
// an unrelated edit leaves the other conversions cached.
func TestSyntheticIdentity(t *testing.T) {
	versions := func(o *Output) map[string]string {
		m := map[string]string{}
		for _, g := range o.Gateways {
			m["Gateway/"+g.Name] = string(g.UID) + "@" + g.ResourceVersion
		}
		for _, vs := range o.VirtualServices {
			m["VirtualService/"+vs.Name] = string(vs.UID) + "@" + vs.ResourceVersion
		}
		return m
	}
	base := versions(Convert(world(), Options{}))
	if len(base) != 3 {
		t.Fatalf("want a Gateway and two VirtualServices, got %v", base)
	}
	if again := versions(Convert(world(), Options{})); !equalMaps(base, again) {
		t.Errorf("the same input gave other versions:\n%v\n%v", base, again)
	}
	edited := world()
	edited.HTTPRoutes[1].Spec.Rules[0].BackendRefs[0].Port = ptr(gwv1.PortNumber(8080))
	after := versions(Convert(edited, Options{}))
	for k, v := range base {
		changed := after[k] != v
		if want := k == "VirtualService/gw~80~b.example.com"; changed != want {
			t.Errorf("%s: changed=%v, want %v (before %s, after %s)", k, changed, want, v, after[k])
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestIntersectHostnames(t *testing.T) {
	tests := []struct {
		a, b, want string
		ok         bool
	}{
		{"", "", "*", true},
		{"a.example.com", "", "a.example.com", true},
		{"", "*.example.com", "*.example.com", true},
		{"a.example.com", "*.example.com", "a.example.com", true},
		{"a.b.example.com", "*.example.com", "a.b.example.com", true},
		{"example.com", "*.example.com", "", false},
		{"*.b.example.com", "*.example.com", "*.b.example.com", true},
		{"A.Example.com", "a.example.COM", "a.example.com", true},
		{"a.example.org", "*.example.com", "", false},
	}
	for _, tc := range tests {
		got, ok := intersectHostnames(tc.a, tc.b)
		if got != tc.want || ok != tc.ok {
			t.Errorf("intersect(%q, %q) = %q, %v; want %q, %v", tc.a, tc.b, got, ok, tc.want, tc.ok)
		}
	}
}
