package translate_test

import (
	"path/filepath"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	statspb "istio.io/api/envoy/extensions/stats"

	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/pkg/proxy/istiometrics"
	"github.com/portico-gateway/portico/pkg/proxy/supported"
	"github.com/portico-gateway/portico/pkg/translate"
)

// TestMetricsOverridesGolden: Telemetry metrics overrides become the
// istio.stats filter (stats.PluginConfig) ahead of the router on every
// connection manager, as istiod writes it; Envoy's rules and the edge
// proxy accept it.
func TestMetricsOverridesGolden(t *testing.T) {
	p := loadProxy(t, "testdata/seed001-three-protocols.in.yaml")
	mo := &translate.MetricsOverrides{Metrics: []translate.MetricOverride{
		{Name: "request_bytes", Drop: true},
		{Name: "requests_total", TagsToRemove: []string{"response_flags", "source_principal"}},
	}}
	res, err := translate.Translate(p, translate.Options{Metrics: mo})
	if err != nil {
		t.Fatal(err)
	}
	validateAll(t, res)
	n := 0
	for _, l := range res.Listeners {
		if err := supported.Check(l); err != nil {
			t.Errorf("listener %s: %v", l.Name, err)
		}
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				h := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(h) != nil {
					continue
				}
				fs := h.HttpFilters
				if len(fs) < 2 || fs[len(fs)-2].Name != translate.IstioStatsFilter {
					t.Errorf("listener %s: istio.stats is not just ahead of the router", l.Name)
					continue
				}
				pc := &statspb.PluginConfig{}
				if err := fs[len(fs)-2].GetTypedConfig().UnmarshalTo(pc); err != nil {
					t.Fatal(err)
				}
				o, err := istiometrics.FromPluginConfig(pc)
				if err != nil {
					t.Errorf("the edge proxy rejects the filter: %v", err)
				} else if !o.Drop["request_bytes"] || len(o.Remove["requests_total"]) != 2 {
					t.Errorf("the proxy reads %+v", o)
				}
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no connection manager in the seed")
	}
	golden.Check(t, filepath.Join("testdata", "metrics", "overrides.out.yaml"), dump(t, &translate.Resources{Listeners: res.Listeners}))
}
