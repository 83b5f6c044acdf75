package translate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portico-gateway/portico/pkg/ir"
)

// Tracer extension names, as istiod configures them.
const (
	OpenTelemetryTracer = "envoy.tracers.opentelemetry"
	ZipkinTracer        = "envoy.tracers.zipkin"
)

// TracingProvider is a meshConfig extensionProviders entry of kind
// opentelemetry or zipkin.
type TracingProvider struct {
	// Name is the provider's name in meshConfig (for messages).
	Name string
	// Kind is "opentelemetry" or "zipkin".
	Kind string
	// Service and Port are the collector's; Service is a host name
	// (FQDN, "ns/host" already reduced to the host) or an IP.
	Service string
	Port    uint32
	// Path: Zipkin's collector endpoint (default /api/v2/spans); for
	// opentelemetry, setting HTTP sends OTLP/HTTP to Path (default
	// /v1/traces) instead of OTLP/gRPC.
	Path    string
	HTTP    bool
	Timeout time.Duration
	// MaxTagLength is maxTagLength (Envoy's max_path_tag_length).
	MaxTagLength uint32
}

// ClusterName is the cluster istiod points a tracer at:
// outbound|port||service.
func (p *TracingProvider) ClusterName() string {
	return "outbound|" + strconv.FormatUint(uint64(p.Port), 10) + "||" + p.Service
}

// TracingTag is a Telemetry customTags entry: a literal, a request header
// (with a default) or an environment variable (with a default).
type TracingTag struct {
	Name        string
	Literal     string
	Header      string
	Environment string
	Default     string
}

// Tracing is the tracing a gateway's connection managers carry.
type Tracing struct {
	// Provider receives spans (nil: spans are not reported, as with
	// Telemetry disableSpanReporting; context still propagates).
	Provider *TracingProvider
	// SamplingPercent is the random sampling percentage of requests
	// that arrive without a decision (0..100).
	SamplingPercent float64
	Tags            []TracingTag
	// ServiceName is the service the spans are reported as (Istio: the
	// gateway's canonical service and namespace, "name.namespace").
	ServiceName string
}

// Validate names the bad field.
func (tr *Tracing) Validate() error {
	if tr.SamplingPercent < 0 || tr.SamplingPercent > 100 || tr.SamplingPercent != tr.SamplingPercent {
		return fmt.Errorf("randomSamplingPercentage: %v is not within 0..100", tr.SamplingPercent)
	}
	for i, tag := range tr.Tags {
		n := 0
		for _, s := range []string{tag.Literal, tag.Header, tag.Environment} {
			if s != "" {
				n++
			}
		}
		if tag.Name == "" || n > 1 {
			return fmt.Errorf("customTags[%d] %q: a name and at most one of literal, header, environment", i, tag.Name)
		}
	}
	if p := tr.Provider; p != nil {
		switch {
		case p.Kind != "opentelemetry" && p.Kind != "zipkin":
			return fmt.Errorf("extensionProviders %q: tracing provider kind %q is not supported (opentelemetry, zipkin)", p.Name, p.Kind)
		case p.Service == "":
			return fmt.Errorf("extensionProviders %q: %s.service is required", p.Name, p.Kind)
		case p.Port == 0 || p.Port > 65535:
			return fmt.Errorf("extensionProviders %q: %s.port %d is not a port", p.Name, p.Kind, p.Port)
		case p.Path != "" && !strings.HasPrefix(p.Path, "/"):
			return fmt.Errorf("extensionProviders %q: path %q must start with /", p.Name, p.Path)
		}
	}
	return nil
}

// tracing is the HCM's tracing block (nil without tracing).
func (t *translator) tracing() *hcmv3.HttpConnectionManager_Tracing {
	tr := t.opts.Tracing
	if tr == nil {
		return nil
	}
	out := &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: tr.SamplingPercent},
		// A client span per upstream attempt, so retries show.
		SpawnUpstreamSpan: wrapperspb.Bool(true),
	}
	for _, tag := range tr.Tags {
		ct := &tracingv3.CustomTag{Tag: tag.Name}
		switch {
		case tag.Header != "":
			ct.Type = &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{Name: tag.Header, DefaultValue: tag.Default}}
		case tag.Environment != "":
			ct.Type = &tracingv3.CustomTag_Environment_{Environment: &tracingv3.CustomTag_Environment{Name: tag.Environment, DefaultValue: tag.Default}}
		default:
			ct.Type = &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: tag.Literal}}
		}
		out.CustomTags = append(out.CustomTags, ct)
	}
	p := tr.Provider
	if p == nil {
		return out
	}
	if p.MaxTagLength > 0 {
		out.MaxPathTagLength = wrapperspb.UInt32(p.MaxTagLength)
	}
	service := tr.ServiceName
	if service == "" {
		service = "istio-ingressgateway"
	}
	switch p.Kind {
	case "zipkin":
		path := p.Path
		if path == "" {
			path = "/api/v2/spans"
		}
		out.Provider = &tracev3.Tracing_Http{Name: ZipkinTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: toAny(&tracev3.ZipkinConfig{
			CollectorCluster: p.ClusterName(), CollectorEndpoint: path,
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON, TraceId_128Bit: true,
			SharedSpanContext: wrapperspb.Bool(false), CollectorHostname: p.Service,
		})}}
	default:
		oc := &tracev3.OpenTelemetryConfig{ServiceName: service}
		if p.HTTP {
			path := p.Path
			if path == "" {
				path = "/v1/traces"
			}
			u := &corev3.HttpUri{Uri: p.Service + ":" + strconv.FormatUint(uint64(p.Port), 10) + path,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: p.ClusterName()}, Timeout: durationpb.New(orDuration(p.Timeout, 5*time.Second))}
			oc.HttpService = &corev3.HttpService{HttpUri: u}
		} else {
			g := &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: p.ClusterName(), Authority: p.Service}}}
			if p.Timeout > 0 {
				g.Timeout = durationpb.New(p.Timeout)
			}
			oc.GrpcService = g
		}
		out.Provider = &tracev3.Tracing_Http{Name: OpenTelemetryTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: toAny(oc)}}
	}
	return out
}

func orDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// tracingCluster is the collector's cluster when no routed destination
// already provides it: the service's DNS name (an IP passes through),
// HTTP/2 for OTLP over gRPC.
func (t *translator) tracingCluster(have []*ir.Cluster) *ir.Cluster {
	tr := t.opts.Tracing
	if tr == nil || tr.Provider == nil {
		return nil
	}
	name := tr.Provider.ClusterName()
	if slices.ContainsFunc(have, func(c *ir.Cluster) bool { return c.Name == name }) {
		return nil
	}
	p := tr.Provider
	c := &ir.Cluster{Name: p.ClusterName(), Service: p.Service, Port: p.Port, Discovery: ir.DiscoveryStrictDNS,
		Endpoints:      []ir.Endpoint{{Address: p.Service, Port: p.Port}},
		ConnectTimeout: metav1.Duration{Duration: 10 * time.Second}}
	if p.Kind == "opentelemetry" && !p.HTTP {
		c.Protocol = "HTTP2"
	}
	return c
}

// SetTracing replaces the tracing of the next translations (a Telemetry
// resource changed).
func (tr *Translator) SetTracing(t *Tracing) { tr.t.opts.Tracing = t }
