// Package upstream manages clusters: their endpoints (EDS or DNS), load
// balancing, HTTP/1.1 connection pools, circuit breakers, outlier detection
// and TLS origination.
package upstream

import (
	"crypto/tls"
	"fmt"
	"math"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// LBPolicy is a load-balancing policy.
type LBPolicy int

// Policies.
const (
	RoundRobin LBPolicy = iota
	LeastRequest
	Random
	RingHash
	Maglev
)

// Discovery is how a cluster finds hosts.
type Discovery int

// Discovery types.
const (
	EDS Discovery = iota
	StrictDNS
)

// Limits are circuit-breaker thresholds.
type Limits struct {
	MaxConnections     int64
	MaxPendingRequests int64
	MaxRequests        int64
	MaxRetries         int64
}

// OutlierConfig configures outlier detection.
type OutlierConfig struct {
	Consecutive5xx         uint32
	Enforcing5xx           uint32 // percent
	ConsecutiveGateway     uint32
	EnforcingGateway       uint32
	SplitLocalOrigin       bool
	ConsecutiveLocalOrigin uint32
	EnforcingLocalOrigin   uint32
	Interval               time.Duration
	BaseEjectionTime       time.Duration
	MaxEjectionTime        time.Duration
	MaxEjectionPercent     uint32
}

// TLSConfig originates TLS to the upstream.
type TLSConfig struct {
	SNI              string
	CertSecret       string
	ValidationSecret string
	// TrustedCAFile is a CA bundle on disk (the system bundle when a
	// DestinationRule gives no CA).
	TrustedCAFile string
	SANs          []SANMatcher
	ALPN          []string
	// MinVersion and MaxVersion come from tls_params (crypto/tls
	// constants); zero is TLS 1.2 and TLS 1.3, the versions Portico's
	// translator (like Istio) asks for.
	MinVersion, MaxVersion uint16
	// Verify is false when no validation context is configured.
	Verify bool
}

// SANMatcher matches one subject alternative name.
type SANMatcher struct {
	Type  tlsv3.SubjectAltNameMatcher_SanType
	Exact string
}

// EndpointSpec is one configured endpoint.
type EndpointSpec struct {
	Address string // IP, or a DNS name for STRICT_DNS
	Port    uint32
	Weight  uint32
	Healthy bool
	// Meta describes the workload behind the endpoint (nil: unknown).
	Meta *EndpointMeta
}

// ServiceMeta is the service a cluster sends to, from its
// filter_metadata istio.services (as istiod writes it), for Istio's
// destination_service labels.
type ServiceMeta struct {
	Host      string // FQDN, e.g. reviews.default.svc.cluster.local
	Name      string
	Namespace string
}

// EndpointMeta is the workload behind an endpoint: Istio's EDS metadata
// istio.workload ("name;namespace;canonical service;canonical
// revision;cluster") plus the app and version labels (portico.labels),
// for Istio's destination_workload, destination_app, … labels. Empty
// fields are unknown.
type EndpointMeta struct {
	Workload          string
	Namespace         string
	CanonicalService  string
	CanonicalRevision string
	Cluster           string
	App               string
	Version           string
}

// ClusterConfig is a compiled Envoy cluster.
type ClusterConfig struct {
	Name           string
	Discovery      Discovery
	EDSServiceName string
	ConnectTimeout time.Duration
	LB             LBPolicy
	RingSize       uint64
	Limits         Limits
	Outlier        *OutlierConfig
	// PanicThreshold is the healthy percentage below which balancing
	// ignores health (Envoy default 50).
	PanicThreshold           float64
	HTTP2                    bool
	IdleTimeout              time.Duration
	MaxRequestsPerConnection uint32
	MaxConnectionDuration    time.Duration
	KeepaliveProbes          uint32
	KeepaliveTime            time.Duration
	KeepaliveInterval        time.Duration
	TLS                      *TLSConfig
	// Static endpoints (STRICT_DNS load_assignment).
	Endpoints []EndpointSpec
	// Service is the destination service (nil when the cluster's
	// metadata names none).
	Service *ServiceMeta
}

func thresholdValue(v interface{ GetValue() uint32 }, def int64) int64 {
	if v == nil {
		return def
	}
	x := int64(v.GetValue())
	if x >= math.MaxUint32 {
		return math.MaxInt64
	}
	return x
}

// CompileCluster converts an Envoy cluster.
func CompileCluster(c *clusterv3.Cluster) (*ClusterConfig, error) {
	cfg := &ClusterConfig{
		Name:           c.Name,
		ConnectTimeout: 5 * time.Second, // Envoy's default
		PanicThreshold: 50,
		IdleTimeout:    time.Hour,
		Limits:         Limits{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3},
	}
	if c.ConnectTimeout != nil {
		cfg.ConnectTimeout = c.ConnectTimeout.AsDuration()
	}
	cfg.Service = serviceMeta(c.GetMetadata())
	switch c.GetType() {
	case clusterv3.Cluster_EDS:
		cfg.Discovery = EDS
		cfg.EDSServiceName = c.GetEdsClusterConfig().GetServiceName()
		if cfg.EDSServiceName == "" {
			cfg.EDSServiceName = c.Name
		}
	case clusterv3.Cluster_STRICT_DNS:
		cfg.Discovery = StrictDNS
		if c.DnsLookupFamily != clusterv3.Cluster_V4_ONLY && c.DnsLookupFamily != clusterv3.Cluster_AUTO && c.DnsLookupFamily != clusterv3.Cluster_V4_PREFERRED {
			return nil, fmt.Errorf("unsupported dns_lookup_family %s", c.DnsLookupFamily)
		}
		eps, err := CompileEndpoints(c.LoadAssignment)
		if err != nil {
			return nil, err
		}
		cfg.Endpoints = eps
	default:
		return nil, fmt.Errorf("unsupported cluster type %s", c.GetType())
	}
	switch c.LbPolicy {
	case clusterv3.Cluster_ROUND_ROBIN:
		cfg.LB = RoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		cfg.LB = LeastRequest
	case clusterv3.Cluster_RANDOM:
		cfg.LB = Random
	case clusterv3.Cluster_RING_HASH:
		cfg.LB, cfg.RingSize = RingHash, 1024
		if s := c.GetRingHashLbConfig().GetMinimumRingSize(); s != nil {
			cfg.RingSize = s.Value
		}
	case clusterv3.Cluster_MAGLEV:
		cfg.LB, cfg.RingSize = Maglev, 65537
		if s := c.GetMaglevLbConfig().GetTableSize(); s != nil {
			cfg.RingSize = s.Value
		}
	default:
		return nil, fmt.Errorf("unsupported lb_policy %s", c.LbPolicy)
	}
	if cb := c.CircuitBreakers; cb != nil {
		for _, t := range cb.Thresholds {
			if t.Priority != corev3.RoutingPriority_DEFAULT {
				continue // only default-priority traffic exists here
			}
			cfg.Limits = Limits{
				MaxConnections:     thresholdValue(t.MaxConnections, 1024),
				MaxPendingRequests: thresholdValue(t.MaxPendingRequests, 1024),
				MaxRequests:        thresholdValue(t.MaxRequests, 1024),
				MaxRetries:         thresholdValue(t.MaxRetries, 3),
			}
		}
	}
	if od := c.OutlierDetection; od != nil {
		// Success-rate ejection is not implemented: accept it only turned
		// off, as Istio's translator (and Portico's) sends it.
		if od.GetEnforcingSuccessRate().GetValue() != 0 || od.GetEnforcingLocalOriginSuccessRate().GetValue() != 0 {
			return nil, fmt.Errorf("cluster %s: outlier_detection success-rate ejection (enforcing_success_rate > 0) is not supported", c.Name)
		}
		pct := func(v interface{ GetValue() uint32 }, def uint32) uint32 {
			if v == nil {
				return def
			}
			return v.GetValue()
		}
		o := &OutlierConfig{
			Consecutive5xx:         pct(od.Consecutive_5Xx, 5),
			Enforcing5xx:           pct(od.EnforcingConsecutive_5Xx, 100),
			ConsecutiveGateway:     pct(od.ConsecutiveGatewayFailure, 5),
			EnforcingGateway:       pct(od.EnforcingConsecutiveGatewayFailure, 0),
			SplitLocalOrigin:       od.SplitExternalLocalOriginErrors,
			ConsecutiveLocalOrigin: pct(od.ConsecutiveLocalOriginFailure, 5),
			EnforcingLocalOrigin:   pct(od.EnforcingConsecutiveLocalOriginFailure, 100),
			Interval:               10 * time.Second,
			BaseEjectionTime:       30 * time.Second,
			MaxEjectionTime:        300 * time.Second,
			MaxEjectionPercent:     pct(od.MaxEjectionPercent, 10),
		}
		if od.Interval != nil {
			o.Interval = od.Interval.AsDuration()
		}
		if od.BaseEjectionTime != nil {
			o.BaseEjectionTime = od.BaseEjectionTime.AsDuration()
		}
		if o.MaxEjectionTime < o.BaseEjectionTime {
			o.MaxEjectionTime = o.BaseEjectionTime
		}
		cfg.Outlier = o
	}
	if p := c.GetCommonLbConfig().GetHealthyPanicThreshold(); p != nil {
		cfg.PanicThreshold = p.Value
	}
	for name, opt := range c.TypedExtensionProtocolOptions {
		if name != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
			return nil, fmt.Errorf("unsupported protocol options %q", name)
		}
		po := &httpv3.HttpProtocolOptions{}
		if err := opt.UnmarshalTo(po); err != nil {
			return nil, fmt.Errorf("protocol options: %w", err)
		}
		if common := po.CommonHttpProtocolOptions; common != nil {
			if common.IdleTimeout != nil {
				cfg.IdleTimeout = common.IdleTimeout.AsDuration()
			}
			cfg.MaxRequestsPerConnection = common.GetMaxRequestsPerConnection().GetValue()
			if common.MaxConnectionDuration != nil {
				cfg.MaxConnectionDuration = common.MaxConnectionDuration.AsDuration()
			}
		}
		if po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
			cfg.HTTP2 = true
		}
	}
	if ka := c.GetUpstreamConnectionOptions().GetTcpKeepalive(); ka != nil {
		cfg.KeepaliveProbes = ka.GetKeepaliveProbes().GetValue()
		cfg.KeepaliveTime = time.Duration(ka.GetKeepaliveTime().GetValue()) * time.Second
		cfg.KeepaliveInterval = time.Duration(ka.GetKeepaliveInterval().GetValue()) * time.Second
	}
	if ts := c.TransportSocket; ts != nil {
		t, err := compileUpstreamTLS(ts)
		if err != nil {
			return nil, err
		}
		cfg.TLS = t
	}
	return cfg, nil
}

func compileUpstreamTLS(ts *corev3.TransportSocket) (*TLSConfig, error) {
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		return nil, fmt.Errorf("transport socket %s: %w", ts.Name, err)
	}
	common := ctx.CommonTlsContext
	t := &TLSConfig{SNI: ctx.Sni, ALPN: common.GetAlpnProtocols()}
	if p := common.GetTlsParams(); p != nil {
		var ok bool
		if p.TlsMinimumProtocolVersion != tlsv3.TlsParameters_TLS_AUTO {
			if t.MinVersion, ok = tlsVersions[p.TlsMinimumProtocolVersion]; !ok {
				return nil, fmt.Errorf("tls_params.tls_minimum_protocol_version %v is not supported", p.TlsMinimumProtocolVersion)
			}
		}
		if p.TlsMaximumProtocolVersion != tlsv3.TlsParameters_TLS_AUTO {
			if t.MaxVersion, ok = tlsVersions[p.TlsMaximumProtocolVersion]; !ok {
				return nil, fmt.Errorf("tls_params.tls_maximum_protocol_version %v is not supported", p.TlsMaximumProtocolVersion)
			}
		}
		if len(p.CipherSuites) > 0 {
			return nil, fmt.Errorf("tls_params.cipher_suites is not supported on upstream TLS")
		}
	}
	if certs := common.GetTlsCertificateSdsSecretConfigs(); len(certs) > 0 {
		t.CertSecret = certs[0].Name
	}
	var vc *tlsv3.CertificateValidationContext
	switch v := common.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc = v.ValidationContext
		if f := vc.GetTrustedCa().GetFilename(); f != "" {
			t.TrustedCAFile = f
		} else if vc.GetTrustedCa() != nil {
			return nil, fmt.Errorf("upstream trusted_ca must be a file or an SDS secret")
		}
		t.Verify = true
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		vc = v.CombinedValidationContext.DefaultValidationContext
		t.ValidationSecret = v.CombinedValidationContext.GetValidationContextSdsSecretConfig().GetName()
		t.Verify = true
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		t.ValidationSecret = v.ValidationContextSdsSecretConfig.Name
		t.Verify = true
	}
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		exact := m.GetMatcher().GetExact()
		if exact == "" {
			return nil, fmt.Errorf("subject alt name matchers must be exact")
		}
		t.SANs = append(t.SANs, SANMatcher{Type: m.SanType, Exact: exact})
	}
	return t, nil
}

// CompileEndpoints converts a ClusterLoadAssignment.
func CompileEndpoints(cla *endpointv3.ClusterLoadAssignment) ([]EndpointSpec, error) {
	var out []EndpointSpec
	for _, loc := range cla.GetEndpoints() {
		for _, lb := range loc.LbEndpoints {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("endpoint without a socket address")
			}
			ep := EndpointSpec{Address: sa.Address, Port: sa.GetPortValue(), Weight: 1, Healthy: true}
			if w := lb.GetLoadBalancingWeight(); w != nil && w.Value > 0 {
				ep.Weight = w.Value
			}
			switch lb.HealthStatus {
			case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
				ep.Healthy = false
			}
			ep.Meta = endpointMeta(lb.GetMetadata())
			out = append(out, ep)
		}
	}
	return out, nil
}

// serviceMeta reads istio.services[0] {host, name, namespace}.
func serviceMeta(md *corev3.Metadata) *ServiceMeta {
	svcs := md.GetFilterMetadata()["istio"].GetFields()["services"].GetListValue().GetValues()
	if len(svcs) == 0 {
		return nil
	}
	f := svcs[0].GetStructValue().GetFields()
	s := &ServiceMeta{Host: f["host"].GetStringValue(), Name: f["name"].GetStringValue(), Namespace: f["namespace"].GetStringValue()}
	if s.Host == "" {
		return nil
	}
	return s
}

// endpointMeta reads istio.workload and portico.labels {app, version}.
// Istio's workload string has five ';'-separated fields; a value with
// fewer is read as far as it goes.
func endpointMeta(md *corev3.Metadata) *EndpointMeta {
	fm := md.GetFilterMetadata()
	w := fm["istio"].GetFields()["workload"].GetStringValue()
	labels := fm["portico"].GetFields()["labels"].GetStructValue().GetFields()
	if w == "" && len(labels) == 0 {
		return nil
	}
	m := &EndpointMeta{App: labels["app"].GetStringValue(), Version: labels["version"].GetStringValue()}
	parts := strings.SplitN(w, ";", 5)
	for i, dst := range []*string{&m.Workload, &m.Namespace, &m.CanonicalService, &m.CanonicalRevision, &m.Cluster} {
		if i < len(parts) {
			*dst = parts[i]
		}
	}
	return m
}

var tlsVersions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10,
	tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12,
	tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}
