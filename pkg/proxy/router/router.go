// Package router compiles Envoy RouteConfigurations into immutable route
// tables and matches requests against them with Envoy's rules: virtual
// hosts by exact domain, then the longest "*suffix", then the longest
// "prefix*", then "*"; routes in order, first match wins.
package router

import (
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/portico-gateway/portico/pkg/proxy/filters/ratelimit"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

// Names of the per-route filter configurations the router understands.
const (
	FaultFilter = "envoy.filters.http.fault"
	CORSFilter  = "envoy.filters.http.cors"
)

// Table is a compiled route configuration.
type Table struct {
	Name             string
	IgnorePortInHost bool
	exact            map[string]*VirtualHost
	suffix           []wildcard // "*.example.com", longest first
	prefix           []wildcard // "api.*", longest first
	any              *VirtualHost
	// Clusters lists every cluster a route may send to (including mirrors),
	// so the proxy can hold a table back until they all exist.
	Clusters []string
	// from is what the table was assembled from, in order (AssembleFrom
	// patches a table whose virtual hosts mostly did not change).
	from []*CompiledVirtualHost
}

type wildcard struct {
	part string
	vh   *VirtualHost
}

// RequireTLS values.
const (
	RequireTLSNone = iota
	RequireTLSExternalOnly
	RequireTLSAll
)

// VirtualHost is a group of routes for some domains.
type VirtualHost struct {
	Name       string
	RequireTLS int
	Routes     []*Route
}

// Action is what a route does.
type Action int

// Route actions.
const (
	Forward Action = iota
	Redirect
	DirectResponse
)

// Route is one compiled route.
type Route struct {
	Name   string
	Source string // istio config path from metadata, for logs
	match  matcher
	Action Action
	// AttemptCount sends x-envoy-attempt-count upstream (the virtual
	// host's include_request_attempt_count).
	AttemptCount bool

	Clusters    []WeightedCluster
	TotalWeight uint32
	// ClusterNotFoundStatus answers a request whose chosen cluster is not
	// known (cluster_not_found_response_code; Envoy's default 503). Gateway
	// API's invalid backendRefs are weighted destinations that answer 500.
	ClusterNotFoundStatus int
	Timeout               time.Duration // zero: none
	Retry                 *RetryPolicy
	Mirrors               []Mirror
	Rewrite               Rewrite
	Hash                  []HashPolicy

	Redirect *RedirectAction
	Direct   *Direct

	RequestHeaders  HeaderOps
	ResponseHeaders HeaderOps
	Fault           *Fault
	CORS            *CORS
	// RateLimit is the route's local_ratelimit (its own, else its virtual
	// host's); its token bucket lives as long as the compiled route.
	RateLimit *ratelimit.Limiter
}

// PerFilterConfig gives HTTP filters the route's configuration for them
// (filters.Route).
func (r *Route) PerFilterConfig(name string) any {
	if name == ratelimit.Name && r.RateLimit != nil {
		return r.RateLimit
	}
	return nil
}

// WeightedCluster is a destination and its share.
type WeightedCluster struct {
	Name            string
	Weight          uint32
	RequestHeaders  HeaderOps
	ResponseHeaders HeaderOps
}

// Mirror copies requests to a cluster, fire and forget.
type Mirror struct {
	Cluster    string
	PerMillion uint32
	// KeepHost sends the request's own Host (disable_shadow_host_suffix_append)
	// instead of Envoy's default "<host>-shadow".
	KeepHost bool
}

// Rewrite changes a request before it goes upstream.
type Rewrite struct {
	Prefix       string
	Regex        *regexp.Regexp
	Substitution string
	Host         string
}

// HashPolicy computes consistent-hash keys.
type HashPolicy struct {
	Header     string
	Cookie     string
	CookiePath string
	CookieTTL  time.Duration
	SourceIP   bool
	QueryParam string
}

// RedirectAction answers with a redirect.
type RedirectAction struct {
	Scheme        string
	Host          string
	Port          uint32
	Path          string
	PrefixRewrite string
	StripQuery    bool
	Code          int
}

// Direct answers without going upstream.
type Direct struct {
	Status int
	Body   string
}

// HeaderOps removes, then sets or appends headers.
type HeaderOps struct {
	Remove []string
	Set    []httpx.Field // overwrite if exists, or add
	Append []httpx.Field // append if exists, or add
	// AddIfAbsent adds only when the header is missing.
	AddIfAbsent []httpx.Field
}

// Empty reports whether the operations do nothing.
func (h *HeaderOps) Empty() bool {
	return len(h.Remove) == 0 && len(h.Set) == 0 && len(h.Append) == 0 && len(h.AddIfAbsent) == 0
}

// Apply runs the operations on hdr.
func (h *HeaderOps) Apply(hdr *httpx.Header) {
	for _, n := range h.Remove {
		hdr.Del(n)
	}
	for _, f := range h.Set {
		hdr.Set(f.Name, f.Value)
	}
	for _, f := range h.Append {
		hdr.Add(f.Name, f.Value)
	}
	for _, f := range h.AddIfAbsent {
		if !hdr.Has(f.Name) {
			hdr.Add(f.Name, f.Value)
		}
	}
}

// Fault injects delays and aborts.
type Fault struct {
	DelayPerMillion uint32
	Delay           time.Duration
	AbortPerMillion uint32
	AbortStatus     int
	GRPCStatus      int // -1 when not set
}

// CORS is a compiled CORS policy.
type CORS struct {
	Origins          []StringMatcher
	AllowMethods     string
	AllowHeaders     string
	ExposeHeaders    string
	MaxAge           string
	AllowCredentials bool
	// ForwardNotMatchingPreflights passes preflights from origins that do
	// not match upstream.
	ForwardNotMatchingPreflights bool
}

// AllowsOrigin reports whether origin matches the policy.
func (c *CORS) AllowsOrigin(origin string) bool {
	for i := range c.Origins {
		if c.Origins[i].Match(origin) {
			return true
		}
	}
	return false
}

// VirtualHost selects the virtual host for a Host header value. Ports are
// expected to be stripped by the caller when the connection manager asks
// for it.
func (t *Table) VirtualHost(host string) *VirtualHost {
	host = strings.ToLower(host)
	if t.IgnorePortInHost {
		host = StripPort(host)
	}
	if vh, ok := t.exact[host]; ok {
		return vh
	}
	for _, w := range t.suffix {
		if len(host) > len(w.part) && strings.HasSuffix(host, w.part) {
			return w.vh
		}
	}
	for _, w := range t.prefix {
		if len(host) > len(w.part) && strings.HasPrefix(host, w.part) {
			return w.vh
		}
	}
	return t.any
}

// StripPort removes a ":port" suffix from a host, IPv6-aware.
func StripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return host
	}
	if strings.IndexByte(host, ']') > i {
		return host // an IPv6 literal without port
	}
	if strings.Count(host, ":") > 1 && !strings.HasPrefix(host, "[") {
		return host // bare IPv6
	}
	return host[:i]
}

// Match returns the first route of vh matching req.
func (vh *VirtualHost) Match(req *httpx.Request) *Route {
	var q url.Values
	for _, r := range vh.Routes {
		if r.match.matches(req, &q) {
			return r
		}
	}
	return nil
}

// Compile turns a RouteConfiguration into a table. It fails on anything it
// cannot honour (an invalid regex), so the update is NACKed.
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	vhosts := make([]*CompiledVirtualHost, 0, len(rc.VirtualHosts))
	for _, v := range rc.VirtualHosts {
		cv, err := CompileVirtualHost(v)
		if err != nil {
			return nil, err
		}
		vhosts = append(vhosts, cv)
	}
	return Assemble(rc.Name, rc.IgnorePortInHostMatching, vhosts)
}

// CompiledVirtualHost is a virtual host compiled on its own, so that a
// route configuration whose other virtual hosts changed can reuse it.
// It is immutable and may be shared by several tables.
type CompiledVirtualHost struct {
	VirtualHost *VirtualHost
	Domains     []string // lower case
	Clusters    []string // every cluster its routes may send to
}

// CompileVirtualHost compiles one virtual host.
func CompileVirtualHost(v *routev3.VirtualHost) (*CompiledVirtualHost, error) {
	vh := &VirtualHost{Name: v.Name, RequireTLS: int(v.RequireTls)}
	var vhLimit *ratelimit.Limiter
	for name, cfg := range v.TypedPerFilterConfig {
		if name != ratelimit.Name {
			return nil, fmt.Errorf("virtual host %s: unsupported per-filter config %q", v.Name, name)
		}
		m := &lrlv3.LocalRateLimit{}
		if err := cfg.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("virtual host %s: local_ratelimit config: %w", v.Name, err)
		}
		l, err := ratelimit.Compile(m)
		if err != nil {
			return nil, fmt.Errorf("virtual host %s: %w", v.Name, err)
		}
		vhLimit = l
	}
	clusters := map[string]bool{}
	for i, r := range v.Routes {
		route, err := compileRoute(r)
		if err != nil {
			return nil, fmt.Errorf("virtual host %s route %d (%s): %w", v.Name, i, r.Name, err)
		}
		if route.RateLimit == nil {
			// Envoy's most specific config wins: the route's, else the
			// virtual host's (one bucket shared by its routes).
			route.RateLimit = vhLimit
		}
		for _, c := range route.Clusters {
			clusters[c.Name] = true
		}
		for _, m := range route.Mirrors {
			clusters[m.Cluster] = true
		}
		route.AttemptCount = v.IncludeRequestAttemptCount
		vh.Routes = append(vh.Routes, route)
	}
	out := &CompiledVirtualHost{VirtualHost: vh}
	for _, d := range v.Domains {
		out.Domains = append(out.Domains, strings.ToLower(d))
	}
	for c := range clusters {
		out.Clusters = append(out.Clusters, c)
	}
	// Sorted, so that two compilations of one virtual host are equal.
	sort.Strings(out.Clusters)
	return out, nil
}

// Assemble builds a table from compiled virtual hosts, in order.
func Assemble(name string, ignorePortInHost bool, vhosts []*CompiledVirtualHost) (*Table, error) {
	t := &Table{Name: name, IgnorePortInHost: ignorePortInHost, exact: map[string]*VirtualHost{}, from: vhosts}
	clusters := map[string]bool{}
	seen := map[string]string{}
	for _, cv := range vhosts {
		vh := cv.VirtualHost
		for _, c := range cv.Clusters {
			clusters[c] = true
		}
		for _, d := range cv.Domains {
			if prev, dup := seen[d]; dup {
				return nil, fmt.Errorf("domain %q is in both virtual hosts %s and %s", d, prev, vh.Name)
			}
			seen[d] = vh.Name
			switch {
			case d == "*":
				t.any = vh
			case strings.HasPrefix(d, "*"):
				t.suffix = append(t.suffix, wildcard{part: d[1:], vh: vh})
			case strings.HasSuffix(d, "*"):
				t.prefix = append(t.prefix, wildcard{part: d[:len(d)-1], vh: vh})
			default:
				t.exact[d] = vh
			}
		}
	}
	sort.SliceStable(t.suffix, func(i, j int) bool { return len(t.suffix[i].part) > len(t.suffix[j].part) })
	sort.SliceStable(t.prefix, func(i, j int) bool { return len(t.prefix[i].part) > len(t.prefix[j].part) })
	for c := range clusters {
		t.Clusters = append(t.Clusters, c)
	}
	sort.Strings(t.Clusters)
	return t, nil
}

func perMillion(p *typev3.FractionalPercent) uint32 {
	if p == nil {
		return 1000000 // Envoy: absent means always
	}
	switch p.Denominator {
	case typev3.FractionalPercent_HUNDRED:
		return min(p.Numerator*10000, 1000000)
	case typev3.FractionalPercent_TEN_THOUSAND:
		return min(p.Numerator*100, 1000000)
	default:
		return min(p.Numerator, 1000000)
	}
}

func compileRoute(r *routev3.Route) (*Route, error) {
	m, err := compileMatch(r.Match)
	if err != nil {
		return nil, err
	}
	out := &Route{Name: r.Name, match: m}
	if cfg := r.GetMetadata().GetFilterMetadata()["istio"].GetFields()["config"]; cfg != nil {
		out.Source = cfg.GetStringValue()
	}
	if out.RequestHeaders, err = headerOps(r.RequestHeadersToAdd, r.RequestHeadersToRemove); err != nil {
		return nil, err
	}
	if out.ResponseHeaders, err = headerOps(r.ResponseHeadersToAdd, r.ResponseHeadersToRemove); err != nil {
		return nil, err
	}
	switch a := r.Action.(type) {
	case *routev3.Route_Route:
		out.Action = Forward
		if err := compileAction(out, a.Route); err != nil {
			return nil, err
		}
	case *routev3.Route_Redirect:
		out.Action = Redirect
		out.Redirect = compileRedirect(a.Redirect)
	case *routev3.Route_DirectResponse:
		out.Action = DirectResponse
		out.Direct = &Direct{Status: int(a.DirectResponse.Status)}
		if b := a.DirectResponse.Body; b != nil {
			switch s := b.Specifier.(type) {
			case *corev3.DataSource_InlineString:
				out.Direct.Body = s.InlineString
			case *corev3.DataSource_InlineBytes:
				out.Direct.Body = string(s.InlineBytes)
			default:
				return nil, fmt.Errorf("direct response body must be inline")
			}
		}
	default:
		return nil, fmt.Errorf("route has no supported action")
	}
	for name, cfg := range r.TypedPerFilterConfig {
		switch name {
		case FaultFilter:
			f := &faultv3.HTTPFault{}
			if err := cfg.UnmarshalTo(f); err != nil {
				return nil, fmt.Errorf("fault config: %w", err)
			}
			out.Fault = CompileFault(f)
		case CORSFilter:
			c := &corsv3.CorsPolicy{}
			if err := cfg.UnmarshalTo(c); err != nil {
				return nil, fmt.Errorf("cors config: %w", err)
			}
			if out.CORS, err = compileCORS(c); err != nil {
				return nil, err
			}
		case ratelimit.Name:
			m := &lrlv3.LocalRateLimit{}
			if err := cfg.UnmarshalTo(m); err != nil {
				return nil, fmt.Errorf("local_ratelimit config: %w", err)
			}
			if out.RateLimit, err = ratelimit.Compile(m); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unsupported per-route filter config %q", name)
		}
	}
	return out, nil
}

func compileAction(out *Route, a *routev3.RouteAction) error {
	switch c := a.ClusterSpecifier.(type) {
	case *routev3.RouteAction_Cluster:
		out.Clusters = []WeightedCluster{{Name: c.Cluster, Weight: 1}}
		out.TotalWeight = 1
	case *routev3.RouteAction_WeightedClusters:
		for _, wc := range c.WeightedClusters.Clusters {
			w := WeightedCluster{Name: wc.Name, Weight: wc.GetWeight().GetValue()}
			var err error
			if w.RequestHeaders, err = headerOps(wc.RequestHeadersToAdd, wc.RequestHeadersToRemove); err != nil {
				return err
			}
			if w.ResponseHeaders, err = headerOps(wc.ResponseHeadersToAdd, wc.ResponseHeadersToRemove); err != nil {
				return err
			}
			out.TotalWeight += w.Weight
			out.Clusters = append(out.Clusters, w)
		}
		if out.TotalWeight == 0 {
			return fmt.Errorf("weighted clusters have no weight")
		}
	default:
		return fmt.Errorf("route action needs cluster or weighted_clusters")
	}
	switch a.ClusterNotFoundResponseCode {
	case routev3.RouteAction_SERVICE_UNAVAILABLE:
		out.ClusterNotFoundStatus = 503
	case routev3.RouteAction_NOT_FOUND:
		out.ClusterNotFoundStatus = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		out.ClusterNotFoundStatus = 500
	default:
		return fmt.Errorf("cluster_not_found_response_code %v is not supported", a.ClusterNotFoundResponseCode)
	}
	if a.Timeout != nil {
		out.Timeout = a.Timeout.AsDuration()
	} else {
		out.Timeout = 15 * time.Second // Envoy's default route timeout
	}
	if a.RetryPolicy != nil {
		rp, err := compileRetry(a.RetryPolicy)
		if err != nil {
			return err
		}
		out.Retry = rp
	}
	for _, m := range a.RequestMirrorPolicies {
		out.Mirrors = append(out.Mirrors, Mirror{Cluster: m.Cluster, PerMillion: perMillion(m.GetRuntimeFraction().GetDefaultValue()),
			KeepHost: m.DisableShadowHostSuffixAppend})
	}
	out.Rewrite.Prefix = a.PrefixRewrite
	if rr := a.RegexRewrite; rr != nil {
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			return fmt.Errorf("regex_rewrite: %w", err)
		}
		out.Rewrite.Regex, out.Rewrite.Substitution = re, envoySubstitution(rr.Substitution)
	}
	out.Rewrite.Host = a.GetHostRewriteLiteral()
	for _, h := range a.HashPolicy {
		switch p := h.PolicySpecifier.(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			out.Hash = append(out.Hash, HashPolicy{Header: strings.ToLower(p.Header.HeaderName)})
		case *routev3.RouteAction_HashPolicy_Cookie_:
			out.Hash = append(out.Hash, HashPolicy{Cookie: p.Cookie.Name, CookiePath: p.Cookie.Path, CookieTTL: p.Cookie.GetTtl().AsDuration()})
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			out.Hash = append(out.Hash, HashPolicy{SourceIP: p.ConnectionProperties.SourceIp})
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			out.Hash = append(out.Hash, HashPolicy{QueryParam: p.QueryParameter.Name})
		default:
			return fmt.Errorf("unsupported hash policy %T", p)
		}
	}
	return nil
}

// envoySubstitution converts Envoy's "\1" back-references to Go's "${1}".
func envoySubstitution(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
			b.WriteString("${" + string(s[i+1]) + "}")
			i++
			continue
		}
		if s[i] == '$' {
			b.WriteString("$$")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  301,
	routev3.RedirectAction_FOUND:              302,
	routev3.RedirectAction_SEE_OTHER:          303,
	routev3.RedirectAction_TEMPORARY_REDIRECT: 307,
	routev3.RedirectAction_PERMANENT_REDIRECT: 308,
}

func compileRedirect(r *routev3.RedirectAction) *RedirectAction {
	out := &RedirectAction{Host: r.HostRedirect, Port: r.PortRedirect, StripQuery: r.StripQuery, Code: redirectCodes[r.ResponseCode]}
	switch s := r.SchemeRewriteSpecifier.(type) {
	case *routev3.RedirectAction_SchemeRedirect:
		out.Scheme = s.SchemeRedirect
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			out.Scheme = "https"
		}
	}
	switch p := r.PathRewriteSpecifier.(type) {
	case *routev3.RedirectAction_PathRedirect:
		out.Path = p.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		out.PrefixRewrite = p.PrefixRewrite
	}
	return out
}

func headerOps(add []*corev3.HeaderValueOption, remove []string) (HeaderOps, error) {
	var ops HeaderOps
	for _, n := range remove {
		ops.Remove = append(ops.Remove, strings.ToLower(n))
	}
	for _, h := range add {
		f := httpx.Field{Name: strings.ToLower(h.GetHeader().GetKey()), Value: h.GetHeader().GetValue()}
		if strings.Contains(f.Value, "%") {
			return ops, fmt.Errorf("header %s: command operators (%%...%%) are not supported", f.Name)
		}
		switch h.AppendAction {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			ops.Append = append(ops.Append, f)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			ops.Set = append(ops.Set, f)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			ops.AddIfAbsent = append(ops.AddIfAbsent, f)
		default:
			return ops, fmt.Errorf("header %s: unsupported append action %s", f.Name, h.AppendAction)
		}
	}
	return ops, nil
}

// CompileFault converts a fault filter configuration.
func CompileFault(f *faultv3.HTTPFault) *Fault {
	out := &Fault{GRPCStatus: -1}
	if d := f.Delay; d != nil {
		out.Delay = d.GetFixedDelay().AsDuration()
		out.DelayPerMillion = perMillion(d.Percentage)
	}
	if a := f.Abort; a != nil {
		out.AbortPerMillion = perMillion(a.Percentage)
		switch e := a.ErrorType.(type) {
		case *faultv3.FaultAbort_HttpStatus:
			out.AbortStatus = int(e.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			out.GRPCStatus = int(e.GrpcStatus)
			out.AbortStatus = 200
		}
	}
	if out.DelayPerMillion == 0 && out.AbortPerMillion == 0 || f.Delay == nil && f.Abort == nil {
		return nil
	}
	return out
}

func compileCORS(c *corsv3.CorsPolicy) (*CORS, error) {
	out := &CORS{AllowMethods: c.AllowMethods, AllowHeaders: c.AllowHeaders, ExposeHeaders: c.ExposeHeaders, MaxAge: c.MaxAge,
		AllowCredentials: c.GetAllowCredentials().GetValue(), ForwardNotMatchingPreflights: true}
	if c.ForwardNotMatchingPreflights != nil {
		out.ForwardNotMatchingPreflights = c.ForwardNotMatchingPreflights.Value
	}
	for _, o := range c.AllowOriginStringMatch {
		sm, err := CompileStringMatcher(o)
		if err != nil {
			return nil, fmt.Errorf("cors origin: %w", err)
		}
		out.Origins = append(out.Origins, sm)
	}
	return out, nil
}

// RewritePrefix replaces the part of path the route matched with prefix:
// the matched prefix for prefix routes, the whole path otherwise.
func (r *Route) RewritePrefix(path, prefix string) string {
	switch r.match.kind {
	case pathPrefix, pathSeparatedPrefix:
		if len(path) >= len(r.match.value) {
			return prefix + path[len(r.match.value):]
		}
	}
	return prefix
}

// RewriteTarget applies the route's path rewrite to a request target
// (path and query), keeping the query.
func (r *Route) RewriteTarget(target string) string {
	if r.Rewrite.Prefix == "" && r.Rewrite.Regex == nil {
		return target
	}
	path, query := target, ""
	if i := strings.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	if r.Rewrite.Regex != nil {
		path = r.Rewrite.Regex.ReplaceAllString(path, r.Rewrite.Substitution)
	} else {
		path = r.RewritePrefix(path, r.Rewrite.Prefix)
	}
	if path == "" {
		path = "/"
	}
	return path + query
}
