package supported_test

//lint:file-ignore SA1019 Envoy deprecates Principal.source_ip and the metadata matchers in favour of newer fields, but control planes (Istio's among them) still send them: how the proxy handles them is under test

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/proxy/supported"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// contractListener carries every form of AUTHZ-CONTRACT.md.
func contractListener(t *testing.T) (*listenerv3.Listener, *routev3.VirtualHost) {
	str := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "x"}}
	val := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{
		{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: str}},
		{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{
			OneOf: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_PresentMatch{PresentMatch: true}}}}}},
		{MatchPattern: &matcherv3.ValueMatcher_BoolMatch{BoolMatch: true}},
		{MatchPattern: &matcherv3.ValueMatcher_DoubleMatch{DoubleMatch: &matcherv3.DoubleMatcher{MatchPattern: &matcherv3.DoubleMatcher_Range{Range: &typev3.DoubleRange{Start: 1, End: 2}}}}}}}}}
	cidr := &corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}
	hdr := &routev3.HeaderMatcher{Name: ":path", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: str}, InvertMatch: true}
	perms := []*rbacv3.Permission{
		{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}}}},
		{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Header{Header: hdr}}}}}},
		{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: str}}}},
		{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr}},
		{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}},
		{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: str}},
		{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}}},
		{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{Name: "uri-template",
			TypedConfig: mustAny(t, &uritemplatev3.UriTemplateMatchConfig{PathTemplate: "/a/{**}"})}}},
	}
	ids := []*rbacv3.Principal{
		{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}}},
		{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Header{Header: hdr}}}}}},
		{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: str}}},
		{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr}},
		{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr}},
		{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: str}}}},
		{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{Filter: "envoy.filters.http.jwt_authn", Invert: true,
			Path: []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "iss"}}}, Value: val}}},
		{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}}},
	}
	rules := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"ns[a]-policy[b]-rule[0]": {Permissions: perms, Principals: ids}}}
	jwt := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"origins-0": {Issuer: "i", Audiences: []string{"a"},
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "{}"}}},
		FromHeaders:         []*jwtv3.JwtHeader{{Name: "x", ValuePrefix: "p"}}, FromParams: []string{"q"}, FromCookies: []string{"c"}, Forward: true,
		ForwardPayloadHeader: "h", ClaimToHeaders: []*jwtv3.JwtClaimToHeader{{HeaderName: "h", ClaimName: "c"}}, PayloadInMetadata: "i", ClockSkewSeconds: 5}},
		Rules: []*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{
				RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: []*jwtv3.JwtRequirement{
					{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}},
					{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}}}}}}}}}
	m := &hcmv3.HttpConnectionManager{StatPrefix: "x", HttpFilters: []*hcmv3.HttpFilter{
		{Name: "envoy.filters.http.jwt_authn", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, jwt)}},
		{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &httprbacv3.RBAC{Rules: rules, ShadowRulesStatPrefix: "istio_dry_run_allow_"})}},
		{Name: "envoy.filters.http.local_ratelimit", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &lrlv3.LocalRateLimit{StatPrefix: "http_local_rate_limiter"})}},
	}}
	netRules := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"p": {Permissions: perms[3:5], Principals: ids[3:5]}}}
	l := &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{
		{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}}},
		{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{
			TypedConfig: mustAny(t, &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: netRules})}}}},
	}}
	full := &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}, RuntimeKey: "k"}
	vh := &routev3.VirtualHost{Name: "v", TypedPerFilterConfig: map[string]*anypb.Any{"envoy.filters.http.local_ratelimit": mustAny(t, &lrlv3.LocalRateLimit{
		StatPrefix: "s", TokenBucket: &typev3.TokenBucket{MaxTokens: 1, TokensPerFill: wrapperspb.UInt32(1), FillInterval: durationpb.New(1e9)},
		FilterEnabled: full, FilterEnforced: full, Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-envoy-ratelimited", Value: "true"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}})}}
	return l, vh
}

func TestAuthzContractIsSupported(t *testing.T) {
	l, vh := contractListener(t)
	if err := supported.Check(l); err != nil {
		t.Errorf("listener: %v", err)
	}
	if err := supported.Check(vh); err != nil {
		t.Errorf("virtual host: %v", err)
	}
}

func TestAuthzOutsideTheContractIsNamed(t *testing.T) {
	for want, m := range map[string]proto.Message{
		"RBAC.shadow_rules":                                         &httprbacv3.RBAC{ShadowRules: &rbacv3.RBAC{}},
		"RBAC.enforcement_type":                                     &netrbacv3.RBAC{EnforcementType: netrbacv3.RBAC_CONTINUOUS},
		"Principal.source_ip":                                       &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: &corev3.CidrRange{}}},
		"Principal.filter_state":                                    &rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{}},
		"Permission.metadata":                                       &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: &matcherv3.MetadataMatcher{}}},
		"JwtProvider.remote_jwks":                                   &jwtv3.JwtProvider{JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{}}},
		"JwtProvider.jwt_cache_config":                              &jwtv3.JwtProvider{JwtCacheConfig: &jwtv3.JwtCacheConfig{}},
		"JwtRequirement.requires_all":                               &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{}},
		"LocalRateLimit.local_rate_limit_per_downstream_connection": &lrlv3.LocalRateLimit{LocalRateLimitPerDownstreamConnection: true},
	} {
		err := supported.Check(m)
		if err == nil || !strings.Contains(err.Error(), want[strings.Index(want, ".")+1:]) {
			t.Errorf("%s: %v", want, err)
		}
	}
}
