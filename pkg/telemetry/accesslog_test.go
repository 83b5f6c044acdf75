package telemetry

import (
	"strings"
	"testing"

	"github.com/portico-gateway/portico/pkg/translate"
)

const logMeshYAML = `
extensionProviders:
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}
- name: json-file
  envoyFileAccessLog:
    path: /var/log/access.json
    logFormat: {labels: {code: "%RESPONSE_CODE%", path: "%REQ(:PATH)%"}}
- name: text-file
  envoyFileAccessLog:
    path: /var/log/access.log
    logFormat: {text: "%RESPONSE_CODE% %REQ(:PATH)%"}
- name: plain
  envoyFileAccessLog: {}
- name: als
  envoyHttpAls: {service: als.observability.svc.cluster.local, port: 9000}
`

// TestAccessLogging: Istio's merge of Telemetry accessLogging for a
// gateway (a CLIENT workload), provider by provider.
func TestAccessLogging(t *testing.T) {
	m := mesh(t, logMeshYAML)
	m.MeshAccessLog = &translate.AccessLog{File: "/dev/stdout", Encoding: "JSON"}
	withDefaults := mesh(t, logMeshYAML+"defaultProviders: {accessLogging: [text-file]}\n")
	scope := Scope{RootNamespace: "istio-system", Namespace: "gw", Labels: map[string]string{"istio": "ingressgateway"}}
	type log struct{ file, filter string }
	cases := []struct {
		name     string
		mesh     *Mesh
		tels     []Telemetry
		legacy   bool // nil: meshConfig's accessLogFile applies
		want     []log
		problems []string
	}{
		{name: "no telemetry, no defaults: legacy", mesh: m, legacy: true},
		{name: "defaults only", mesh: withDefaults, want: []log{{"/var/log/access.log", ""}}},
		{name: "telemetry without accessLogging: legacy", mesh: m,
			tels: []Telemetry{tel(t, "istio-system", "mesh", `tracing: [{randomSamplingPercentage: 5}]`)}, legacy: true},
		{name: "builtin envoy takes meshConfig's encoding", mesh: m,
			tels: []Telemetry{tel(t, "istio-system", "mesh", `accessLogging: [{providers: [{name: envoy}]}]`)},
			want: []log{{"/dev/stdout", ""}}},
		{name: "filter", mesh: m,
			tels: []Telemetry{tel(t, "istio-system", "mesh", `accessLogging: [{providers: [{name: json-file}], filter: {expression: "response.code >= 400"}}]`)},
			want: []log{{"/var/log/access.json", "response.code >= 400"}}},
		{name: "namespace overrides mesh-wide providers", mesh: m,
			tels: []Telemetry{
				tel(t, "istio-system", "mesh", `accessLogging: [{providers: [{name: json-file}]}]`),
				tel(t, "gw", "ns", `accessLogging: [{providers: [{name: text-file}], filter: {expression: "response.code >= 500"}}]`),
			},
			want: []log{{"/var/log/access.log", "response.code >= 500"}}},
		{name: "workload disables the inherited provider", mesh: m,
			tels: []Telemetry{
				tel(t, "istio-system", "mesh", `accessLogging: [{providers: [{name: json-file}]}]`),
				tel(t, "gw", "wl", `{selector: {matchLabels: {istio: ingressgateway}}, accessLogging: [{disabled: true}]}`),
			},
			want: nil},
		{name: "defaults disabled mesh-wide", mesh: withDefaults,
			tels: []Telemetry{tel(t, "istio-system", "mesh", `accessLogging: [{disabled: true}]`)}, want: nil},
		{name: "SERVER-only entries do not apply to a gateway", mesh: m,
			tels: []Telemetry{tel(t, "istio-system", "mesh", `accessLogging: [{match: {mode: SERVER}, providers: [{name: json-file}]}, {match: {mode: CLIENT}, providers: [{name: plain}]}]`)},
			want: []log{{"/dev/stdout", ""}}},
		{name: "another namespace's Telemetry does not apply", mesh: m,
			tels: []Telemetry{tel(t, "other", "ns", `accessLogging: [{providers: [{name: json-file}]}]`)}, legacy: true},
		{name: "unknown and unsupported providers", mesh: m,
			tels: []Telemetry{tel(t, "istio-system", "mesh", `accessLogging: [{providers: [{name: nope}, {name: als}, {name: otel}, {name: plain}]}]`)},
			want: []log{{"/dev/stdout", ""}},
			problems: []string{`istio-system/mesh: spec.accessLogging[0].providers[1]: access logging provider "als" is of kind envoyHttpAls`,
				`istio-system/mesh: spec.accessLogging[0].providers[0]: access logging provider "nope" is not a meshConfig`, `"otel" is of kind tracing`}},
		{name: "a filter the proxy cannot compile drops that provider", mesh: m,
			tels: []Telemetry{tel(t, "istio-system", "mesh", `accessLogging: [{providers: [{name: plain}], filter: {expression: "response.code >="}}]`)},
			want: nil, problems: []string{"istio-system/mesh: spec.accessLogging[0].filter.expression: CEL filter"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, problems := AccessLogging(c.mesh, scope, c.tels)
			if c.legacy {
				if got != nil {
					t.Fatalf("got %+v, want nil (meshConfig's access log)", got)
				}
				return
			}
			if got == nil {
				t.Fatal("got nil (legacy), want a Telemetry selection")
			}
			var logs []log
			for _, l := range got.Logs {
				logs = append(logs, log{l.File, l.Filter})
				if err := l.Validate(); err != nil {
					t.Errorf("%s: %v", l.File, err)
				}
			}
			if len(logs) != len(c.want) {
				t.Fatalf("logs %+v, want %+v", logs, c.want)
			}
			for i := range logs {
				if logs[i] != c.want[i] {
					t.Errorf("log %d: %+v, want %+v", i, logs[i], c.want[i])
				}
			}
			if len(problems) != len(c.problems) {
				t.Fatalf("problems %v, want %v", problems, c.problems)
			}
			for i, p := range problems {
				if !strings.Contains(p.Error(), c.problems[i]) {
					t.Errorf("problem %q, want one containing %q", p.Error(), c.problems[i])
				}
			}
		})
	}
	// The providers' formats, as istiod writes them.
	if al := m.accessLogProvider("JSON-FILE"); al == nil || al.Encoding != "JSON" || al.Labels["code"] != "%RESPONSE_CODE%" {
		t.Errorf("json-file (case-insensitive): %+v", al)
	}
	if al := m.accessLogProvider("plain"); al == nil || al.Format != translate.IstioTextFormat || al.File != "/dev/stdout" {
		t.Errorf("plain: %+v", al)
	}
	if al := m.accessLogProvider("envoy"); al == nil || al.Encoding != "JSON" {
		t.Errorf("envoy: %+v", al)
	}
}
