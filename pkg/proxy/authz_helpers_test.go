package proxy_test

import (
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/internal/testjwt"
	"github.com/portico-gateway/portico/pkg/translate"
)

// The authz tests feed hand-written Envoy protos (what the contract of
// issue #13 says the translator emits) to the real proxy over xDS: the
// translator builds today's listener and routes from Istio YAML, and the
// test inserts its filters in front of fault, cors and router.

const authzRoutes = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: rating}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - route:
    - destination: {host: rating.default.svc.cluster.local}
`

// authzBuild translates the gateway, a catch-all route to backend and the
// backend's ServiceEntry.
func authzBuild(t testing.TB, backend *testenv.Backend) *translate.Resources {
	t.Helper()
	tr, _ := testenv.Build(t, gateway80+"---\n"+authzRoutes+testenv.ServiceEntry("rating", "rating.default.svc.cluster.local", 80, "HTTP", backend), testenv.Ingress)
	return tr
}

func typed(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func httpFilter(t testing.TB, name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(t, m)}}
}

// withHTTPFilters puts filters first in every connection manager of tr.
func withHTTPFilters(t testing.TB, tr *translate.Resources, fs ...*hcmv3.HttpFilter) {
	t.Helper()
	n := 0
	for _, l := range tr.Listeners {
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				if f.Name != "envoy.filters.network.http_connection_manager" {
					continue
				}
				m := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
					t.Fatal(err)
				}
				m.HttpFilters = append(append([]*hcmv3.HttpFilter{}, fs...), m.HttpFilters...)
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: typed(t, m)}
				n++
			}
		}
	}
	if n == 0 {
		t.Fatal("no connection manager to add filters to")
	}
}

// istioJWT is the jwt_authn of the contract (section 2) for issuers with
// their JWKS: providers origins-<n>, requires_any of them or none.
func istioJWT(t testing.TB, issuerJWKS ...string) *hcmv3.HttpFilter {
	m := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	anyOf := &jwtv3.JwtRequirementOrList{}
	for i := 0; i+1 < len(issuerJWKS); i += 2 {
		name := fmt.Sprintf("origins-%d", i/2)
		m.Providers[name] = &jwtv3.JwtProvider{Issuer: issuerJWKS[i], PayloadInMetadata: issuerJWKS[i],
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: issuerJWKS[i+1]}}}}
		anyOf.Requirements = append(anyOf.Requirements, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}})
	}
	anyOf.Requirements = append(anyOf.Requirements, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	m.Rules = []*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: anyOf}}}}}
	return httpFilter(t, "envoy.filters.http.jwt_authn", m)
}

func rbacFilter(t testing.TB, action rbacv3.RBAC_Action, policies map[string]*rbacv3.Policy) *hcmv3.HttpFilter {
	return httpFilter(t, "envoy.filters.http.rbac", &httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: action, Policies: policies}})
}

func strExact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// claimIs is the translator's principal for request.auth.claims[path...]
// = value under issuer: a string claim equal to it or a list containing it.
func claimIs(issuer, value string, path ...string) *rbacv3.Principal {
	str := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: strExact(value)}}
	mm := &matcherv3.MetadataMatcher{Filter: "envoy.filters.http.jwt_authn", Value: &matcherv3.ValueMatcher{
		MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{str,
			{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: str}}}}}}}}}
	for _, k := range append([]string{issuer}, path...) {
		mm.Path = append(mm.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	//lint:ignore SA1019 Principal.metadata is what Istio sends for request.auth claims; the proxy must honour it
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: mm}}
}

// metaString is the translator's principal for requestPrincipals
// "<issuer>/<sub>": the sub claim of that issuer's payload.
func metaString(issuer, value string, path ...string) *rbacv3.Principal {
	mm := &matcherv3.MetadataMatcher{Filter: "envoy.filters.http.jwt_authn",
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: strExact(value)}}}
	for _, k := range append([]string{issuer}, path...) {
		mm.Path = append(mm.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	//lint:ignore SA1019 Principal.metadata is what Istio sends for request.auth claims; the proxy must honour it
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: mm}}
}

func andIDs(ids ...*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func anyPermission() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

// seed002Policy is what the translator emits for the article's
// AuthorizationPolicy require-jwt (ALLOW, requestPrincipals
// testing@secure.istio.io/testing@secure.istio.io, when
// request.auth.claims[role] = customer).
func seed002Policy(t testing.TB) *hcmv3.HttpFilter {
	iss := testjwt.SampleIssuer
	return rbacFilter(t, rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
		"ns[default]-policy[require-jwt]-rule[0]": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{anyPermission()}}}}},
			Principals: []*rbacv3.Principal{andIDs(
				andIDs(metaString(iss, iss, "sub")),
				claimIs(iss, "customer", "role"))},
		}})
}
