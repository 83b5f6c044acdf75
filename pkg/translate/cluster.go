package translate

import (
	"fmt"
	"math"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/ir"
)

// HTTPProtocolOptions is the key of upstream HTTP options in a cluster's
// typed_extension_protocol_options.
const HTTPProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// unlimited is Istio's default for every circuit-breaker threshold: Envoy's
// own defaults (1024 connections, 3 retries) would throttle a busy gateway.
const unlimited = math.MaxUint32

func orUnlimited(v uint32) *wrapperspb.UInt32Value {
	if v == 0 {
		return wrapperspb.UInt32(unlimited)
	}
	return wrapperspb.UInt32(v)
}

var lbPolicies = map[string]clusterv3.Cluster_LbPolicy{
	"ROUND_ROBIN":   clusterv3.Cluster_ROUND_ROBIN,
	"LEAST_REQUEST": clusterv3.Cluster_LEAST_REQUEST,
	"RANDOM":        clusterv3.Cluster_RANDOM,
	"RING_HASH":     clusterv3.Cluster_RING_HASH,
	"MAGLEV":        clusterv3.Cluster_MAGLEV,
}

func (t *translator) cluster(c *ir.Cluster) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	out := &clusterv3.Cluster{
		Name:           c.Name,
		ConnectTimeout: durationpb.New(c.ConnectTimeout.Duration),
		Metadata:       clusterMetadata(c),
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: c.Name}
	if len(c.Endpoints) > 0 {
		lep := &endpointv3.LocalityLbEndpoints{}
		for _, ep := range c.Endpoints {
			// Only ready endpoints reach the IR; like istiod, say so
			// (istioctl proxy-config eds shows UNKNOWN otherwise).
			e := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address:       ep.Address,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: ep.Port},
				}}},
			}}, HealthStatus: corev3.HealthStatus_HEALTHY}
			if ep.Weight > 0 {
				e.LoadBalancingWeight = wrapperspb.UInt32(ep.Weight)
			}
			e.Metadata = endpointMetadata(c, ep.Labels)
			lep.LbEndpoints = append(lep.LbEndpoints, e)
		}
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{lep}
	}
	switch c.Discovery {
	case ir.DiscoveryEDS:
		out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		out.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: c.Name}
	case ir.DiscoveryStrictDNS:
		out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		out.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
		out.LoadAssignment = cla
		cla = nil
	default:
		return nil, nil, fmt.Errorf("unsupported discovery %q", c.Discovery)
	}
	// Istio's default load balancer is LEAST_REQUEST (Envoy's own default,
	// ROUND_ROBIN, is only used when a DestinationRule asks for it).
	out.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	if lb := c.LoadBalancer; lb != nil {
		p, ok := lbPolicies[lb.Policy]
		if !ok {
			return nil, nil, fmt.Errorf("unsupported load balancer %q", lb.Policy)
		}
		out.LbPolicy = p
		switch p {
		case clusterv3.Cluster_RING_HASH:
			out.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(lb.RingSize),
			}}
		case clusterv3.Cluster_MAGLEV:
			out.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{
				TableSize: wrapperspb.UInt64(lb.RingSize),
			}}
		}
	}
	limits := c.Limits
	if limits == nil {
		limits = &ir.ConnectionLimits{}
	}
	out.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections:     orUnlimited(limits.MaxConnections),
		MaxPendingRequests: orUnlimited(limits.MaxPendingRequests),
		MaxRequests:        orUnlimited(limits.MaxRequests),
		MaxRetries:         orUnlimited(limits.MaxRetries),
		TrackRemaining:     true,
	}}}
	if opts := httpOptions(c, limits); opts != nil {
		out.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptions: toAny(opts)}
	}
	// Istio turns Envoy's panic mode (spread over every host once fewer
	// than 50% are healthy) off on every cluster; a DestinationRule's
	// outlierDetection.minHealthPercent sets it.
	out.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	if o := c.Outlier; o != nil {
		out.OutlierDetection = outlier(o)
		out.CommonLbConfig.HealthyPanicThreshold.Value = float64(o.MinHealthPercent)
	}
	if ka := c.TCPKeepalive; ka != nil {
		k := &corev3.TcpKeepalive{}
		if ka.Probes > 0 {
			k.KeepaliveProbes = wrapperspb.UInt32(ka.Probes)
		}
		if ka.Time != nil {
			k.KeepaliveTime = wrapperspb.UInt32(uint32(ka.Time.Seconds()))
		}
		if ka.Interval != nil {
			k.KeepaliveInterval = wrapperspb.UInt32(uint32(ka.Interval.Seconds()))
		}
		out.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: k}
	}
	if c.TLS != nil {
		out.TransportSocket = &corev3.TransportSocket{
			Name:       TLSTransportSocket,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: toAny(t.upstreamTLS(c.TLS))},
		}
	}
	return out, cla, nil
}

// httpOptions returns upstream HTTP options when the cluster needs any:
// HTTP/2 upstreams, idle timeouts, requests per connection.
func httpOptions(c *ir.Cluster, l *ir.ConnectionLimits) *httpv3.HttpProtocolOptions {
	common := &corev3.HttpProtocolOptions{}
	set := false
	if l.IdleTimeout != nil {
		common.IdleTimeout = durationpb.New(l.IdleTimeout.Duration)
		set = true
	}
	if l.MaxRequestsPerConnection > 0 {
		common.MaxRequestsPerConnection = wrapperspb.UInt32(l.MaxRequestsPerConnection)
		set = true
	}
	if l.MaxConnectionDuration != nil {
		common.MaxConnectionDuration = durationpb.New(l.MaxConnectionDuration.Duration)
		set = true
	}
	if !set && c.Protocol != "HTTP2" {
		return nil
	}
	opts := &httpv3.HttpProtocolOptions{}
	if set {
		opts.CommonHttpProtocolOptions = common
	}
	if c.Protocol == "HTTP2" {
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}}
	} else {
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}}
	}
	return opts
}

func outlier(o *ir.OutlierDetection) *clusterv3.OutlierDetection {
	// Istio turns Envoy's success-rate ejection (on by default) off: only
	// the consecutive-error detectors a DestinationRule names apply.
	out := &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	enforcing := func(v uint32) *wrapperspb.UInt32Value {
		if v > 0 {
			return wrapperspb.UInt32(100)
		}
		return wrapperspb.UInt32(0)
	}
	if o.Consecutive5xx != nil {
		out.Consecutive_5Xx = wrapperspb.UInt32(*o.Consecutive5xx)
		out.EnforcingConsecutive_5Xx = enforcing(*o.Consecutive5xx)
	}
	if o.ConsecutiveGateway != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(*o.ConsecutiveGateway)
		out.EnforcingConsecutiveGatewayFailure = enforcing(*o.ConsecutiveGateway)
	}
	if o.SplitExternalLocalErr {
		out.SplitExternalLocalOriginErrors = true
		out.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(0) // as Istio
		if o.ConsecutiveLocal != nil {
			out.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(*o.ConsecutiveLocal)
			out.EnforcingConsecutiveLocalOriginFailure = enforcing(*o.ConsecutiveLocal)
		}
	}
	if o.Interval != nil {
		out.Interval = durationpb.New(o.Interval.Duration)
	}
	if o.BaseEjectionTime != nil {
		out.BaseEjectionTime = durationpb.New(o.BaseEjectionTime.Duration)
	}
	out.MaxEjectionPercent = wrapperspb.UInt32(o.MaxEjectionPercent)
	return out
}

func (t *translator) upstreamTLS(u *ir.UpstreamTLS) *tlsv3.UpstreamTlsContext {
	// As Istio: TLS 1.2 to 1.3 (Envoy's client alone stops at 1.2).
	common := &tlsv3.CommonTlsContext{AlpnProtocols: u.ALPN, TlsParams: &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
	}}
	if u.CertificateSecret != "" {
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsConfig(u.CertificateSecret)}
	}
	switch {
	case u.InsecureSkipVerify:
		// No validation context: Envoy does not verify the upstream.
	case u.ValidationSecret != "":
		common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sanMatchers(u.SubjectAltNames)},
				ValidationContextSdsSecretConfig: sdsConfig(u.ValidationSecret),
			},
		}
	default:
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:                 &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: t.opts.SystemCAPath}},
			MatchTypedSubjectAltNames: sanMatchers(u.SubjectAltNames),
		}}
	}
	return &tlsv3.UpstreamTlsContext{Sni: u.SNI, CommonTlsContext: common}
}

// clusterMetadata follows Istio: istio.services names the service, and
// istio.config the DestinationRule when one applies — never a
// ServiceEntry or Service, which istioctl would show in its DESTINATION
// RULE column (portico.sources still lists every source).
func clusterMetadata(c *ir.Cluster) *corev3.Metadata {
	svc := []mdField{{"host", mdString(c.Service)}}
	if name, ns, ok := strings.Cut(strings.TrimSuffix(c.Service, ".svc.cluster.local"), "."); ok && strings.HasSuffix(c.Service, ".svc.cluster.local") {
		svc = append(svc, mdField{"name", mdString(name)}, mdField{"namespace", mdString(ns)})
	}
	istio := []mdField{{"services", mdList(mdStruct(svc...))}}
	if c.Subset != "" {
		istio = append(istio, mdField{"subset", mdString(c.Subset)})
	}
	config := ""
	for _, r := range c.Sources {
		if r.Kind == "DestinationRule" {
			config = r.ConfigPath()
		}
	}
	if config != "" {
		istio = append(istio, mdField{"config", mdString(config)})
	}
	return sourceMetadataOf(c.Sources, istio)
}

// Istio's workload labels, in precedence order (pkg/model/labels in
// Istio).
var (
	canonicalNameLabels     = []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"}
	canonicalRevisionLabels = []string{"service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"}
)

func firstLabel(labels map[string]string, keys []string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}

// endpointMetadata describes the workload behind an endpoint from its
// labels, as istiod does: istio.workload is
// "name;namespace;canonical service;canonical revision;cluster" (the
// proxy's Istio metrics read it for destination_workload and
// destination_canonical_*), and portico.labels carries app and version
// (destination_app, destination_version). The namespace is the service's
// (a Kubernetes Service selects pods in its own namespace); the workload
// name is the service.istio.io/workload-name label when present (the IR
// does not carry the pod's owner), else unknown. Endpoints without labels
// get none.
func endpointMetadata(c *ir.Cluster, labels map[string]string) *corev3.Metadata {
	if len(labels) == 0 {
		return nil
	}
	ns := ""
	if _, rest, ok := strings.Cut(c.Service, "."); ok {
		if n, _, ok := strings.Cut(rest, "."); ok && strings.HasPrefix(rest[len(n):], ".svc.") {
			ns = n
		}
	}
	workload := labels["service.istio.io/workload-name"]
	canonical := firstLabel(labels, canonicalNameLabels)
	if canonical == "" {
		canonical = workload
	}
	revision := firstLabel(labels, canonicalRevisionLabels)
	if revision == "" {
		revision = "latest"
	}
	filters := []mdField{{metaIstio, mdStruct(mdField{"workload", mdString(strings.Join([]string{workload, ns, canonical, revision, labels["topology.istio.io/cluster"]}, ";"))})}}
	var app []mdField
	for _, k := range []string{"app", "version"} {
		if v := labels[k]; v != "" {
			app = append(app, mdField{k, mdString(v)})
		}
	}
	if len(app) > 0 {
		filters = append(filters, mdField{metaPortico, mdStruct(mdField{"labels", mdStruct(app...)})})
	}
	return packMetadata(filters...)
}
