package tracing

import (
	"fmt"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Compile converts an HttpConnectionManager's tracing block. It honours
// provider (envoy.tracers.opentelemetry over gRPC or HTTP,
// envoy.tracers.zipkin with the v2 JSON endpoint), random_sampling,
// custom_tags (literal, environment, request_header),
// spawn_upstream_span and max_path_tag_length; client_sampling and
// overall_sampling are accepted only at 100% (their defaults), anything
// else is an error (a NACK) naming the field.
func Compile(t *hcmv3.HttpConnectionManager_Tracing) (*Config, error) {
	if t == nil {
		return nil, nil
	}
	cfg := &Config{Sampling: 10000, MaxPathTagLength: 256, UpstreamSpans: t.GetSpawnUpstreamSpan().GetValue()}
	if t.RandomSampling != nil {
		cfg.Sampling = percent(t.RandomSampling)
	}
	for name, p := range map[string]*typev3.Percent{"client_sampling": t.ClientSampling, "overall_sampling": t.OverallSampling} {
		if p != nil && p.Value < 100 {
			return nil, fmt.Errorf("tracing.%s: only 100%% is supported", name)
		}
	}
	if t.MaxPathTagLength != nil {
		cfg.MaxPathTagLength = int(t.MaxPathTagLength.Value)
	}
	for i, ct := range t.CustomTags {
		switch {
		case ct.GetLiteral() != nil:
			cfg.Tags = append(cfg.Tags, CustomTag{Name: ct.Tag, Literal: ct.GetLiteral().Value})
		case ct.GetEnvironment() != nil:
			cfg.Tags = append(cfg.Tags, EnvTag(ct.Tag, ct.GetEnvironment().Name, ct.GetEnvironment().DefaultValue))
		case ct.GetRequestHeader() != nil:
			h := ct.GetRequestHeader()
			cfg.Tags = append(cfg.Tags, CustomTag{Name: ct.Tag, Header: lower(h.Name), Default: h.DefaultValue})
		default:
			return nil, fmt.Errorf("tracing.custom_tags[%d] %q: only literal, environment and request_header are supported", i, ct.Tag)
		}
	}
	if t.Provider == nil {
		return cfg, nil
	}
	p, err := compileProvider(t.Provider)
	if err != nil {
		return nil, fmt.Errorf("tracing.provider: %w", err)
	}
	cfg.Provider = p
	return cfg, nil
}

func percent(p *typev3.Percent) uint32 {
	v := p.Value
	if v >= 100 || v != v {
		if v != v {
			return 0
		}
		return 10000
	}
	if v <= 0 {
		return 0
	}
	return uint32(v*100 + 0.5)
}

func compileProvider(h *tracev3.Tracing_Http) (*Provider, error) {
	if h.GetTypedConfig() == nil {
		return nil, fmt.Errorf("%s: typed_config is required", h.Name)
	}
	switch h.Name {
	case OpenTelemetry:
		c := &tracev3.OpenTelemetryConfig{}
		if err := h.GetTypedConfig().UnmarshalTo(c); err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		if c.Sampler != nil || c.Exporter != nil || len(c.ResourceDetectors) > 0 {
			return nil, fmt.Errorf("%s: sampler, exporter and resource_detectors are not supported", h.Name)
		}
		p := &Provider{Kind: OpenTelemetry, ServiceName: c.ServiceName}
		switch {
		case c.GrpcService != nil:
			eg := c.GrpcService.GetEnvoyGrpc()
			if eg == nil || eg.ClusterName == "" {
				return nil, fmt.Errorf("%s: grpc_service must name an envoy_grpc cluster_name", h.Name)
			}
			p.Cluster, p.Authority = eg.ClusterName, eg.Authority
			if c.GrpcService.Timeout != nil {
				p.Timeout = c.GrpcService.Timeout.AsDuration()
			}
		case c.HttpService != nil:
			u := c.HttpService.GetHttpUri()
			if u.GetCluster() == "" {
				return nil, fmt.Errorf("%s: http_service.http_uri must name a cluster", h.Name)
			}
			p.Cluster = u.GetCluster()
			host, path := splitURI(u.Uri)
			if path == "" {
				path = "/v1/traces"
			}
			p.Authority, p.Path = host, path
			if u.Timeout != nil {
				p.Timeout = u.Timeout.AsDuration()
			}
		default:
			return nil, fmt.Errorf("%s: one of grpc_service and http_service is required", h.Name)
		}
		if p.ServiceName == "" {
			p.ServiceName = "unknown_service:envoy"
		}
		return p, nil
	case Zipkin:
		c := &tracev3.ZipkinConfig{}
		if err := h.GetTypedConfig().UnmarshalTo(c); err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		if c.CollectorCluster == "" {
			return nil, fmt.Errorf("%s: collector_cluster is required", h.Name)
		}
		if c.CollectorEndpointVersion != tracev3.ZipkinConfig_HTTP_JSON {
			return nil, fmt.Errorf("%s: collector_endpoint_version %v is not supported (only HTTP_JSON)", h.Name, c.CollectorEndpointVersion)
		}
		p := &Provider{Kind: Zipkin, Cluster: c.CollectorCluster, Path: c.CollectorEndpoint, Authority: c.CollectorHostname}
		if p.Path == "" {
			p.Path = "/api/v2/spans"
		}
		return p, nil
	}
	return nil, fmt.Errorf("unsupported tracer %q (want %s or %s)", h.Name, OpenTelemetry, Zipkin)
}

// splitURI splits "http://host:port/path" (or "host/path") into the host
// and the path.
func splitURI(u string) (host, path string) {
	for _, p := range []string{"http://", "https://"} {
		if len(u) >= len(p) && u[:len(p)] == p {
			u = u[len(p):]
		}
	}
	for i := 0; i < len(u); i++ {
		if u[i] == '/' {
			return u[:i], u[i:]
		}
	}
	return u, ""
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}
