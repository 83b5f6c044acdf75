package telemetry

import (
	"reflect"
	"strings"
	"testing"

	"github.com/portico-gateway/portico/pkg/translate"
)

// TestMetrics: istiod's merge of Telemetry metrics overrides for a
// gateway's Prometheus metrics.
func TestMetrics(t *testing.T) {
	scope := Scope{RootNamespace: "istio-system", Namespace: "gw"}
	m := &Mesh{}
	cases := []struct {
		name     string
		tels     []Telemetry
		want     *translate.MetricsOverrides
		problems []string
	}{
		{name: "no Telemetry metrics", tels: []Telemetry{tel(t, "istio-system", "m", `tracing: [{randomSamplingPercentage: 1}]`)}},
		{name: "remove a label from every metric, drop one", tels: []Telemetry{tel(t, "istio-system", "m", `
metrics:
- overrides:
  - tagOverrides: {request_protocol: {operation: REMOVE}}
  - match: {metric: REQUEST_SIZE}
    disabled: true`)},
			want: &translate.MetricsOverrides{Metrics: []translate.MetricOverride{
				{Name: "request_bytes", Drop: true, TagsToRemove: []string{"request_protocol"}},
				{Name: "request_duration_milliseconds", TagsToRemove: []string{"request_protocol"}},
				{Name: "requests_total", TagsToRemove: []string{"request_protocol"}},
				{Name: "response_bytes", TagsToRemove: []string{"request_protocol"}},
				{Name: "tcp_connections_closed_total", TagsToRemove: []string{"request_protocol"}},
				{Name: "tcp_connections_opened_total", TagsToRemove: []string{"request_protocol"}},
				{Name: "tcp_received_bytes_total", TagsToRemove: []string{"request_protocol"}},
				{Name: "tcp_sent_bytes_total", TagsToRemove: []string{"request_protocol"}},
			}}},
		{name: "namespace re-enables what the mesh disabled", tels: []Telemetry{
			tel(t, "istio-system", "m", `metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]}]`),
			tel(t, "gw", "n", `metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: false}]}]`)},
			want: &translate.MetricsOverrides{}},
		{name: "all metrics disabled", tels: []Telemetry{tel(t, "istio-system", "m", `metrics: [{overrides: [{match: {metric: ALL_METRICS}, disabled: true}]}]`)},
			want: &translate.MetricsOverrides{Metrics: []translate.MetricOverride{{Drop: true}}}},
		{name: "SERVER-only overrides do not apply to a gateway", tels: []Telemetry{tel(t, "istio-system", "m", `metrics: [{overrides: [{match: {mode: SERVER}, disabled: true}]}]`)},
			want: &translate.MetricsOverrides{}},
		{name: "what Portico does not honour", tels: []Telemetry{tel(t, "istio-system", "m", `
metrics:
- providers: [{name: prometheus}, {name: stackdriver}]
  overrides:
  - match: {customMetric: my_metric}
    disabled: true
  - match: {metric: REQUEST_COUNT}
    tagOverrides: {request_host: {value: request.host}}`)},
			want: &translate.MetricsOverrides{},
			problems: []string{`spec.metrics[0].providers[1]: metrics provider "stackdriver"`, `spec.metrics[0].overrides[0].match.customMetric`,
				`spec.metrics[0].overrides[1].tagOverrides[request_host]: UPSERT`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, problems := Metrics(m, scope, c.tels)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v\nwant %+v", got, c.want)
			}
			if len(problems) != len(c.problems) {
				t.Fatalf("problems %v, want %v", problems, c.problems)
			}
			for i, p := range problems {
				if !strings.Contains(p.Error(), c.problems[i]) || p.Kind != Unsupported {
					t.Errorf("problem %q (kind %d), want one containing %q", p.Error(), p.Kind, c.problems[i])
				}
			}
		})
	}
}
