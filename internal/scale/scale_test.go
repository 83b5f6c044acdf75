package scale

import (
	"testing"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/translate"
)

// TestGeneratedConfigurationBindsCleanly: a benchmark of a configuration
// full of errors would measure the wrong thing.
func TestGeneratedConfigurationBindsCleanly(t *testing.T) {
	o := Options{VirtualServices: 120}
	res, err := o.Resources()
	if err != nil {
		t.Fatal(err)
	}
	ingress := map[string]string{"istio": "ingressgateway"}
	result := gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}})
	for _, st := range result.Statuses {
		for _, c := range st.Conditions {
			if c.Status != "True" {
				t.Fatalf("%s: %s %s: %s", st.Key, c.Type, c.Reason, c.Message)
			}
		}
	}
	p := result.Proxy(ingress)
	routes := 0
	for _, rc := range p.RouteConfigs {
		for _, vh := range rc.VirtualHosts {
			routes += len(vh.Routes)
		}
	}
	// Every route appears on the HTTP and the HTTPS server.
	if want := 2 * o.Routes(); routes != want {
		t.Errorf("%d routes bound, want %d", routes, want)
	}
	if _, err := translate.Translate(p, translate.Options{}); err != nil {
		t.Fatal(err)
	}
}
