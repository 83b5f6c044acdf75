package istiometrics

import (
	"strings"
	"testing"

	statspb "istio.io/api/envoy/extensions/stats"
)

func TestFromPluginConfig(t *testing.T) {
	o, err := FromPluginConfig(&statspb.PluginConfig{Metrics: []*statspb.MetricConfig{{Drop: true}, {Name: "requests_total", TagsToRemove: []string{"a", "a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range Names {
		if !o.Drop[n] {
			t.Errorf("a nameless drop applies to every metric; %s kept", n)
		}
	}
	if got := o.Remove["requests_total"]; len(got) != 1 {
		t.Errorf("removals %v", got)
	}
	for _, c := range []struct {
		name string
		cfg  *statspb.PluginConfig
		want string
	}{
		{"upsert", &statspb.PluginConfig{Metrics: []*statspb.MetricConfig{{Dimensions: map[string]string{"request_host": "request.host"}}}}, "UPSERT"},
		{"custom metric", &statspb.PluginConfig{Metrics: []*statspb.MetricConfig{{Name: "my_metric", Drop: true}}}, `"my_metric"`},
		{"definitions", &statspb.PluginConfig{Definitions: []*statspb.MetricDefinition{{Name: "x"}}}, "definitions"},
		{"match", &statspb.PluginConfig{Metrics: []*statspb.MetricConfig{{Match: "response.code == 200"}}}, "match"},
	} {
		if _, err := FromPluginConfig(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q (the proxy must NACK what it cannot honour)", c.name, err, c.want)
		}
	}
}
