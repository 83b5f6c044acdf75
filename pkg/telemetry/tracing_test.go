package telemetry

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/translate"
)

func mesh(t *testing.T, y string) *Mesh {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	mc := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(j, mc); err != nil {
		t.Fatal(err)
	}
	m, err := FromMeshConfig(mc)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func tel(t *testing.T, ns, name, y string) Telemetry {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	s := &telemetryv1alpha1.Telemetry{}
	if err := protojson.Unmarshal(j, s); err != nil {
		t.Fatal(err)
	}
	return Telemetry{Namespace: ns, Name: name, Spec: s}
}

const meshYAML = `
defaultConfig: {tracing: {sampling: 10}}
extensionProviders:
- name: otel
  opentelemetry: {service: observability/otel-collector.observability.svc.cluster.local, port: 4317}
- name: otel-http
  opentelemetry:
    service: otel-collector.observability.svc.cluster.local
    port: 4318
    http: {path: v1/traces, timeout: 3s}
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, maxTagLength: 100}
- name: als
  envoyFileAccessLog: {path: /dev/stdout}
defaultProviders: {tracing: [otel]}
`

var gw = Scope{RootNamespace: "istio-system", Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway"}}

func TestMeshDefaults(t *testing.T) {
	m := mesh(t, meshYAML)
	got, problems := Tracing(m, gw, nil)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	want := &translate.Tracing{SamplingPercent: 10, Provider: &translate.TracingProvider{Name: "otel", Kind: "opentelemetry",
		Service: "otel-collector.observability.svc.cluster.local", Port: 4317}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v / %+v, want %+v / %+v", got, got.Provider, want, want.Provider)
	}
	if p := m.Providers["otel-http"]; !p.HTTP || p.Path != "/v1/traces" || p.Timeout.Seconds() != 3 {
		t.Errorf("otel-http: %+v", p)
	}
	if p := m.Providers["zipkin"]; p.MaxTagLength != 100 || p.Kind != "zipkin" {
		t.Errorf("zipkin: %+v", p)
	}
	if _, ok := m.Providers["als"]; ok {
		t.Errorf("an access log provider was taken as a tracer")
	}
	m.Disabled = true
	if got, _ := Tracing(m, gw, nil); got != nil {
		t.Errorf("enableTracing false still traces: %+v", got)
	}
}

func TestTelemetryPrecedence(t *testing.T) {
	m := mesh(t, meshYAML)
	root := tel(t, "istio-system", "mesh-default", `
tracing:
- providers: [{name: zipkin}]
  randomSamplingPercentage: 50
  customTags:
    team: {literal: {value: edge}}
    tenant: {header: {name: X-Tenant, defaultValue: none}}
`)
	other := tel(t, "apps", "apps", `tracing: [{randomSamplingPercentage: 0}]`)
	selected := tel(t, "istio-system", "gw", `
selector: {matchLabels: {istio: ingressgateway}}
tracing:
- randomSamplingPercentage: 100
  customTags:
    pod: {environment: {name: POD_NAME, defaultValue: unknown}}
`)
	notSelected := tel(t, "istio-system", "egress", `
selector: {matchLabels: {istio: egressgateway}}
tracing: [{disableSpanReporting: true}]
`)
	got, problems := Tracing(m, gw, []Telemetry{selected, other, root, notSelected})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	want := &translate.Tracing{SamplingPercent: 100, Provider: m.Providers["zipkin"], Tags: []translate.TracingTag{
		{Name: "pod", Environment: "POD_NAME", Default: "unknown"},
		{Name: "team", Literal: "edge"},
		{Name: "tenant", Header: "x-tenant", Default: "none"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// disableSpanReporting: still propagates (tracing set), never reports.
	dis := tel(t, "istio-system", "gw", `
selector: {matchLabels: {istio: ingressgateway}}
tracing: [{disableSpanReporting: true}]
`)
	got, _ = Tracing(m, gw, []Telemetry{root, dis})
	if got == nil || got.Provider != nil || got.SamplingPercent != 50 {
		t.Errorf("disableSpanReporting: %+v", got)
	}
}

func TestTelemetryBadInputNamesTheField(t *testing.T) {
	m := mesh(t, meshYAML)
	bad := tel(t, "istio-system", "bad", `tracing: [{randomSamplingPercentage: 150, providers: [{name: nope}]}]`)
	got, problems := Tracing(m, gw, []Telemetry{bad})
	if got != nil {
		t.Errorf("an unknown provider still traced: %+v", got)
	}
	if len(problems) != 2 || problems[0].Field != "spec.tracing[0].randomSamplingPercentage" || problems[0].Message != "must be within 0..100" ||
		problems[0].Kind != Invalid {
		t.Errorf("problems %v", problems)
	}
	// The unknown provider is blamed on the resource that named it.
	if len(problems) == 2 && (problems[1].Name != "bad" || problems[1].Field != "spec.tracing[0].providers[0]" || problems[1].Kind != NotFound) {
		t.Errorf("provider problem %+v", problems[1])
	}
}

func TestMeshConfigBadProvider(t *testing.T) {
	j, _ := yaml.YAMLToJSON([]byte(`extensionProviders: [{name: z, zipkin: {service: "", port: 9411}}]`))
	mc := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(j, mc); err != nil {
		t.Fatal(err)
	}
	if _, err := FromMeshConfig(mc); err == nil || err.Error() != `extensionProviders[0]: extensionProviders "z": zipkin.service is required` {
		t.Errorf("err = %v", err)
	}
}
