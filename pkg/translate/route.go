package translate

import (
	"fmt"
	"math"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/ir"
)

// PreviousHostsPredicate is the retry host predicate Istio sets.
const PreviousHostsPredicate = "envoy.retry_host_predicates.previous_hosts"

// hostSelectionRetryMaxAttempts is Istio's value.
const hostSelectionRetryMaxAttempts = 5

func (t *translator) virtualHost(vh *ir.VirtualHost) (*routev3.VirtualHost, error) {
	v := &routev3.VirtualHost{
		Name:     vh.Name,
		Domains:  vh.Domains,
		Metadata: sourceMetadata(vh.Sources),
		// As Istio's gateways: upstreams see x-envoy-attempt-count.
		IncludeRequestAttemptCount: true,
	}
	if vh.RequireTLS {
		v.RequireTls = routev3.VirtualHost_ALL
	}
	if vh.LocalRateLimit != nil {
		v.TypedPerFilterConfig = map[string]*anypb.Any{LocalRateLimitFilter: toAny(localRateLimit(vh.LocalRateLimit))}
	}
	for _, r := range vh.Routes {
		route, err := t.route(r)
		if err != nil {
			return nil, fmt.Errorf("virtual host %s, route %s (from %s): %w", vh.Name, r.Name, r.Source, err)
		}
		v.Routes = append(v.Routes, route)
	}
	return v, nil
}

func (t *translator) route(r *ir.Route) (*routev3.Route, error) {
	match, err := routeMatch(r.Match)
	if err != nil {
		return nil, err
	}
	out := &routev3.Route{
		Name:     r.Name,
		Match:    match,
		Metadata: t.refMetadata(r.Source),
	}
	out.RequestHeadersToAdd, out.RequestHeadersToRemove = headerOps(r.RequestHeaders)
	out.ResponseHeadersToAdd, out.ResponseHeadersToRemove = headerOps(r.ResponseHeaders)
	switch {
	case r.Forward != nil:
		a, err := routeAction(r.Forward, r.Match)
		if err != nil {
			return nil, err
		}
		out.Action = &routev3.Route_Route{Route: a}
	case r.Redirect != nil:
		out.Action = &routev3.Route_Redirect{Redirect: redirect(r.Redirect)}
	case r.DirectResponse != nil:
		dr := &routev3.DirectResponseAction{Status: r.DirectResponse.Status}
		if r.DirectResponse.Body != "" {
			dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: r.DirectResponse.Body}}
		}
		out.Action = &routev3.Route_DirectResponse{DirectResponse: dr}
	default:
		return nil, fmt.Errorf("route has no action")
	}
	if r.Fault != nil || r.CORS != nil || r.LocalRateLimit != nil {
		out.TypedPerFilterConfig = map[string]*anypb.Any{}
		if r.LocalRateLimit != nil {
			out.TypedPerFilterConfig[LocalRateLimitFilter] = toAny(localRateLimit(r.LocalRateLimit))
		}
		if r.Fault != nil {
			out.TypedPerFilterConfig[FaultFilter] = toAny(fault(r.Fault))
		}
		if r.CORS != nil {
			out.TypedPerFilterConfig[CORSFilter] = toAny(cors(r.CORS))
		}
	}
	return out, nil
}

func stringMatcher(m ir.StringMatch, ignoreCase bool) (*matcherv3.StringMatcher, error) {
	sm := &matcherv3.StringMatcher{IgnoreCase: ignoreCase}
	switch m.Type {
	case ir.MatchExact:
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: m.Value}
	case ir.MatchPrefix:
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: m.Value}
	case ir.MatchRegex:
		sm.IgnoreCase = false // not allowed with regex; use (?i) instead
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Value}}
	default:
		return nil, fmt.Errorf("unsupported string match %q", m.Type)
	}
	return sm, nil
}

func routeMatch(m ir.Match) (*routev3.RouteMatch, error) {
	out := &routev3.RouteMatch{}
	p := m.Path
	if p == nil {
		p = &ir.StringMatch{Type: ir.MatchPrefix, Value: "/"}
	}
	switch p.Type {
	case ir.MatchExact:
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: p.Value}
	case ir.MatchPrefix:
		out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: p.Value}
	case ir.MatchRegex:
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: p.Value}}
	default:
		return nil, fmt.Errorf("unsupported path match %q", p.Type)
	}
	if m.IgnoreCase {
		out.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, h := range m.Headers {
		// As Istio's withoutHeaders: a request without the header matches
		// (Envoy would fail an inverted string match on a missing header).
		hm := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert, TreatMissingHeaderAsEmpty: h.Invert && h.Match.Type != ir.MatchPresent}
		if h.Match.Type == ir.MatchPresent {
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		} else {
			sm, err := stringMatcher(h.Match, false)
			if err != nil {
				return nil, fmt.Errorf("header %s: %w", h.Name, err)
			}
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
		}
		out.Headers = append(out.Headers, hm)
	}
	for _, q := range m.QueryParams {
		qm := &routev3.QueryParameterMatcher{Name: q.Name}
		if q.Match.Type == ir.MatchPresent {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			sm, err := stringMatcher(q.Match, false)
			if err != nil {
				return nil, fmt.Errorf("query parameter %s: %w", q.Name, err)
			}
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}
		}
		out.QueryParameters = append(out.QueryParameters, qm)
	}
	return out, nil
}

func headerOps(ops *ir.HeaderOps) ([]*corev3.HeaderValueOption, []string) {
	if ops.Empty() {
		return nil, nil
	}
	var add []*corev3.HeaderValueOption
	for _, h := range ops.Set {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	for _, h := range ops.Add {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Name, Value: h.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	return add, ops.Remove
}

// fractionalPercent converts a percentage as Istio does: parts per million.
func fractionalPercent(pct float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{
		Numerator:   uint32(math.Round(pct * 10000)),
		Denominator: typev3.FractionalPercent_MILLION,
	}
}

// previousHostsURL is the type URL of the retry host predicate every
// retry policy carries. The predicate has no fields, so its Any is the URL
// alone: packing it through anypb.MarshalFrom per route was 5 MB of
// garbage at 12,500 routes.
var previousHostsURL = "type.googleapis.com/" + string((&previoushostsv3.PreviousHostsPredicate{}).ProtoReflect().Descriptor().FullName())

func routeAction(f *ir.Forward, m ir.Match) (*routev3.RouteAction, error) {
	if len(f.Clusters) == 0 {
		return nil, fmt.Errorf("forward without clusters")
	}
	var timeout time.Duration // none: Envoy's default is 15 s, Istio's none
	if f.Timeout != nil {
		timeout = f.Timeout.Duration
	}
	a := &routev3.RouteAction{Timeout: durationpb.New(timeout)}
	if len(f.Clusters) == 1 && f.Clusters[0].RequestHeaders.Empty() && f.Clusters[0].ResponseHeaders.Empty() {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: f.Clusters[0].Name}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, c := range f.Clusters {
			cw := &routev3.WeightedCluster_ClusterWeight{Name: c.Name, Weight: wrapperspb.UInt32(c.Weight)}
			cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = headerOps(c.RequestHeaders)
			cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove = headerOps(c.ResponseHeaders)
			wc.Clusters = append(wc.Clusters, cw)
		}
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	for _, c := range f.Clusters {
		if c.Name == ir.InvalidBackendCluster {
			// The invalid share names a cluster CDS never has: 500 when
			// it is picked, as Envoy Gateway does.
			a.ClusterNotFoundResponseCode = routev3.RouteAction_INTERNAL_SERVER_ERROR
		}
	}
	if r := f.Retry; r != nil {
		rp := &routev3.RetryPolicy{
			RetryOn:                       strings.Join(r.RetryOn, ","),
			NumRetries:                    wrapperspb.UInt32(r.Attempts),
			RetriableStatusCodes:          r.RetriableStatusCodes,
			HostSelectionRetryMaxAttempts: hostSelectionRetryMaxAttempts,
		}
		if r.PerTryTimeout != nil {
			rp.PerTryTimeout = durationpb.New(r.PerTryTimeout.Duration)
		}
		if r.RetryPreviousHosts {
			rp.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
				Name:       PreviousHostsPredicate,
				ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: previousHostsURL}},
			}}
		}
		if r.Backoff != nil {
			rp.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(r.Backoff.Duration)}
		}
		a.RetryPolicy = rp
	}
	for _, mi := range f.Mirrors {
		a.RequestMirrorPolicies = append(a.RequestMirrorPolicies, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster:         mi.Cluster,
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: fractionalPercent(mi.Percent)},
			// Istio (DISABLE_SHADOW_HOST_SUFFIX, on by default) mirrors with
			// the request's own Host, not Envoy's "<host>-shadow".
			DisableShadowHostSuffixAppend: true,
		})
	}
	if rw := f.Rewrite; rw != nil {
		if rw.PathPrefix != "" {
			if m.Path != nil && m.Path.Type == ir.MatchRegex {
				// Envoy's prefix_rewrite needs a prefix or path match; a
				// regex match replaces the whole path, as Istio means it.
				a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
					Pattern:      &matcherv3.RegexMatcher{Regex: "^.*$"},
					Substitution: rw.PathPrefix,
				}
			} else {
				a.PrefixRewrite = rw.PathPrefix
			}
		}
		if rw.PathRegex != nil {
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern:      &matcherv3.RegexMatcher{Regex: rw.PathRegex.Pattern},
				Substitution: rw.PathRegex.Substitution,
			}
		}
		if rw.Authority != "" {
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Authority}
		}
	}
	for _, h := range f.HashPolicy {
		hp := &routev3.RouteAction_HashPolicy{}
		switch {
		case h.Header != "":
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.Header}}
		case h.Cookie != nil:
			c := &routev3.RouteAction_HashPolicy_Cookie{Name: h.Cookie.Name, Path: h.Cookie.Path}
			if h.Cookie.TTL != nil {
				c.Ttl = durationpb.New(h.Cookie.TTL.Duration)
			}
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}
		case h.SourceIP:
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}
		case h.QueryParam != "":
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: h.QueryParam}}
		default:
			continue
		}
		a.HashPolicy = append(a.HashPolicy, hp)
	}
	return a, nil
}

var redirectCodes = map[uint32]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

func redirect(r *ir.Redirect) *routev3.RedirectAction {
	out := &routev3.RedirectAction{HostRedirect: r.Host, PortRedirect: r.Port, ResponseCode: redirectCodes[r.Code]}
	if r.Scheme != "" {
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: r.Scheme}
	}
	switch {
	case r.Path != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: r.Path}
	case r.PathPrefix != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: r.PathPrefix}
	}
	return out
}

func fault(f *ir.Fault) *faultv3.HTTPFault {
	out := &faultv3.HTTPFault{}
	if d := f.Delay; d != nil {
		out.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d.Fixed.Duration)},
			Percentage:         fractionalPercent(d.Percent),
		}
	}
	if a := f.Abort; a != nil {
		fa := &faultv3.FaultAbort{Percentage: fractionalPercent(a.Percent)}
		if a.HTTPStatus != 0 {
			fa.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: a.HTTPStatus}
		} else {
			fa.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: a.GRPCStatus}
		}
		out.Abort = fa
	}
	return out
}

func cors(c *ir.CORS) *corsv3.CorsPolicy {
	out := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(c.AllowMethods, ","),
		AllowHeaders:  strings.Join(c.AllowHeaders, ","),
		ExposeHeaders: strings.Join(c.ExposeHeaders, ","),
	}
	for _, o := range c.AllowOrigins {
		sm, err := stringMatcher(o, false)
		if err == nil {
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, sm)
		}
	}
	if c.MaxAge != nil {
		out.MaxAge = fmt.Sprintf("%d", int64(c.MaxAge.Seconds()))
	}
	if c.AllowCredentials {
		out.AllowCredentials = wrapperspb.Bool(true)
	}
	out.ForwardNotMatchingPreflights = wrapperspb.Bool(c.ForwardUnmatchedPreflights)
	return out
}
