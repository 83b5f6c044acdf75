package gatewayapi

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/resource"
)

// httpItem is one match of one rule of an HTTPRoute or GRPCRoute, as an
// Istio http rule: the unit Gateway API precedence orders.
type httpItem struct {
	rs          *routeState
	rule, match int
	istio       *networkingapi.HTTPRoute
	rank        matchRank
	// redirectPrefix replaces the matched path prefix in a redirect,
	// which Istio's HTTPRedirect cannot say: the binder reads it from
	// RedirectPrefixAnnotation on synthetic VirtualServices.
	redirectPrefix string
}

// RedirectPrefixAnnotation + "<http rule index>" on a synthetic
// VirtualService is the path prefix a redirect rule puts in place of
// the matched one (Gateway API ReplacePrefixMatch). The binder honours
// it only on VirtualServices the conversion made.
const RedirectPrefixAnnotation = "internal.portico.io/redirect-prefix."

// matchRank is the spec's precedence of a match: exact path, longest
// prefix (regular expressions between the two, as Istio ranks them),
// method, number of header matches, number of query parameter matches.
type matchRank struct {
	pathType, pathLen, method, headers, query int
}

func (a matchRank) compare(b matchRank) int {
	for _, d := range [][2]int{{a.pathType, b.pathType}, {a.pathLen, b.pathLen}, {a.method, b.method}, {a.headers, b.headers}, {a.query, b.query}} {
		if d[0] != d[1] {
			if d[0] > d[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// bucketKey groups items into one synthetic VirtualService: one per
// Gateway, port and hostname. HTTP listeners on one port share a route
// table in the proxy, so all routes of a hostname on a port are ordered
// together.
type bucketKey struct {
	gw   *gatewayState
	port int32
	host string
}

type bucket struct {
	key      bucketKey
	items    []*httpItem
	gateways []string
	// via is the listeners each item was attached through.
	via map[*httpItem][]*listenerState
}

type httpBuilder struct {
	c       *converter
	buckets map[bucketKey]*bucket
	order   []bucketKey
}

func newHTTPBuilder(c *converter) *httpBuilder {
	return &httpBuilder{c: c, buckets: map[bucketKey]*bucket{}}
}

// place files a route's items under every listener and hostname it is
// attached to.
func (hb *httpBuilder) place(rs *routeState, items []*httpItem) {
	for _, ps := range rs.parents {
		for _, a := range ps.listeners {
			if a.ls.syn == nil {
				continue
			}
			for _, h := range a.hosts {
				k := bucketKey{gw: ps.gw, port: a.ls.l.Port, host: h}
				b := hb.buckets[k]
				if b == nil {
					b = &bucket{key: k}
					hb.buckets[k] = b
					hb.order = append(hb.order, k)
				}
				b.gateways = appendUnique(b.gateways, a.ls.synKey.NamespacedName())
				if b.via == nil {
					b.via = map[*httpItem][]*listenerState{}
				}
				for _, it := range items {
					if !containsItem(b.items, it) {
						b.items = append(b.items, it)
					}
					if !containsListener(b.via[it], a.ls) {
						b.via[it] = append(b.via[it], a.ls)
					}
				}
			}
		}
	}
}

func containsListener(list []*listenerState, ls *listenerState) bool {
	for _, x := range list {
		if x == ls {
			return true
		}
	}
	return false
}

// isolatingListener is the listener of a Gateway's port whose hostname
// is the most specific one matching host (exact before wildcard, longer
// before shorter, no hostname last): under listener isolation only the
// routes attached to it serve host. nil when no programmed listener
// matches.
func isolatingListener(gw *gatewayState, port int32, host string) *listenerState {
	var best *listenerState
	bestHost := ""
	for _, ls := range gw.listeners {
		if ls.syn == nil || ls.l.Port != port {
			continue
		}
		lh := "*"
		if ls.l.Hostname != nil && *ls.l.Hostname != "" {
			lh = strings.ToLower(string(*ls.l.Hostname))
		}
		if !hostCovers(lh, host) {
			continue
		}
		if best == nil || lh != "*" && (bestHost == "*" || hostLess(lh, bestHost)) {
			best, bestHost = ls, lh
		}
	}
	return best
}

func containsItem(list []*httpItem, it *httpItem) bool {
	for _, x := range list {
		if x == it {
			return true
		}
	}
	return false
}

// hostRank orders hostnames by the spec's hostname precedence: exact
// names before wildcards, longer before shorter.
func hostLess(a, b string) bool {
	aw, bw := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	if aw != bw {
		return !aw
	}
	return len(a) > len(b)
}

// emit makes the VirtualServices: per bucket, its own items then those of
// less specific hostnames on the same Gateway and port that cover it
// (a request for a.example.com that no a.example.com route matches still
// reaches the routes for *.example.com), in precedence order — but only
// items attached through the listener whose hostname matches the
// bucket's most specifically (listener isolation: a request for
// abc.foo.example.com, with listeners *.example.com and
// abc.foo.example.com, is never served by the routes of *.example.com).
func (hb *httpBuilder) emit() {
	for _, k := range hb.order {
		own := hb.buckets[k]
		iso := isolatingListener(k.gw, k.port, k.host)
		isolated := func(b *bucket, it *httpItem) bool {
			return iso != nil && !containsListener(b.via[it], iso)
		}
		type placed struct {
			it   *httpItem
			host string
		}
		var all []placed
		var gateways []string
		if iso != nil {
			gateways = []string{iso.synKey.NamespacedName()}
		} else {
			gateways = append(gateways, own.gateways...)
		}
		for _, it := range own.items {
			if !isolated(own, it) {
				all = append(all, placed{it, k.host})
			}
		}
		for _, k2 := range hb.order {
			if k2 == k || k2.gw != k.gw || k2.port != k.port || !hostCovers(k2.host, k.host) || k2.host == k.host {
				continue
			}
			other := hb.buckets[k2]
			for _, it := range other.items {
				if !isolated(other, it) {
					all = append(all, placed{it, k2.host})
				}
			}
			if iso == nil {
				for _, g := range other.gateways {
					gateways = appendUnique(gateways, g)
				}
			}
		}
		if len(all) == 0 {
			// Every route for this host belongs to a less specific
			// listener: nothing may serve it here.
			continue
		}
		sort.SliceStable(all, func(i, j int) bool {
			a, b := all[i], all[j]
			if a.host != b.host {
				return hostLess(a.host, b.host)
			}
			if c := a.it.rank.compare(b.it.rank); c != 0 {
				return c < 0
			}
			if a.it.rs != b.it.rs {
				return routeLess(a.it.rs.obj, b.it.rs.obj)
			}
			if a.it.rule != b.it.rule {
				return a.it.rule < b.it.rule
			}
			return a.it.match < b.it.match
		})
		gw := k.gw.obj
		vs := &networking.VirtualService{
			TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "VirtualService"},
			ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: fmt.Sprintf("%s~%d~%s", gw.Name, k.port, k.host),
				CreationTimestamp: gw.CreationTimestamp},
		}
		vs.Spec.Hosts = []string{k.host}
		vs.Spec.Gateways = gateways
		o := &origin{}
		seen := map[*httpItem]bool{}
		for _, p := range all {
			if seen[p.it] {
				continue
			}
			seen[p.it] = true
			if p.it.redirectPrefix != "" {
				if vs.Annotations == nil {
					vs.Annotations = map[string]string{}
				}
				vs.Annotations[RedirectPrefixAnnotation+strconv.Itoa(len(vs.Spec.Http))] = p.it.redirectPrefix
			}
			rule := proto.Clone(p.it.istio).(*networkingapi.HTTPRoute)
			if red := rule.Redirect; red != nil && red.Scheme == "" && red.RedirectPort == nil {
				// The spec: a redirect naming neither scheme nor port
				// goes to the listener's port (the proxy leaves out 80
				// for http and 443 for https), whatever port the
				// client's Host header carried.
				red.RedirectPort = &networkingapi.HTTPRedirect_Port{Port: uint32(k.port)}
			}
			vs.Spec.Http = append(vs.Spec.Http, rule)
			o.http = append(o.http, p.it.rs)
		}
		contentID(vs)
		hb.c.out.VirtualServices = append(hb.c.out.VirtualServices, vs)
		hb.c.out.synthetic[resource.KeyOf(vs)] = o
	}
}

// ruleName names the Envoy routes of a rule after the Gateway API
// object, so config_dump shows where each came from.
func ruleName(rs *routeState, rule, match int) string {
	return fmt.Sprintf("%s.%s.%s.%d.%d", strings.ToLower(rs.kind), rs.obj.GetNamespace(), rs.obj.GetName(), rule, match)
}

// ---- HTTPRoute ----

func (hb *httpBuilder) addHTTPRoute(rs *routeState, r *gwv1.HTTPRoute) {
	c := hb.c
	var items []*httpItem
	for i := range r.Spec.Rules {
		rule := &r.Spec.Rules[i]
		field := fmt.Sprintf("spec.rules[%d]", i)
		action, redirectPrefix := c.httpAction(rs, field, rule)
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.HTTPRouteMatch{{}}
		}
		for j := range matches {
			m := &matches[j]
			reqs, rank, prefix, ok := c.httpMatch(rs, fmt.Sprintf("%s.matches[%d]", field, j), m)
			if !ok {
				continue
			}
			ir := proto.Clone(action).(*networkingapi.HTTPRoute)
			ir.Name = ruleName(rs, i, j)
			ir.Match = reqs
			if redirectPrefix == nil {
				c.pathRewrite(rs, field, rule, ir, prefix)
				items = append(items, &httpItem{rs: rs, rule: i, match: j, istio: ir, rank: rank})
				continue
			}
			// A redirect replacing the matched prefix: one rule per
			// Istio match, each with the replacement that fits it.
			for _, req := range reqs {
				one := proto.Clone(ir).(*networkingapi.HTTPRoute)
				one.Match = []*networkingapi.HTTPMatchRequest{req}
				it := &httpItem{rs: rs, rule: i, match: j, istio: one, rank: rank}
				switch {
				case req.GetUri().GetExact() != "":
					one.Redirect.Uri = *redirectPrefix
					if one.Redirect.Uri == "" {
						one.Redirect.Uri = "/"
					}
				case req.GetUri().GetPrefix() != "":
					it.redirectPrefix = strings.TrimSuffix(*redirectPrefix, "/") + "/"
				default:
					rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s: ReplacePrefixMatch needs a PathPrefix match; requests matching this rule get 500", field)
					one.Redirect, one.DirectResponse = nil, status500()
				}
				items = append(items, it)
			}
		}
	}
	hb.place(rs, items)
}

// httpMatch converts one match, defaults applied. prefix is the path
// prefix matched (for prefix rewrites), "" otherwise.
func (c *converter) httpMatch(rs *routeState, field string, m *gwv1.HTTPRouteMatch) ([]*networkingapi.HTTPMatchRequest, matchRank, string, bool) {
	var rank matchRank
	base := &networkingapi.HTTPMatchRequest{}
	pathType, value := gwv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		pathType = deref(m.Path.Type, gwv1.PathMatchPathPrefix)
		value = deref(m.Path.Value, "/")
	}
	var reqs []*networkingapi.HTTPMatchRequest
	prefix := ""
	switch pathType {
	case gwv1.PathMatchExact:
		base.Uri = exact(value)
		rank.pathType, rank.pathLen = 3, len(value)
	case gwv1.PathMatchRegularExpression:
		if _, err := regexp.Compile(value); err != nil {
			rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s.path.value: invalid regular expression %q: %v", field, value, err)
			return nil, rank, "", false
		}
		base.Uri = &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: value}}
		rank.pathType, rank.pathLen = 2, len(value)
	default:
		p := strings.TrimSuffix(value, "/")
		prefix = p
		rank.pathType, rank.pathLen = 1, len(p)
		if p != "" {
			// The spec's prefix matches whole path segments: /foo matches
			// /foo and /foo/bar, not /foobar.
			alt := proto.Clone(base).(*networkingapi.HTTPMatchRequest)
			alt.Uri = &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: p + "/"}}
			base.Uri = exact(p)
			reqs = append(reqs, base, alt)
		} else {
			base.Uri = &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: "/"}}
		}
	}
	if len(reqs) == 0 {
		reqs = []*networkingapi.HTTPMatchRequest{base}
	}
	var headers map[string]*networkingapi.StringMatch
	for i, h := range m.Headers {
		name := strings.ToLower(string(h.Name))
		if headers == nil {
			headers = map[string]*networkingapi.StringMatch{}
		}
		if _, dup := headers[name]; dup {
			continue // the spec: the first match of a name counts
		}
		sm, ok := c.stringMatch(rs, fmt.Sprintf("%s.headers[%d]", field, i), deref(h.Type, gwv1.HeaderMatchExact) == gwv1.HeaderMatchRegularExpression, h.Value)
		if !ok {
			return nil, rank, "", false
		}
		headers[name] = sm
	}
	var query map[string]*networkingapi.StringMatch
	for i, q := range m.QueryParams {
		if query == nil {
			query = map[string]*networkingapi.StringMatch{}
		}
		if _, dup := query[string(q.Name)]; dup {
			continue
		}
		sm, ok := c.stringMatch(rs, fmt.Sprintf("%s.queryParams[%d]", field, i), deref(q.Type, gwv1.QueryParamMatchExact) == gwv1.QueryParamMatchRegularExpression, q.Value)
		if !ok {
			return nil, rank, "", false
		}
		query[string(q.Name)] = sm
	}
	rank.headers, rank.query = len(headers), len(query)
	for _, r := range reqs {
		r.Headers, r.QueryParams = headers, query
		if m.Method != nil {
			r.Method = exact(string(*m.Method))
		}
	}
	if m.Method != nil {
		rank.method = 1
	}
	return reqs, rank, prefix, true
}

func exact(v string) *networkingapi.StringMatch {
	return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: v}}
}

func (c *converter) stringMatch(rs *routeState, field string, regex bool, v string) (*networkingapi.StringMatch, bool) {
	if !regex {
		return exact(v), true
	}
	if _, err := regexp.Compile(v); err != nil {
		rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s.value: invalid regular expression %q: %v", field, v, err)
		return nil, false
	}
	return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: v}}, true
}

// invalidDestination is an HTTP rule's share for a backendRef that did
// not resolve (unknown Service, kind or port, not permitted by a
// ReferenceGrant): InvalidBackendHost without a port. The binder turns
// it, on synthetic VirtualServices only, into ir.InvalidBackendCluster:
// that share of the rule's requests is answered with 500 while the
// valid backends keep theirs.
func invalidDestination(weight int32) *networkingapi.HTTPRouteDestination {
	return &networkingapi.HTTPRouteDestination{Destination: &networkingapi.Destination{Host: InvalidBackendHost}, Weight: weight}
}

// status500 is the answer for a rule the spec says must fail.
func status500() *networkingapi.HTTPDirectResponse {
	return &networkingapi.HTTPDirectResponse{Status: 500}
}

// httpAction converts a rule's filters, backends, timeouts and retry
// into an Istio rule without matches.
func (c *converter) httpAction(rs *routeState, field string, rule *gwv1.HTTPRouteRule) (*networkingapi.HTTPRoute, *string) {
	out := &networkingapi.HTTPRoute{}
	unsupported := false
	var redirectPrefix *string
	for i, f := range rule.Filters {
		ff := fmt.Sprintf("%s.filters[%d]", field, i)
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			out.Headers = withRequestHeaders(out.Headers, headerOps(f.RequestHeaderModifier))
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			out.Headers = withResponseHeaders(out.Headers, headerOps(f.ResponseHeaderModifier))
		case gwv1.HTTPRouteFilterRequestRedirect:
			red, prefix, ok := c.redirect(rs, ff, f.RequestRedirect)
			if !ok {
				unsupported = true
				continue
			}
			out.Redirect, redirectPrefix = red, prefix
		case gwv1.HTTPRouteFilterURLRewrite:
			if f.URLRewrite != nil && f.URLRewrite.Hostname != nil {
				if out.Rewrite == nil {
					out.Rewrite = &networkingapi.HTTPRewrite{}
				}
				out.Rewrite.Authority = string(*f.URLRewrite.Hostname)
			}
			// Paths are rewritten per match (pathRewrite).
		case gwv1.HTTPRouteFilterRequestMirror:
			if m := c.mirror(rs, ff, f.RequestMirror); m != nil {
				out.Mirrors = append(out.Mirrors, m)
			}
		case gwv1.HTTPRouteFilterCORS:
			out.CorsPolicy = corsPolicy(f.CORS)
		default:
			rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s: filter type %s is not supported; requests matching this rule get 500", ff, f.Type)
			unsupported = true
		}
	}
	if unsupported {
		return &networkingapi.HTTPRoute{DirectResponse: status500()}, nil
	}
	if out.Redirect != nil {
		out.Rewrite, out.Mirrors = nil, nil
		return out, redirectPrefix
	}
	valid := 0
	for i, b := range rule.BackendRefs {
		d := c.resolveBackend(rs, fmt.Sprintf("%s.backendRefs[%d]", field, i), b.BackendObjectReference)
		w := deref(b.Weight, 1)
		if w <= 0 {
			continue
		}
		if d == nil {
			// The spec: requests that would have gone to an invalid
			// backend get 500, in proportion to its weight.
			out.Route = append(out.Route, invalidDestination(w))
			continue
		}
		valid++
		rd := &networkingapi.HTTPRouteDestination{Destination: d, Weight: w}
		for _, bf := range b.Filters {
			switch bf.Type {
			case gwv1.HTTPRouteFilterRequestHeaderModifier:
				rd.Headers = withRequestHeaders(rd.Headers, headerOps(bf.RequestHeaderModifier))
			case gwv1.HTTPRouteFilterResponseHeaderModifier:
				rd.Headers = withResponseHeaders(rd.Headers, headerOps(bf.ResponseHeaderModifier))
			default:
				rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s.backendRefs[%d].filters: type %s is not supported on a backend", field, i, bf.Type)
			}
		}
		out.Route = append(out.Route, rd)
	}
	if valid == 0 {
		// No backend to send to (none listed, all invalid, all weight 0):
		// the spec's answer is 500.
		return &networkingapi.HTTPRoute{DirectResponse: status500(), Headers: out.Headers}, nil
	}
	if len(out.Route) == 1 {
		out.Route[0].Weight = 0
	}
	// Gateway API routes are not retried unless they say so (Istio's
	// default retry policy is for its own kinds).
	out.Retries = &networkingapi.HTTPRetry{Attempts: 0}
	var req, breq *durationpb.Duration
	if t := rule.Timeouts; t != nil {
		req, breq = parseDuration(t.Request), parseDuration(t.BackendRequest)
	}
	if rt := rule.Retry; rt != nil {
		r := &networkingapi.HTTPRetry{Attempts: int32(deref(rt.Attempts, 2))}
		var on []string
		for _, code := range rt.Codes {
			on = append(on, strconv.Itoa(int(code)))
		}
		on = append(on, "connect-failure", "refused-stream")
		r.RetryOn = strings.Join(on, ",")
		r.Backoff = parseDuration(rt.Backoff)
		// backendRequest bounds each try; request the whole exchange.
		r.PerTryTimeout = breq
		out.Retries = r
		out.Timeout = req
	} else {
		// Without retries there is one try: the tighter of the two
		// timeouts bounds it (0s disables one).
		out.Timeout = req
		if breq != nil && breq.AsDuration() > 0 && (req == nil || req.AsDuration() == 0 || breq.AsDuration() < req.AsDuration()) {
			out.Timeout = breq
		}
	}
	if rule.SessionPersistence != nil {
		rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s.sessionPersistence is not supported and is ignored", field)
	}
	return out, nil
}

func parseDuration(d *gwv1.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	v, err := time.ParseDuration(string(*d))
	if err != nil {
		return nil
	}
	return durationpb.New(v)
}

func headerOps(f *gwv1.HTTPHeaderFilter) *networkingapi.Headers_HeaderOperations {
	if f == nil {
		return nil
	}
	ops := &networkingapi.Headers_HeaderOperations{}
	for _, h := range f.Set {
		if ops.Set == nil {
			ops.Set = map[string]string{}
		}
		ops.Set[strings.ToLower(string(h.Name))] = h.Value
	}
	for _, h := range f.Add {
		if ops.Add == nil {
			ops.Add = map[string]string{}
		}
		ops.Add[strings.ToLower(string(h.Name))] = h.Value
	}
	for _, n := range f.Remove {
		ops.Remove = append(ops.Remove, strings.ToLower(n))
	}
	return ops
}

func withRequestHeaders(h *networkingapi.Headers, ops *networkingapi.Headers_HeaderOperations) *networkingapi.Headers {
	if h == nil {
		h = &networkingapi.Headers{}
	}
	h.Request = ops
	return h
}

func withResponseHeaders(h *networkingapi.Headers, ops *networkingapi.Headers_HeaderOperations) *networkingapi.Headers {
	if h == nil {
		h = &networkingapi.Headers{}
	}
	h.Response = ops
	return h
}

// redirect converts a RequestRedirect; prefix is set for ReplacePrefixMatch.
func (c *converter) redirect(rs *routeState, field string, f *gwv1.HTTPRequestRedirectFilter) (red *networkingapi.HTTPRedirect, prefix *string, ok bool) {
	if f == nil {
		return nil, nil, false
	}
	red = &networkingapi.HTTPRedirect{RedirectCode: uint32(deref(f.StatusCode, 302))}
	if f.Scheme != nil {
		red.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		red.Authority = string(*f.Hostname)
	}
	if f.Port != nil {
		red.RedirectPort = &networkingapi.HTTPRedirect_Port{Port: uint32(*f.Port)}
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gwv1.FullPathHTTPPathModifier:
			red.Uri = deref(p.ReplaceFullPath, "/")
		case gwv1.PrefixMatchHTTPPathModifier:
			prefix = ptr(deref(p.ReplacePrefixMatch, "/"))
		default:
			rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s.requestRedirect.path: %s is not supported; requests matching this rule get 500", field, p.Type)
			return nil, nil, false
		}
	}
	return red, prefix, true
}

func ptr[T any](v T) *T { return &v }

func (c *converter) mirror(rs *routeState, field string, f *gwv1.HTTPRequestMirrorFilter) *networkingapi.HTTPMirrorPolicy {
	if f == nil {
		return nil
	}
	d := c.resolveBackend(rs, field+".requestMirror.backendRef", f.BackendRef)
	if d == nil {
		return nil
	}
	m := &networkingapi.HTTPMirrorPolicy{Destination: d}
	switch {
	case f.Percent != nil:
		m.Percentage = &networkingapi.Percent{Value: float64(*f.Percent)}
	case f.Fraction != nil:
		den := float64(deref(f.Fraction.Denominator, 100))
		if den > 0 {
			m.Percentage = &networkingapi.Percent{Value: 100 * float64(f.Fraction.Numerator) / den}
		}
	}
	return m
}

// pathRewrite adds a URLRewrite filter's path to one match's rule: a full
// replacement, or the matched prefix replaced, segment-wise as the spec
// says (/foo → /bar turns /foo/x into /bar/x, and / into /x).
func (c *converter) pathRewrite(rs *routeState, field string, rule *gwv1.HTTPRouteRule, ir *networkingapi.HTTPRoute, prefix string) {
	if ir.DirectResponse != nil || ir.Redirect != nil {
		return
	}
	for _, f := range rule.Filters {
		if f.Type != gwv1.HTTPRouteFilterURLRewrite || f.URLRewrite == nil || f.URLRewrite.Path == nil {
			continue
		}
		p := f.URLRewrite.Path
		if ir.Rewrite == nil {
			ir.Rewrite = &networkingapi.HTTPRewrite{}
		}
		switch p.Type {
		case gwv1.FullPathHTTPPathModifier:
			ir.Rewrite.UriRegexRewrite = &networkingapi.RegexRewrite{Match: "^.*$", Rewrite: deref(p.ReplaceFullPath, "/")}
		case gwv1.PrefixMatchHTTPPathModifier:
			repl := deref(p.ReplacePrefixMatch, "/")
			if strings.HasSuffix(repl, "/") {
				ir.Rewrite.UriRegexRewrite = &networkingapi.RegexRewrite{Match: "^" + regexp.QuoteMeta(prefix) + "/?(.*)$", Rewrite: repl + `\1`}
			} else {
				ir.Rewrite.UriRegexRewrite = &networkingapi.RegexRewrite{Match: "^" + regexp.QuoteMeta(prefix) + "(/.*)?$", Rewrite: repl + `\1`}
			}
			if ir.Match != nil && ir.Match[0].GetUri().GetRegex() != "" || ir.Match != nil && ir.Match[0].GetUri().GetExact() != "" && prefix == "" {
				rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s: ReplacePrefixMatch needs a PathPrefix match", field)
				ir.Rewrite.UriRegexRewrite = nil
			}
		}
	}
}

func corsPolicy(f *gwv1.HTTPCORSFilter) *networkingapi.CorsPolicy {
	if f == nil {
		return nil
	}
	// A preflight from an origin the filter does not allow is answered
	// at the gateway (without CORS headers), not passed to the backend.
	p := &networkingapi.CorsPolicy{UnmatchedPreflights: networkingapi.CorsPolicy_IGNORE}
	for _, o := range f.AllowOrigins {
		s := string(o)
		if s == "*" || strings.Contains(s, "*") {
			re := "^" + strings.ReplaceAll(regexp.QuoteMeta(s), `\*`, ".*") + "$"
			p.AllowOrigins = append(p.AllowOrigins, &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: re}})
			continue
		}
		p.AllowOrigins = append(p.AllowOrigins, exact(s))
	}
	for _, m := range f.AllowMethods {
		p.AllowMethods = append(p.AllowMethods, string(m))
	}
	for _, h := range f.AllowHeaders {
		p.AllowHeaders = append(p.AllowHeaders, string(h))
	}
	for _, h := range f.ExposeHeaders {
		p.ExposeHeaders = append(p.ExposeHeaders, string(h))
	}
	if f.MaxAge > 0 {
		p.MaxAge = durationpb.New(time.Duration(f.MaxAge) * time.Second)
	}
	if f.AllowCredentials != nil {
		p.AllowCredentials = wrapperspb.Bool(*f.AllowCredentials)
	}
	return p
}

// ---- GRPCRoute ----

func (hb *httpBuilder) addGRPCRoute(rs *routeState, r *gwv1.GRPCRoute) {
	c := hb.c
	var items []*httpItem
	for i := range r.Spec.Rules {
		rule := &r.Spec.Rules[i]
		field := fmt.Sprintf("spec.rules[%d]", i)
		action := c.grpcAction(rs, field, rule)
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gwv1.GRPCRouteMatch{{}}
		}
		for j := range matches {
			m := &matches[j]
			req, rank, ok := c.grpcMatch(rs, fmt.Sprintf("%s.matches[%d]", field, j), m)
			if !ok {
				continue
			}
			ir := proto.Clone(action).(*networkingapi.HTTPRoute)
			ir.Name = ruleName(rs, i, j)
			ir.Match = []*networkingapi.HTTPMatchRequest{req}
			items = append(items, &httpItem{rs: rs, rule: i, match: j, istio: ir, rank: rank})
		}
	}
	hb.place(rs, items)
}

func (c *converter) grpcMatch(rs *routeState, field string, m *gwv1.GRPCRouteMatch) (*networkingapi.HTTPMatchRequest, matchRank, bool) {
	var rank matchRank
	req := &networkingapi.HTTPMatchRequest{}
	switch mm := m.Method; {
	case mm == nil || mm.Service == nil && mm.Method == nil:
		req.Uri = &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: "/"}}
		rank.pathType = 1
	case deref(mm.Type, gwv1.GRPCMethodMatchExact) == gwv1.GRPCMethodMatchRegularExpression:
		svc, method := deref(mm.Service, "[^/]+"), deref(mm.Method, "[^/]+")
		re := "/" + svc + "/" + method
		if _, err := regexp.Compile(re); err != nil {
			rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s.method: invalid regular expression: %v", field, err)
			return nil, rank, false
		}
		req.Uri = &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: re}}
		rank.pathType, rank.pathLen = 2, len(re)
	case mm.Service != nil && mm.Method != nil:
		p := "/" + *mm.Service + "/" + *mm.Method
		req.Uri = exact(p)
		rank.pathType, rank.pathLen = 3, len(p)
	case mm.Service != nil:
		p := "/" + *mm.Service + "/"
		req.Uri = &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: p}}
		rank.pathType, rank.pathLen = 1, len(p)
	default:
		re := "/[^/]+/" + regexp.QuoteMeta(*mm.Method)
		req.Uri = &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: re}}
		rank.pathType, rank.pathLen = 2, len(re)
	}
	for i, h := range m.Headers {
		name := strings.ToLower(string(h.Name))
		if req.Headers == nil {
			req.Headers = map[string]*networkingapi.StringMatch{}
		}
		if _, dup := req.Headers[name]; dup {
			continue
		}
		sm, ok := c.stringMatch(rs, fmt.Sprintf("%s.headers[%d]", field, i), deref(h.Type, gwv1.GRPCHeaderMatchExact) == gwv1.GRPCHeaderMatchRegularExpression, h.Value)
		if !ok {
			return nil, rank, false
		}
		req.Headers[name] = sm
	}
	rank.headers = len(req.Headers)
	return req, rank, true
}

func (c *converter) grpcAction(rs *routeState, field string, rule *gwv1.GRPCRouteRule) *networkingapi.HTTPRoute {
	out := &networkingapi.HTTPRoute{}
	for i, f := range rule.Filters {
		ff := fmt.Sprintf("%s.filters[%d]", field, i)
		switch f.Type {
		case gwv1.GRPCRouteFilterRequestHeaderModifier:
			out.Headers = withRequestHeaders(out.Headers, headerOps(f.RequestHeaderModifier))
		case gwv1.GRPCRouteFilterResponseHeaderModifier:
			out.Headers = withResponseHeaders(out.Headers, headerOps(f.ResponseHeaderModifier))
		case gwv1.GRPCRouteFilterRequestMirror:
			if m := c.mirror(rs, ff, f.RequestMirror); m != nil {
				out.Mirrors = append(out.Mirrors, m)
			}
		default:
			rs.partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s: filter type %s is not supported; requests matching this rule get 500", ff, f.Type)
			return &networkingapi.HTTPRoute{DirectResponse: status500()}
		}
	}
	valid := 0
	for i, b := range rule.BackendRefs {
		d := c.resolveBackend(rs, fmt.Sprintf("%s.backendRefs[%d]", field, i), b.BackendObjectReference)
		w := deref(b.Weight, 1)
		switch {
		case w <= 0:
		case d == nil:
			out.Route = append(out.Route, invalidDestination(w))
		default:
			valid++
			out.Route = append(out.Route, &networkingapi.HTTPRouteDestination{Destination: d, Weight: w})
		}
	}
	if valid == 0 {
		return &networkingapi.HTTPRoute{DirectResponse: status500()}
	}
	if len(out.Route) == 1 {
		out.Route[0].Weight = 0
	}
	out.Retries = &networkingapi.HTTPRetry{Attempts: 0}
	return out
}
