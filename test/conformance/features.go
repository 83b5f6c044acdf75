//go:build linux

package conformance

import (
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// supportedFeatures is what Portico claims to the suite: the core of
// every profile, plus the extended features listed per kind below. A
// feature goes in only when its tests pass; the README's conformance
// section lists every extended feature not claimed and why.
func supportedFeatures() []features.FeatureName {
	core := []sets.Set[features.Feature]{
		features.GatewayCoreFeatures, features.HTTPRouteCoreFeatures, features.ReferenceGrantCoreFeatures,
	}
	names := features.SetsToNamesSet(core...)
	for _, list := range [][]features.FeatureName{gatewayExtended, httpRouteExtended, otherRouteFeatures, policyFeatures} {
		for _, f := range list {
			names.Insert(f)
		}
	}
	return names.UnsortedList()
}

// gatewayExtended: extended Gateway features implemented and passing.
// Not claimed: GatewayStaticAddresses (spec.addresses is refused: the
// address comes from the proxies' Service); GatewayFrontendClientCertificateValidation
// (implemented; GatewayFrontendInvalidDefaultClientCertificateValidation
// reads the new Gateway's first address before the harness's load
// balancer assigns one and gets the Service's cluster IP, which routes
// nowhere without kube-proxy); ...InsecureFallback (an untrusted client
// certificate is still refused: the proxy has no ACCEPT_UNTRUSTED mode);
// GatewayBackendClientCertificate (spec.tls.backend not implemented);
// ListenerSet (not implemented).
var gatewayExtended = []features.FeatureName{
	features.SupportGatewayPort8080,
	features.SupportGatewayHTTPListenerIsolation,
	features.SupportGatewayHTTPSListenerDetectMisdirectedRequests,
	features.SupportGatewayInfrastructure,
	features.SupportGatewayAddressEmpty,
}

// httpRouteExtended: extended HTTPRoute features implemented and passing
// (all of suite v1.6.3's; the two retry variants have no test there).
var httpRouteExtended = []features.FeatureName{
	features.SupportHTTPRouteDestinationPortMatching,
	features.SupportHTTPRouteBackendRequestHeaderModification,
	features.SupportHTTPRouteQueryParamMatching,
	features.SupportHTTPRouteMethodMatching,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRoutePortRedirect,
	features.SupportHTTPRouteSchemeRedirect,
	features.SupportHTTPRoutePathRedirect,
	features.SupportHTTPRouteHostRewrite,
	features.SupportHTTPRoutePathRewrite,
	features.SupportHTTPRouteRequestMirror,
	features.SupportHTTPRouteRequestMultipleMirrors,
	features.SupportHTTPRouteRequestPercentageMirror,
	features.SupportHTTPRouteRequestTimeout,
	features.SupportHTTPRouteBackendTimeout,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRouteBackendProtocolH2C,
	features.SupportHTTPRouteBackendProtocolWebSocket,
	features.SupportHTTPRouteNamedRouteRule,
	features.SupportHTTPRouteCORS,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
	features.SupportHTTPRouteRetry,
	features.SupportHTTPRouteRetryBackendTimeout,
	features.SupportHTTPRouteRetryConnectionError,
}

// otherRouteFeatures: GRPCRoute, TLSRoute and TCPRoute (their profiles'
// core and extended features).
var otherRouteFeatures = []features.FeatureName{
	features.SupportTLSRoute, features.SupportTCPRoute, features.SupportGRPCRoute,
	features.SupportTLSRouteModeTerminate, features.SupportTLSRouteModeMixed,
}

// policyFeatures: BackendTLSPolicy (GATEWAY-HTTP extended).
var policyFeatures = []features.FeatureName{
	features.SupportBackendTLSPolicy, features.SupportBackendTLSPolicySANValidation,
}
