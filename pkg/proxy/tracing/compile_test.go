package tracing

import (
	"strings"
	"testing"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func provider(name string, m proto.Message) *tracev3.Tracing_Http {
	a, _ := anypb.New(m)
	return &tracev3.Tracing_Http{Name: name, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: a}}
}

// TestCompileRejects: what the proxy cannot honour is an error naming
// the field (the listener is NACKed), never silently ignored.
func TestCompileRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		t    *hcmv3.HttpConnectionManager_Tracing
		want string
	}{
		{"overall sampling", &hcmv3.HttpConnectionManager_Tracing{OverallSampling: &typev3.Percent{Value: 50}}, "tracing.overall_sampling"},
		{"client sampling", &hcmv3.HttpConnectionManager_Tracing{ClientSampling: &typev3.Percent{Value: 0}}, "tracing.client_sampling"},
		{"datadog", &hcmv3.HttpConnectionManager_Tracing{Provider: provider("envoy.tracers.datadog", &tracev3.DatadogConfig{})}, `unsupported tracer "envoy.tracers.datadog"`},
		{"zipkin proto", &hcmv3.HttpConnectionManager_Tracing{Provider: provider(Zipkin, &tracev3.ZipkinConfig{CollectorCluster: "c",
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_PROTO})}, "collector_endpoint_version"},
		{"zipkin without cluster", &hcmv3.HttpConnectionManager_Tracing{Provider: provider(Zipkin, &tracev3.ZipkinConfig{})}, "collector_cluster is required"},
		{"otel without service", &hcmv3.HttpConnectionManager_Tracing{Provider: provider(OpenTelemetry, &tracev3.OpenTelemetryConfig{})}, "one of grpc_service and http_service"},
	} {
		_, err := Compile(c.t)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", c.name, err, c.want)
		}
	}
}
