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
	for _, list := range [][]features.FeatureName{gatewayExtended, httpRouteExtended, otherRouteFeatures} {
		for _, f := range list {
			names.Insert(f)
		}
	}
	return names.UnsortedList()
}

// gatewayExtended: extended Gateway features implemented and passing.
var gatewayExtended = []features.FeatureName{}

// httpRouteExtended: extended HTTPRoute features implemented and passing.
var httpRouteExtended = []features.FeatureName{}

// otherRouteFeatures: GRPCRoute, TLSRoute and TCPRoute (their profiles'
// core and extended features).
var otherRouteFeatures = []features.FeatureName{
	features.SupportTLSRoute, features.SupportTCPRoute, features.SupportGRPCRoute,
	features.SupportTLSRouteModeTerminate, features.SupportTLSRouteModeMixed,
}
