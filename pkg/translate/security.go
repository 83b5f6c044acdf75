package translate

import (
	"fmt"
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/ir"
)

// Security and rate-limit extension names, as Envoy registers them.
const (
	JWTAuthnFilter       = "envoy.filters.http.jwt_authn"
	RBACFilter           = "envoy.filters.http.rbac"
	NetworkRBACFilter    = "envoy.filters.network.rbac"
	LocalRateLimitFilter = "envoy.filters.http.local_ratelimit"
	// localRateLimitStatPrefix is the HCM-level filter's (and every
	// bucket's) stat prefix, as Istio users configure it.
	localRateLimitStatPrefix = "http_local_rate_limiter"
	// networkRBACStatPrefix is istiod's for TCP RBAC filters.
	networkRBACStatPrefix = "tcp."
)

// securityHTTPFilters are the filters that go before fault, cors and the
// router: jwt_authn, RBAC in Istio's order, local_ratelimit.
func securityHTTPFilters(sec *ir.Security, rateLimited bool) ([]*hcmv3.HttpFilter, error) {
	var out []*hcmv3.HttpFilter
	if sec != nil && sec.JWT != nil {
		out = append(out, &hcmv3.HttpFilter{Name: JWTAuthnFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(jwtAuthn(sec.JWT))}})
	}
	if sec != nil {
		for _, r := range sec.RBAC {
			rules, err := rbacRules(r, false)
			if err != nil {
				return nil, err
			}
			out = append(out, &hcmv3.HttpFilter{Name: RBACFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(&rbachttpv3.RBAC{Rules: rules})}})
		}
	}
	if rateLimited {
		out = append(out, &hcmv3.HttpFilter{Name: LocalRateLimitFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(
			&ratelimitv3.LocalRateLimit{StatPrefix: localRateLimitStatPrefix})}})
	}
	return out, nil
}

// networkRBACFilters go before tcp_proxy.
func networkRBACFilters(sec *ir.Security) ([]*listenerv3.Filter, error) {
	if sec == nil {
		return nil, nil
	}
	var out []*listenerv3.Filter
	for _, r := range sec.RBAC {
		rules, err := rbacRules(r, true)
		if err != nil {
			return nil, err
		}
		out = append(out, &listenerv3.Filter{Name: NetworkRBACFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: toAny(
			&rbacnetv3.RBAC{Rules: rules, StatPrefix: networkRBACStatPrefix})}})
	}
	return out, nil
}

// jwtAuthn is istiod's jwt_authn shape for a gateway, with the payload
// stored under the issuer so authorization can tell tokens apart: a
// request without a token passes; one with a token must verify with some
// provider (whose issuer matches).
func jwtAuthn(j *ir.JWTAuthn) *jwtv3.JwtAuthentication {
	out := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	var any []*jwtv3.JwtRequirement
	for _, p := range j.Providers {
		jp := &jwtv3.JwtProvider{
			Issuer:    p.Issuer,
			Audiences: p.Audiences,
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: p.JWKS}}},
			Forward:              p.Forward,
			ForwardPayloadHeader: p.ForwardPayloadHeader,
			FromParams:           p.FromParams,
			FromCookies:          p.FromCookies,
			PayloadInMetadata:    p.Issuer,
		}
		for _, h := range p.FromHeaders {
			jp.FromHeaders = append(jp.FromHeaders, &jwtv3.JwtHeader{Name: h.Name, ValuePrefix: h.Prefix})
		}
		for _, c := range p.ClaimToHeaders {
			jp.ClaimToHeaders = append(jp.ClaimToHeaders, &jwtv3.JwtClaimToHeader{HeaderName: c.Header, ClaimName: c.Claim})
		}
		out.Providers[p.Name] = jp
		any = append(any, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: p.Name}})
	}
	any = append(any, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	out.Rules = []*jwtv3.RequirementRule{{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
			RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: any}}}},
	}}
	return out
}

func rbacRules(r *ir.RBAC, tcp bool) (*rbacv3.RBAC, error) {
	out := &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{}}
	switch r.Action {
	case ir.RBACAllow:
		out.Action = rbacv3.RBAC_ALLOW
	case ir.RBACDeny:
		out.Action = rbacv3.RBAC_DENY
	case ir.RBACLog:
		out.Action = rbacv3.RBAC_LOG
	default:
		return nil, fmt.Errorf("unknown RBAC action %q", r.Action)
	}
	for _, p := range r.Policies {
		pol := &rbacv3.Policy{}
		for _, perm := range p.Permissions {
			m, err := permission(perm, tcp)
			if err != nil {
				return nil, fmt.Errorf("policy %s (from %s): %w", p.Name, p.Source, err)
			}
			pol.Permissions = append(pol.Permissions, m)
		}
		for _, prin := range p.Principals {
			m, err := principal(prin, tcp)
			if err != nil {
				return nil, fmt.Errorf("policy %s (from %s): %w", p.Name, p.Source, err)
			}
			pol.Principals = append(pol.Principals, m)
		}
		out.Policies[p.Name] = pol
	}
	return out, nil
}

func permission(p *ir.Permission, tcp bool) (*rbacv3.Permission, error) {
	set := func(list []*ir.Permission) (*rbacv3.Permission_Set, error) {
		s := &rbacv3.Permission_Set{}
		for _, x := range list {
			m, err := permission(x, tcp)
			if err != nil {
				return nil, err
			}
			s.Rules = append(s.Rules, m)
		}
		return s, nil
	}
	httpOnly := func(what string) error {
		if tcp {
			return fmt.Errorf("%s cannot be matched on a TCP filter chain", what)
		}
		return nil
	}
	switch {
	case p.Any:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}, nil
	case p.And != nil:
		s, err := set(p.And)
		return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: s}}, err
	case p.Or != nil:
		s, err := set(p.Or)
		return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: s}}, err
	case p.Not != nil:
		m, err := permission(p.Not, tcp)
		return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: m}}, err
	case p.Header != nil:
		if err := httpOnly("a header"); err != nil {
			return nil, err
		}
		h, err := rbacHeader(p.Header)
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}, err
	case p.Path != nil:
		if err := httpOnly("a path"); err != nil {
			return nil, err
		}
		sm, err := authzString(*p.Path)
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: sm}}}}, err
	case p.PathTemplate != "":
		if err := httpOnly("a path"); err != nil {
			return nil, err
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{
			Name: "uri-template", TypedConfig: toAny(&uritemplatev3.UriTemplateMatchConfig{PathTemplate: p.PathTemplate})}}}, nil
	case p.DestinationPort != 0:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: p.DestinationPort}}, nil
	case p.DestinationIP != "":
		c, err := cidrRange(p.DestinationIP)
		return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: c}}, err
	case p.ServerName != nil:
		sm, err := authzString(*p.ServerName)
		return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: sm}}, err
	}
	return nil, fmt.Errorf("empty permission")
}

func principal(p *ir.Principal, tcp bool) (*rbacv3.Principal, error) {
	set := func(list []*ir.Principal) (*rbacv3.Principal_Set, error) {
		s := &rbacv3.Principal_Set{}
		for _, x := range list {
			m, err := principal(x, tcp)
			if err != nil {
				return nil, err
			}
			s.Ids = append(s.Ids, m)
		}
		return s, nil
	}
	switch {
	case p.Any:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}, nil
	case p.And != nil:
		s, err := set(p.And)
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: s}}, err
	case p.Or != nil:
		s, err := set(p.Or)
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: s}}, err
	case p.Not != nil:
		m, err := principal(p.Not, tcp)
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: m}}, err
	case p.Authenticated != nil:
		sm, err := authzString(*p.Authenticated)
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: sm}}}, err
	case p.DirectRemoteIP != "":
		c, err := cidrRange(p.DirectRemoteIP)
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: c}}, err
	case p.RemoteIP != "":
		// On a TCP chain Envoy's remote_ip is the connection's client
		// address (PROXY protocol aware); istiod emits it there too.
		c, err := cidrRange(p.RemoteIP)
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: c}}, err
	case p.Header != nil:
		if tcp {
			return nil, fmt.Errorf("a header cannot be matched on a TCP filter chain")
		}
		h, err := rbacHeader(p.Header)
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: h}}, err
	case p.Metadata != nil:
		if tcp {
			return nil, fmt.Errorf("JWT metadata cannot be matched on a TCP filter chain")
		}
		m, err := metadataMatcher(p.Metadata)
		//lint:ignore SA1019 Istio writes request.auth claims as Principal.metadata, which Envoy still accepts; proxies are sent what Istio's are
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: m}}, err
	}
	return nil, fmt.Errorf("empty principal")
}

// authzString is a StringMatcher of authorization (suffix and ignore_case
// allowed, unlike route matches).
func authzString(m ir.StringMatch) (*matcherv3.StringMatcher, error) {
	sm := &matcherv3.StringMatcher{IgnoreCase: m.IgnoreCase}
	switch m.Type {
	case ir.MatchExact:
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: m.Value}
	case ir.MatchPrefix:
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: m.Value}
	case ir.MatchSuffix:
		sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: m.Value}
	case ir.MatchRegex:
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Value}}
	default:
		return nil, fmt.Errorf("string match type %q", m.Type)
	}
	return sm, nil
}

func rbacHeader(h *ir.HeaderMatch) (*routev3.HeaderMatcher, error) {
	out := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert}
	if h.Match.Type == ir.MatchPresent {
		out.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return out, nil
	}
	sm, err := authzString(h.Match)
	if err != nil {
		return nil, err
	}
	out.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	return out, nil
}

// metadataMatcher matches a JWT claim in jwt_authn's metadata: with
// OrList, a string claim equal to the value or a list claim containing it.
func metadataMatcher(m *ir.MetadataMatch) (*matcherv3.MetadataMatcher, error) {
	sm, err := authzString(m.Value)
	if err != nil {
		return nil, err
	}
	out := &matcherv3.MetadataMatcher{Filter: m.Filter}
	for _, k := range m.Path {
		out.Path = append(out.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	str := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: sm}}
	if !m.OrList {
		out.Value = str
		return out, nil
	}
	out.Value = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{
		str,
		{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: str}}}},
	}}}}
	return out, nil
}

func cidrRange(s string) (*corev3.CidrRange, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return nil, fmt.Errorf("invalid CIDR %q", s)
	}
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, nil
}

// localRateLimit is a route's or virtual host's token bucket, the shape
// Istio's documentation gives for local rate limiting.
func localRateLimit(rl *ir.LocalRateLimit) *ratelimitv3.LocalRateLimit {
	pct := &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
	return &ratelimitv3.LocalRateLimit{
		StatPrefix: localRateLimitStatPrefix,
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     rl.MaxTokens,
			TokensPerFill: wrapperspb.UInt32(rl.TokensPerFill),
			FillInterval:  durationpb.New(rl.FillInterval.Duration),
		},
		FilterEnabled:  &corev3.RuntimeFractionalPercent{DefaultValue: pct.DefaultValue, RuntimeKey: "local_rate_limit_enabled"},
		FilterEnforced: &corev3.RuntimeFractionalPercent{DefaultValue: pct.DefaultValue},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "x-envoy-ratelimited", Value: "true"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
	}
}
