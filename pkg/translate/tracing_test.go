package translate_test

import (
	"path/filepath"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/pkg/proxy/supported"
	"github.com/portico-gateway/portico/pkg/proxy/tracing"
	"github.com/portico-gateway/portico/pkg/translate"
)

// TestTracingGolden: the HCM tracing block (and collector cluster) for
// each provider kind, accepted by the edge proxy's compiler and field
// checker, compared with golden files.
func TestTracingGolden(t *testing.T) {
	in := "testdata/seed001-three-protocols.in.yaml"
	otel := &translate.TracingProvider{Name: "otel", Kind: "opentelemetry", Service: "otel-collector.observability.svc.cluster.local", Port: 4317}
	cases := []struct {
		name    string
		tr      *translate.Tracing
		cluster string // the collector cluster, "" when none
		kind    string
	}{
		{"otel-grpc", &translate.Tracing{SamplingPercent: 10, Provider: otel,
			Tags: []translate.TracingTag{{Name: "team", Literal: "edge"}, {Name: "tenant", Header: "x-tenant", Default: "-"}, {Name: "pod", Environment: "POD_NAME", Default: "unknown"}}},
			"outbound|4317||otel-collector.observability.svc.cluster.local", tracing.OpenTelemetry},
		{"otel-http", &translate.Tracing{SamplingPercent: 100, Provider: &translate.TracingProvider{Name: "otel-http", Kind: "opentelemetry",
			Service: "otel-collector.observability.svc.cluster.local", Port: 4318, HTTP: true, Timeout: 3 * time.Second}},
			"outbound|4318||otel-collector.observability.svc.cluster.local", tracing.OpenTelemetry},
		{"zipkin", &translate.Tracing{SamplingPercent: 1, Provider: &translate.TracingProvider{Name: "zipkin", Kind: "zipkin",
			Service: "zipkin.istio-system.svc.cluster.local", Port: 9411, MaxTagLength: 100}},
			"outbound|9411||zipkin.istio-system.svc.cluster.local", tracing.Zipkin},
		{"no-reporting", &translate.Tracing{SamplingPercent: 5}, "", ""},
	}
	p := loadProxy(t, in)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.tr.Validate(); err != nil {
				t.Fatal(err)
			}
			res, err := translate.Translate(p, translate.Options{Tracing: c.tr})
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
						m, _ := f.GetTypedConfig().UnmarshalNew()
						h, ok := m.(*hcmv3.HttpConnectionManager)
						if !ok {
							continue
						}
						n++
						cfg, err := tracing.Compile(h.Tracing)
						if err != nil {
							t.Fatalf("the edge proxy rejects the tracing block: %v", err)
						}
						if cfg.Sampling != uint32(c.tr.SamplingPercent*100) || !cfg.UpstreamSpans {
							t.Errorf("compiled %+v", cfg)
						}
						switch {
						case c.cluster == "" && cfg.Provider != nil:
							t.Errorf("a provider without one configured: %+v", cfg.Provider)
						case c.cluster != "" && (cfg.Provider == nil || cfg.Provider.Cluster != c.cluster || cfg.Provider.Kind != c.kind):
							t.Errorf("provider %+v, want %s on %s", cfg.Provider, c.kind, c.cluster)
						}
					}
				}
			}
			if n == 0 {
				t.Fatalf("no HTTP connection manager in %s", in)
			}
			found := false
			for _, cl := range res.Clusters {
				found = found || cl.Name == c.cluster
			}
			if c.cluster != "" && !found {
				t.Errorf("no collector cluster %s", c.cluster)
			}
			golden.Check(t, filepath.Join("testdata", "tracing", c.name+".out.yaml"), dump(t, &translate.Resources{Listeners: res.Listeners, Clusters: res.Clusters}))
		})
	}
}

func TestTracingValidateNamesTheField(t *testing.T) {
	for _, c := range []struct {
		tr   translate.Tracing
		want string
	}{
		{translate.Tracing{SamplingPercent: 101}, "randomSamplingPercentage: 101 is not within 0..100"},
		{translate.Tracing{Provider: &translate.TracingProvider{Name: "d", Kind: "datadog", Service: "x", Port: 1}}, `extensionProviders "d": tracing provider kind "datadog" is not supported (opentelemetry, zipkin)`},
		{translate.Tracing{Provider: &translate.TracingProvider{Name: "z", Kind: "zipkin", Service: "x", Port: 0}}, `extensionProviders "z": zipkin.port 0 is not a port`},
		{translate.Tracing{Tags: []translate.TracingTag{{Name: "a", Literal: "x", Header: "y"}}}, `customTags[0] "a": a name and at most one of literal, header, environment`},
	} {
		if err := c.tr.Validate(); err == nil || err.Error() != c.want {
			t.Errorf("got %v, want %s", err, c.want)
		}
	}
}
