package gatewayapi

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestProxySelector(t *testing.T) {
	gw := func(ann string) *gwv1.Gateway {
		g := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}}
		if ann != "" {
			g.Annotations = map[string]string{ProxySelectorAnnotation: ann}
		}
		return g
	}
	class := func(ann string) *gwv1.GatewayClass {
		c := &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "portico"}}
		if ann != "" {
			c.Annotations = map[string]string{ProxySelectorAnnotation: ann}
		}
		return c
	}
	embedded := map[string]string{"istio": "ingressgateway"}
	tests := []struct {
		name        string
		gw          *gwv1.Gateway
		class       *gwv1.GatewayClass
		def         map[string]string
		want        map[string]string
		provisioned bool
	}{
		{"gateway annotation wins", gw("istio=ingressgateway, tier = edge"), class("app=other"), nil,
			map[string]string{"istio": "ingressgateway", "tier": "edge"}, false},
		{"class annotation", gw(""), class("app=edge"), embedded, map[string]string{"app": "edge"}, false},
		{"nil class", gw(""), nil, embedded, embedded, false},
		{"standalone default", gw(""), class(""), embedded, embedded, false},
		{"kubernetes: provisioned", gw(""), class(""), nil, map[string]string{GatewayNameLabel: "web", GatewayNamespaceLabel: "ns"}, true},
		{"malformed annotation attaches to nothing", gw(" , =x"), class(""), nil, nil, false},
		{"malformed class annotation too", gw(""), class("app"), map[string]string{"a": "b"}, nil, false},
		{"value may be empty", gw("k="), nil, nil, map[string]string{"k": ""}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, prov := ProxySelector(tc.gw, tc.class, tc.def)
			if !reflect.DeepEqual(got, tc.want) || prov != tc.provisioned {
				t.Errorf("got %v, %v; want %v, %v", got, prov, tc.want, tc.provisioned)
			}
		})
	}
	// The result is the caller's: changing it leaves the default alone.
	got, _ := ProxySelector(gw(""), nil, embedded)
	got["x"] = "y"
	if len(embedded) != 1 {
		t.Error("ProxySelector returned the default selector itself")
	}
}
