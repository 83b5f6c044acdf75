package translate

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/ir"
)

// Extension names, as Envoy registers them.
const (
	HTTPConnectionManager = "envoy.filters.network.http_connection_manager"
	TCPProxy              = "envoy.filters.network.tcp_proxy"
	TLSInspector          = "envoy.filters.listener.tls_inspector"
	TLSTransportSocket    = "envoy.transport_sockets.tls"
	RouterFilter          = "envoy.filters.http.router"
	FaultFilter           = "envoy.filters.http.fault"
	CORSFilter            = "envoy.filters.http.cors"
	StdoutAccessLog       = "envoy.access_loggers.stdout"
)

// tcpIdleTimeout is Istio's default idle timeout for TCP proxies.
const tcpIdleTimeout = time.Hour

func (t *translator) listener(l *ir.Listener) (*listenerv3.Listener, error) {
	lis := &listenerv3.Listener{
		Name: l.Name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address:       l.Address,
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: l.Port},
		}}},
		Metadata: sourceMetadata(l.Sources),
		// What a connection may buffer, as Istio sets it on gateways.
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(t.opts.Edge.PerConnectionBufferLimitBytes),
	}
	if l.NeedsTLSInspector() {
		lis.ListenerFilters = []*listenerv3.ListenerFilter{{
			Name:       TLSInspector,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: toAny(&tlsinspectorv3.TlsInspector{})},
		}}
	}
	if len(l.FilterChains) == 0 {
		return nil, fmt.Errorf("no filter chains")
	}
	for _, fc := range l.FilterChains {
		chain, err := t.filterChain(fc)
		if err != nil {
			return nil, fmt.Errorf("filter chain %s: %w", fc.Name, err)
		}
		lis.FilterChains = append(lis.FilterChains, chain)
	}
	return lis, nil
}

func (t *translator) filterChain(fc *ir.FilterChain) (*listenerv3.FilterChain, error) {
	chain := &listenerv3.FilterChain{Name: fc.Name, Metadata: sourceMetadata(fc.Sources)}
	if len(fc.ServerNames) > 0 {
		chain.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: fc.ServerNames}
	}
	if fc.TLS != nil {
		chain.TransportSocket = &corev3.TransportSocket{
			Name:       TLSTransportSocket,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: toAny(downstreamTLS(fc.TLS))},
		}
	}
	switch {
	case fc.HTTP != nil && fc.TCP == nil:
		m, err := t.hcm(fc.HTTP, fc.TLS != nil, fc.Security)
		if err != nil {
			return nil, err
		}
		chain.Filters = []*listenerv3.Filter{{
			Name:       HTTPConnectionManager,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: toAny(m)},
		}}
	case fc.TCP != nil && fc.HTTP == nil:
		tp, err := t.tcpProxy(fc.TCP)
		if err != nil {
			return nil, err
		}
		rbac, err := networkRBACFilters(fc.Security)
		if err != nil {
			return nil, err
		}
		chain.Filters = append(rbac, &listenerv3.Filter{
			Name:       TCPProxy,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: toAny(tp)},
		})
	default:
		return nil, fmt.Errorf("exactly one of http and tcp must be set")
	}
	return chain, nil
}

// hcm is an HTTP connection manager as Istio configures one for a gateway:
// the edge of the network (use_remote_address), ports ignored in Host
// matching, paths normalised, fault and CORS filters ahead of the router.
func (t *translator) hcm(h *ir.HTTPFilter, tls bool, sec *ir.Security) (*hcmv3.HttpConnectionManager, error) {
	// Authentication, authorization and rate limiting come first, in
	// istiod's order; a chain without them gets exactly the filters below.
	first, err := securityHTTPFilters(sec, h.LocalRateLimit)
	if err != nil {
		return nil, err
	}
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: h.StatPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: h.RouteConfig,
			ConfigSource:    adsSource(),
		}},
		HttpFilters: append(first,
			&hcmv3.HttpFilter{Name: FaultFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(&faultv3.HTTPFault{})}},
			&hcmv3.HttpFilter{Name: CORSFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(&corsv3.Cors{})}},
			&hcmv3.HttpFilter{Name: RouterFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(&routerv3.Router{})}},
		),
		// WebSockets pass, as istiod configures every gateway.
		UpgradeConfigs:   []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		UseRemoteAddress: wrapperspb.Bool(true),
		NormalizePath:    wrapperspb.Bool(true),
		ServerName:       t.opts.ServerName,
		AccessLog:        t.accessLog(),
		Tracing:          t.tracing(),
	}
	if f := t.statsFilter(); f != nil {
		// Ahead of the router, where istiod puts it.
		m.HttpFilters = append(m.HttpFilters[:len(m.HttpFilters)-1], f, m.HttpFilters[len(m.HttpFilters)-1])
	}
	t.applyEdge(m)
	if tls && h.ForwardClientCert {
		m.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		m.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapperspb.Bool(true), Dns: true, Uri: true,
		}
	}
	return m, nil
}

func (t *translator) tcpProxy(f *ir.TCPFilter) (*tcpproxyv3.TcpProxy, error) {
	if len(f.Clusters) == 0 {
		return nil, fmt.Errorf("tcp proxy without clusters")
	}
	idle := tcpIdleTimeout
	if f.IdleTimeout != nil {
		idle = f.IdleTimeout.Duration
	}
	tp := &tcpproxyv3.TcpProxy{
		StatPrefix:  f.StatPrefix,
		AccessLog:   t.accessLog(),
		IdleTimeout: durationpb.New(idle),
	}
	if len(f.Clusters) == 1 {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: f.Clusters[0].Name}
		return tp, nil
	}
	wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
	for _, c := range f.Clusters {
		wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: c.Name, Weight: c.Weight})
	}
	tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	return tp, nil
}

var tlsVersions = map[string]tlsv3.TlsParameters_TlsProtocol{
	"TLSv1_0": tlsv3.TlsParameters_TLSv1_0,
	"TLSv1_1": tlsv3.TlsParameters_TLSv1_1,
	"TLSv1_2": tlsv3.TlsParameters_TLSv1_2,
	"TLSv1_3": tlsv3.TlsParameters_TLSv1_3,
}

func sdsConfig(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsSource()}
}

// sanMatchers turns subjectAltNames into typed matchers: URIs (spiffe://…)
// as URI SANs, everything else as DNS SANs.
func sanMatchers(sans []string) []*tlsv3.SubjectAltNameMatcher {
	var out []*tlsv3.SubjectAltNameMatcher
	for _, s := range sans {
		typ := tlsv3.SubjectAltNameMatcher_DNS
		if containsScheme(s) {
			typ = tlsv3.SubjectAltNameMatcher_URI
		}
		out = append(out, &tlsv3.SubjectAltNameMatcher{
			SanType: typ,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}},
		})
	}
	return out
}

func containsScheme(s string) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == ':' && s[i+1] == '/' && s[i+2] == '/' {
			return true
		}
	}
	return false
}

func tlsParams(minV, maxV string, ciphers []string) *tlsv3.TlsParameters {
	if minV == "" && maxV == "" && len(ciphers) == 0 {
		return nil
	}
	p := &tlsv3.TlsParameters{CipherSuites: ciphers}
	if v, ok := tlsVersions[minV]; ok {
		p.TlsMinimumProtocolVersion = v
	}
	if v, ok := tlsVersions[maxV]; ok {
		p.TlsMaximumProtocolVersion = v
	}
	return p
}

func downstreamTLS(d *ir.DownstreamTLS) *tlsv3.DownstreamTlsContext {
	common := &tlsv3.CommonTlsContext{
		TlsParams:     tlsParams(d.MinVersion, d.MaxVersion, d.CipherSuites),
		AlpnProtocols: d.ALPN,
	}
	for _, name := range d.CertificateSecrets {
		common.TlsCertificateSdsSecretConfigs = append(common.TlsCertificateSdsSecretConfigs, sdsConfig(name))
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	if d.ValidationSecret != "" {
		common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sanMatchers(d.SubjectAltNames)},
				ValidationContextSdsSecretConfig: sdsConfig(d.ValidationSecret),
			},
		}
		if d.Mode == ir.TLSMutual {
			ctx.RequireClientCertificate = wrapperspb.Bool(true)
		}
	}
	return ctx
}
