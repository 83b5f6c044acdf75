package gateway

//lint:file-ignore SA1019 Istio still accepts its deprecated fields (minimumRingSize, LEAST_CONN, consecutiveErrors, mirrorPercent, percent, allowOrigin), and so must a gateway that takes the same YAML.

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portico-gateway/portico/pkg/gatewayapi"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// vsInfo is a VirtualService validated and converted once per build; binding
// to each proxy class then only selects and copies.
type vsInfo struct {
	obj      *networking.VirtualService
	key      resource.Key
	ref      ir.Ref
	hosts    []string
	gateways []string // namespace/name, "mesh" removed
	http     []*httpRule
	tls      []*l4Rule
	tcp      []*l4Rule
	// routes caches httpRoutes per server (and class, with sourceLabels):
	// the first server's inline, since most VirtualServices bind to one
	// or two (a map each was 2.5 MB at 5,000), the others in moreRoutes,
	// looked up in order: a VirtualService binds to a few servers, and a
	// map for the second alone (a Gateway with HTTP and HTTPS servers)
	// was another 2.9 MB.
	routes     boundRoutes
	moreRoutes []boundRoutes
	// rateLimit is the portico.io/local-rate-limit of every HTTP route.
	rateLimit *ir.LocalRateLimit
	// httpClusters is every cluster of http, each once: made on first use
	// and kept with the conversion, so that binding one VirtualService
	// among thousands does not walk and hash every rule's clusters again.
	httpClusters    []clusterKey
	httpClustersSet bool
}

// allHTTPClusters returns the clusters of every HTTP rule, each once, in
// first-use order.
func (info *vsInfo) allHTTPClusters() []clusterKey {
	if info.httpClustersSet {
		return info.httpClusters
	}
	var out []clusterKey
	var seen map[clusterKey]bool // past a few, so that many rules stay linear
	for _, rule := range info.http {
		for _, ck := range rule.clusters {
			if seen == nil && len(out) == 8 {
				seen = make(map[clusterKey]bool, 16)
				for _, k := range out {
					seen[k] = true
				}
			}
			if seen != nil {
				if !seen[ck] {
					seen[ck] = true
					out = append(out, ck)
				}
			} else if !slices.Contains(out, ck) {
				out = append(out, ck)
			}
		}
	}
	info.httpClusters, info.httpClustersSet = out, true
	return out
}

type boundKey struct {
	gateway string
	port    uint32
	class   string
}

// httpRule is one entry of spec.http; each match becomes one route.
type httpRule struct {
	index   int
	matches []httpMatch
	// clusters this rule sends traffic to (including mirrors).
	clusters []clusterKey
}

type httpMatch struct {
	name  string
	match ir.Match
	// route is the rule's route for this match, made once with the
	// conversion and shared by every binding: a VirtualService that did
	// not change yields the very same routes build after build (and
	// translation, seeing them unchanged, reuses what it made of them).
	// Routes are never modified once made.
	route    *ir.Route
	gateways []string
	port     uint32
	// sourceLabels must be a subset of the gateway proxy's own labels, as
	// Istio evaluates them for gateway workloads.
	sourceLabels map[string]string
}

// l4Rule is one entry of spec.tls or spec.tcp.
type l4Rule struct {
	index    int
	field    string
	matches  []l4Match
	clusters []ir.WeightedCluster
	keys     []clusterKey
}

type l4Match struct {
	sniHosts []string
	port     uint32
	gateways []string
}

func (m l4Match) appliesTo(gwKey string, port uint32) bool {
	if m.port != 0 && m.port != port {
		return false
	}
	return len(m.gateways) == 0 || contains(m.gateways, gwKey)
}

func (m httpMatch) appliesTo(gwKey string, port uint32, proxyLabels map[string]string) bool {
	if m.port != 0 && m.port != port {
		return false
	}
	if !labelsMatch(m.sourceLabels, proxyLabels) {
		return false
	}
	return len(m.gateways) == 0 || contains(m.gateways, gwKey)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type vsErrors struct {
	b   *builder
	key resource.Key
}

func (e vsErrors) add(level status.Level, code status.Code, reason, field, format string, args ...any) {
	e.b.report.Add(e.key, status.Message{Code: code, Level: level, Reason: reason, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (e vsErrors) invalid(field, format string, args ...any) {
	e.add(status.Error, status.SchemaValidationError, status.ReasonInvalidSpec, field, format, args...)
}

// convertVirtualService validates a VirtualService and converts its rules.
// Rules with errors are reported and dropped; the rest still serve. It
// returns nil when nothing of the resource can be used.
func (b *builder) convertVirtualService(vs *networking.VirtualService) *vsInfo {
	key := resource.KeyOf(vs)
	errs := vsErrors{b: b, key: key}
	info := &vsInfo{obj: vs, key: key, ref: refOf(resource.KindVirtualService, vs.Namespace, vs.Name)}
	spec := &vs.Spec
	if len(spec.Hosts) == 0 {
		b.report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: "spec.hosts", Message: "at least one host is required"})
		return nil
	}
	for i, h := range spec.Hosts {
		if strings.Contains(h, "/") {
			errs.invalid(fmt.Sprintf("spec.hosts[%d]", i), "host %q must not contain a namespace", h)
			continue
		}
		host := fqdn(h, vs.Namespace, b.opts.DomainSuffix)
		if err := validateHost(host, true); err != nil {
			errs.invalid(fmt.Sprintf("spec.hosts[%d]", i), "%v", err)
			continue
		}
		info.hosts = append(info.hosts, host)
	}
	if len(info.hosts) == 0 {
		b.report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: "spec.hosts", Message: "no valid host"})
		return nil
	}
	if !b.synthetic(key) {
		b.istioVirtualServiceAnalyses(errs, spec)
	}
	for _, g := range spec.Gateways {
		ref := gatewayRef(g, vs.Namespace)
		if ref != "mesh" {
			info.gateways = append(info.gateways, ref)
		}
	}
	if len(info.gateways) == 0 && !b.anyMatchGateways(spec) {
		b.report.Reject(key, status.Message{Code: status.UnsupportedAtGateway, Level: status.Info, Reason: status.ReasonNoGateways, Field: "spec.gateways",
			Message: "no gateway is listed, so this VirtualService applies only to the mesh (sidecars), which Portico does not serve; list a Gateway in spec.gateways"})
		return nil
	}
	info.rateLimit = b.rateLimitOf(vs, key, info.ref)
	for i, h := range spec.Http {
		if r := b.convertHTTPRule(info, errs, i, h); r != nil {
			info.http = append(info.http, r)
		}
	}
	for i, t := range spec.Tls {
		if r := b.convertL4Rule(info, errs, fmt.Sprintf("spec.tls[%d]", i), i, t.Match, t.Route, true); r != nil {
			info.tls = append(info.tls, r)
		}
	}
	for i, t := range spec.Tcp {
		var matches []*networkingapi.TLSMatchAttributes
		for j, m := range t.Match {
			if len(m.DestinationSubnets) > 0 || len(m.SourceLabels) > 0 || m.SourceNamespace != "" {
				errs.add(status.Warning, status.UnsupportedAtGateway, status.ReasonUnsupported, fmt.Sprintf("spec.tcp[%d].match[%d]", i, j),
					"destinationSubnets, sourceLabels and sourceNamespace select sidecar traffic and are ignored at a gateway")
			}
			matches = append(matches, &networkingapi.TLSMatchAttributes{Port: m.Port, Gateways: m.Gateways})
		}
		if r := b.convertL4Rule(info, errs, fmt.Sprintf("spec.tcp[%d]", i), i, matches, t.Route, false); r != nil {
			info.tcp = append(info.tcp, r)
		}
	}
	if len(info.http)+len(info.tls)+len(info.tcp) == 0 {
		b.report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: "spec",
			Message: "no usable http, tls or tcp rule"})
		return nil
	}
	return info
}

func (b *builder) anyMatchGateways(spec *networkingapi.VirtualService) bool {
	for _, h := range spec.Http {
		for _, m := range h.Match {
			if len(m.Gateways) > 0 {
				return true
			}
		}
	}
	return false
}

func (b *builder) matchGateways(raw []string, vsNamespace string) []string {
	var out []string
	for _, g := range raw {
		if ref := gatewayRef(g, vsNamespace); ref != "mesh" {
			out = append(out, ref)
		}
	}
	if len(raw) > 0 && len(out) == 0 {
		return []string{"mesh"} // matches only the mesh: never a gateway
	}
	return out
}

func (b *builder) convertHTTPRule(info *vsInfo, errs vsErrors, i int, h *networkingapi.HTTPRoute) *httpRule {
	field := fmt.Sprintf("spec.http[%d]", i)
	vs := info.obj
	if h.Delegate != nil {
		errs.add(status.Error, status.UnsupportedAtGateway, status.ReasonUnsupported, field+".delegate", "delegation is not supported yet; this rule is ignored")
		return nil
	}
	actions := 0
	for _, set := range []bool{len(h.Route) > 0, h.Redirect != nil, h.DirectResponse != nil} {
		if set {
			actions++
		}
	}
	if actions != 1 {
		errs.invalid(field, "exactly one of route, redirect and directResponse must be set; this rule is ignored")
		return nil
	}
	rule := &httpRule{index: i}
	name := h.Name
	if name == "" {
		name = fmt.Sprintf("%s.%s.%d", vs.Namespace, vs.Name, i)
	}
	// route is everything but each match's Name and Match.
	var route ir.Route
	route.Name = name
	route.Source = info.ref
	route.LocalRateLimit = info.rateLimit

	// Matches.
	for j, m := range h.Match {
		mfield := fmt.Sprintf("%s.match[%d]", field, j)
		hm, ok := b.convertHTTPMatch(errs, mfield, m)
		if !ok {
			return nil
		}
		hm.gateways = b.matchGateways(m.Gateways, vs.Namespace)
		hm.port = m.Port
		hm.sourceLabels = m.SourceLabels
		if len(m.SourceLabels) > 0 {
			b.usesSourceLabels = true
		}
		hm.name = name
		if m.Name != "" {
			hm.name = name + "." + m.Name
		}
		rule.matches = append(rule.matches, hm)
	}
	if len(rule.matches) == 0 {
		rule.matches = []httpMatch{{name: name, match: ir.Match{Path: &ir.StringMatch{Type: ir.MatchPrefix, Value: "/"}}}}
	}

	r := &route
	r.RequestHeaders, r.ResponseHeaders = headerOps(h.Headers)
	switch {
	case h.Redirect != nil:
		red, ok := b.convertRedirect(errs, field+".redirect", h.Redirect)
		if !ok {
			return nil
		}
		if b.synthetic(info.key) {
			// Gateway API's ReplacePrefixMatch, which Istio's redirect
			// cannot say (see gatewayapi.RedirectPrefixAnnotation).
			if p, ok := vs.Annotations[gatewayapi.RedirectPrefixAnnotation+strconv.Itoa(i)]; ok {
				red.Path, red.PathPrefix = "", p
			}
		}
		r.Redirect = red
	case h.DirectResponse != nil:
		dr := h.DirectResponse
		if dr.Status < 200 || dr.Status > 599 {
			errs.invalid(field+".directResponse.status", "status %d is not an HTTP status (200-599); this rule is ignored", dr.Status)
			return nil
		}
		d := &ir.DirectResponse{Status: dr.Status}
		if dr.Body != nil {
			d.Body = dr.Body.GetString_()
			if bs := dr.Body.GetBytes(); bs != nil {
				d.Body = string(bs)
			}
		}
		r.DirectResponse = d
	default:
		fwd := &ir.Forward{}
		total := int32(0)
		for j, d := range h.Route {
			if d.Weight < 0 {
				errs.invalid(fmt.Sprintf("%s.route[%d].weight", field, j), "weight must not be negative; this rule is ignored")
				return nil
			}
			total += d.Weight
		}
		for j, d := range h.Route {
			dfield := fmt.Sprintf("%s.route[%d]", field, j)
			if d.Destination == nil {
				errs.invalid(dfield+".destination", "destination is required; this rule is ignored")
				return nil
			}
			w := uint32(d.Weight)
			if total == 0 {
				w = uint32(100 / len(h.Route))
				if j == 0 {
					w += uint32(100 % len(h.Route))
				}
			} else if d.Weight == 0 {
				continue // Istio drops zero-weight destinations.
			}
			if d.Destination.Host == gatewayapi.InvalidBackendHost && b.synthetic(info.key) {
				// A Gateway API backendRef that did not resolve: its share
				// of the traffic gets 500 (the conversion reported why).
				fwd.Clusters = append(fwd.Clusters, ir.WeightedCluster{Name: ir.InvalidBackendCluster, Weight: w})
				continue
			}
			ck := b.resolveDestination(errs, dfield+".destination", info, d.Destination)
			rule.clusters = append(rule.clusters, ck)
			wc := ir.WeightedCluster{Name: ck.name(), Weight: w}
			wc.RequestHeaders, wc.ResponseHeaders = headerOps(d.Headers)
			fwd.Clusters = append(fwd.Clusters, wc)
		}
		if total != 0 && total != 100 && len(h.Route) > 1 {
			errs.add(status.Warning, status.SchemaWarning, status.ReasonInvalidSpec, field+".route", "weights add up to %d, not 100; traffic is split in proportion", total)
		}
		if !checkDuration(errs, field+".timeout", h.Timeout) {
			return nil
		}
		if h.Timeout != nil {
			fwd.Timeout = &metav1.Duration{Duration: h.Timeout.AsDuration()}
		}
		retry, ok := b.convertRetry(errs, field+".retries", h.Retries)
		if !ok {
			return nil
		}
		fwd.Retry = retry
		mirrors, ok := b.convertMirrors(errs, field, info, h, rule)
		if !ok {
			return nil
		}
		fwd.Mirrors = mirrors
		if h.Rewrite != nil {
			rw := &ir.Rewrite{PathPrefix: h.Rewrite.Uri, Authority: h.Rewrite.Authority}
			if rr := h.Rewrite.UriRegexRewrite; rr != nil {
				if h.Rewrite.Uri != "" {
					errs.invalid(field+".rewrite", "uri and uriRegexRewrite cannot both be set; this rule is ignored")
					return nil
				}
				if _, err := regexp.Compile(rr.Match); err != nil {
					errs.invalid(field+".rewrite.uriRegexRewrite.match", "invalid regular expression %q: %v; this rule is ignored", rr.Match, err)
					return nil
				}
				rw.PathRegex = &ir.RegexRewrite{Pattern: rr.Match, Substitution: rr.Rewrite}
			}
			fwd.Rewrite = rw
		}
		if len(rule.clusters) > 0 {
			fwd.HashPolicy = b.hashPolicy(rule.clusters[0])
		}
		if len(fwd.HashPolicy) > 0 && fwd.Retry != nil && (h.Retries == nil || h.Retries.RetryIgnorePreviousHosts == nil) {
			// As Istio: a consistent-hash route retries on the host its key
			// maps to; the previous-hosts predicate would push the retry to
			// another host and defeat the affinity. An explicit
			// retryIgnorePreviousHosts still wins.
			fwd.Retry.RetryPreviousHosts = false
		}
		r.Forward = fwd
	}
	if h.Fault != nil {
		f, ok := convertFault(errs, field+".fault", h.Fault)
		if !ok {
			return nil
		}
		r.Fault = f
	}
	if h.CorsPolicy != nil {
		c, ok := convertCORS(errs, field+".corsPolicy", h.CorsPolicy)
		if !ok {
			return nil
		}
		r.CORS = c
	}
	for k := range rule.matches {
		m := &rule.matches[k]
		mr := route
		mr.Name, mr.Match = m.name, m.match
		m.route = &mr
	}
	return rule
}

func (b *builder) convertHTTPMatch(errs vsErrors, field string, m *networkingapi.HTTPMatchRequest) (httpMatch, bool) {
	var hm httpMatch
	if m.Uri != nil {
		sm, ok := stringMatch(errs, field+".uri", m.Uri, false)
		if !ok {
			return hm, false
		}
		if sm.Type != ir.MatchRegex && !strings.HasPrefix(sm.Value, "/") {
			errs.invalid(field+".uri", "path %q must start with '/'; this rule is ignored", sm.Value)
			return hm, false
		}
		hm.match.Path = &sm
	} else {
		hm.match.Path = &ir.StringMatch{Type: ir.MatchPrefix, Value: "/"}
	}
	hm.match.IgnoreCase = m.IgnoreUriCase
	for _, pseudo := range []struct {
		name string
		sm   *networkingapi.StringMatch
		f    string
	}{{":method", m.Method, ".method"}, {":authority", m.Authority, ".authority"}, {":scheme", m.Scheme, ".scheme"}} {
		if pseudo.sm == nil {
			continue
		}
		sm, ok := stringMatch(errs, field+pseudo.f, pseudo.sm, false)
		if !ok {
			return hm, false
		}
		hm.match.Headers = append(hm.match.Headers, ir.HeaderMatch{Name: pseudo.name, Match: sm})
	}
	for _, name := range sortedKeys(m.Headers) {
		sm, ok := stringMatch(errs, fmt.Sprintf("%s.headers[%s]", field, name), m.Headers[name], true)
		if !ok {
			return hm, false
		}
		hm.match.Headers = append(hm.match.Headers, ir.HeaderMatch{Name: strings.ToLower(name), Match: sm})
	}
	for _, name := range sortedKeys(m.WithoutHeaders) {
		sm, ok := stringMatch(errs, fmt.Sprintf("%s.withoutHeaders[%s]", field, name), m.WithoutHeaders[name], true)
		if !ok {
			return hm, false
		}
		hm.match.Headers = append(hm.match.Headers, ir.HeaderMatch{Name: strings.ToLower(name), Match: sm, Invert: true})
	}
	for _, name := range sortedKeys(m.QueryParams) {
		sm, ok := stringMatch(errs, fmt.Sprintf("%s.queryParams[%s]", field, name), m.QueryParams[name], true)
		if !ok {
			return hm, false
		}
		if sm.Type == ir.MatchExact && sm.Value == "" {
			sm = ir.StringMatch{Type: ir.MatchPresent} // Istio: exact "" means "present".
		}
		hm.match.QueryParams = append(hm.match.QueryParams, ir.HeaderMatch{Name: name, Match: sm})
	}
	if m.SourceNamespace != "" {
		errs.add(status.Warning, status.UnsupportedAtGateway, status.ReasonUnsupported, field+".sourceNamespace",
			"sourceNamespace selects sidecar traffic and is ignored at a gateway")
	}
	return hm, true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// stringMatch converts Istio's StringMatch. An empty match means "present"
// where Istio allows it (headers, query parameters).
func stringMatch(errs vsErrors, field string, sm *networkingapi.StringMatch, emptyIsPresent bool) (ir.StringMatch, bool) {
	switch m := sm.GetMatchType().(type) {
	case *networkingapi.StringMatch_Exact:
		return ir.StringMatch{Type: ir.MatchExact, Value: m.Exact}, true
	case *networkingapi.StringMatch_Prefix:
		return ir.StringMatch{Type: ir.MatchPrefix, Value: m.Prefix}, true
	case *networkingapi.StringMatch_Regex:
		if _, err := regexp.Compile(m.Regex); err != nil {
			errs.invalid(field+".regex", "invalid regular expression %q: %v; this rule is ignored", m.Regex, err)
			return ir.StringMatch{}, false
		}
		return ir.StringMatch{Type: ir.MatchRegex, Value: m.Regex}, true
	}
	if emptyIsPresent {
		return ir.StringMatch{Type: ir.MatchPresent}, true
	}
	errs.invalid(field, "one of exact, prefix or regex is required; this rule is ignored")
	return ir.StringMatch{}, false
}

func headerOps(h *networkingapi.Headers) (req, resp *ir.HeaderOps) {
	if h == nil {
		return nil, nil
	}
	conv := func(o *networkingapi.Headers_HeaderOperations) *ir.HeaderOps {
		if o == nil {
			return nil
		}
		ops := &ir.HeaderOps{}
		for _, k := range sortedKeys(o.Set) {
			ops.Set = append(ops.Set, ir.Header{Name: strings.ToLower(k), Value: o.Set[k]})
		}
		for _, k := range sortedKeys(o.Add) {
			ops.Add = append(ops.Add, ir.Header{Name: strings.ToLower(k), Value: o.Add[k]})
		}
		for _, k := range o.Remove {
			ops.Remove = append(ops.Remove, strings.ToLower(k))
		}
		sort.Strings(ops.Remove)
		if ops.Empty() {
			return nil
		}
		return ops
	}
	return conv(h.Request), conv(h.Response)
}

func (b *builder) convertRedirect(errs vsErrors, field string, r *networkingapi.HTTPRedirect) (*ir.Redirect, bool) {
	red := &ir.Redirect{Path: r.Uri, Host: r.Authority, Scheme: r.Scheme, Code: r.RedirectCode}
	if red.Code == 0 {
		red.Code = 301
	}
	switch red.Code {
	case 301, 302, 303, 307, 308:
	default:
		errs.invalid(field+".redirectCode", "redirect code %d is not one of 301, 302, 303, 307, 308; this rule is ignored", r.RedirectCode)
		return nil, false
	}
	if p, ok := r.RedirectPort.(*networkingapi.HTTPRedirect_Port); ok {
		red.Port = p.Port
	}
	return red, true
}

// Istio's retry policy when a route has none (pilot's route/retry
// package): "retriable-status-codes" is in retryOn but no status code is
// listed, so a 503 from the upstream is not retried (older Istio releases
// listed 503; current ones do not, and neither does Portico).
var defaultRetry = ir.Retry{
	Attempts:           2,
	RetryOn:            []string{"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"},
	RetryPreviousHosts: true,
}

// Envoy's retry_on conditions that Istio passes through.
var retryOnConditions = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "reset-before-request": true, "connect-failure": true,
	"envoy-ratelimited": true, "retriable-4xx": true, "refused-stream": true, "retriable-status-codes": true,
	"retriable-headers": true, "http3-post-connect-failure": true,
	"cancelled": true, "deadline-exceeded": true, "internal": true, "resource-exhausted": true, "unavailable": true,
}

func (b *builder) convertRetry(errs vsErrors, field string, r *networkingapi.HTTPRetry) (*ir.Retry, bool) {
	if r == nil {
		def := defaultRetry
		def.RetryOn = append([]string(nil), defaultRetry.RetryOn...)
		return &def, true
	}
	if r.Attempts < 0 {
		errs.invalid(field+".attempts", "attempts must not be negative; this rule is ignored")
		return nil, false
	}
	if r.Attempts == 0 {
		return nil, true // retries disabled explicitly
	}
	out := &ir.Retry{Attempts: uint32(r.Attempts), RetryPreviousHosts: true}
	if r.RetryIgnorePreviousHosts != nil {
		out.RetryPreviousHosts = r.RetryIgnorePreviousHosts.Value
	}
	if !checkDuration(errs, field+".perTryTimeout", r.PerTryTimeout) || !checkDuration(errs, field+".backoff", positive(r.Backoff)) {
		return nil, false
	}
	if r.PerTryTimeout != nil {
		out.PerTryTimeout = &metav1.Duration{Duration: r.PerTryTimeout.AsDuration()}
	}
	if r.Backoff != nil {
		out.Backoff = &metav1.Duration{Duration: r.Backoff.AsDuration()}
	}
	if strings.TrimSpace(r.RetryOn) == "" {
		out.RetryOn = append([]string(nil), defaultRetry.RetryOn...)
		return out, true
	}
	for _, c := range strings.Split(r.RetryOn, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if code, err := strconv.Atoi(c); err == nil {
			if code < 100 || code > 599 {
				errs.invalid(field+".retryOn", "status code %d in retryOn is not an HTTP status; this rule is ignored", code)
				return nil, false
			}
			out.RetriableStatusCodes = append(out.RetriableStatusCodes, uint32(code))
			continue
		}
		if !retryOnConditions[c] {
			errs.invalid(field+".retryOn", "unknown retry condition %q; this rule is ignored", c)
			return nil, false
		}
		if !contains(out.RetryOn, c) {
			out.RetryOn = append(out.RetryOn, c)
		}
	}
	if len(out.RetriableStatusCodes) > 0 && !contains(out.RetryOn, "retriable-status-codes") {
		out.RetryOn = append(out.RetryOn, "retriable-status-codes")
	}
	return out, true
}

func percentOf(p *networkingapi.Percent, legacy int32, def float64) float64 {
	if p != nil {
		return p.Value
	}
	if legacy > 0 {
		return float64(legacy)
	}
	return def
}

func (b *builder) convertMirrors(errs vsErrors, field string, info *vsInfo, h *networkingapi.HTTPRoute, rule *httpRule) ([]ir.Mirror, bool) {
	var out []ir.Mirror
	if h.Mirror != nil {
		pct := 100.0
		if h.MirrorPercentage != nil {
			pct = h.MirrorPercentage.Value
		} else if h.MirrorPercent != nil {
			pct = float64(h.MirrorPercent.Value)
		}
		ck := b.resolveDestination(errs, field+".mirror", info, h.Mirror)
		rule.clusters = append(rule.clusters, ck)
		out = append(out, ir.Mirror{Cluster: ck.name(), Percent: pct})
	}
	for j, m := range h.Mirrors {
		if m.Destination == nil {
			errs.invalid(fmt.Sprintf("%s.mirrors[%d].destination", field, j), "destination is required; this rule is ignored")
			return nil, false
		}
		ck := b.resolveDestination(errs, fmt.Sprintf("%s.mirrors[%d].destination", field, j), info, m.Destination)
		rule.clusters = append(rule.clusters, ck)
		out = append(out, ir.Mirror{Cluster: ck.name(), Percent: percentOf(m.Percentage, 0, 100)})
	}
	for _, m := range out {
		if m.Percent < 0 || m.Percent > 100 {
			errs.invalid(field+".mirrorPercentage", "percentage %v is outside [0, 100]; this rule is ignored", m.Percent)
			return nil, false
		}
	}
	return out, true
}

// gRPC status codes by name, for fault.abort.grpcStatus.
var grpcCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
	"ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
	"OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

func convertFault(errs vsErrors, field string, f *networkingapi.HTTPFaultInjection) (*ir.Fault, bool) {
	out := &ir.Fault{}
	if d := f.Delay; d != nil {
		fixed := d.GetFixedDelay()
		if fixed == nil {
			errs.invalid(field+".delay", "fixedDelay is required (exponentialDelay is not supported); this rule is ignored")
			return nil, false
		}
		if !checkDuration(errs, field+".delay.fixedDelay", positive(fixed)) {
			return nil, false
		}
		out.Delay = &ir.FaultDelay{Fixed: metav1.Duration{Duration: fixed.AsDuration()}, Percent: percentOf(d.Percentage, d.Percent, 100)}
	}
	if a := f.Abort; a != nil {
		fa := &ir.FaultAbort{Percent: percentOf(a.Percentage, 0, 100)}
		switch e := a.ErrorType.(type) {
		case *networkingapi.HTTPFaultInjection_Abort_HttpStatus:
			if e.HttpStatus < 200 || e.HttpStatus > 599 {
				errs.invalid(field+".abort.httpStatus", "httpStatus %d is not an HTTP status (200-599); this rule is ignored", e.HttpStatus)
				return nil, false
			}
			fa.HTTPStatus = uint32(e.HttpStatus)
		case *networkingapi.HTTPFaultInjection_Abort_GrpcStatus:
			code, ok := grpcCodes[strings.ToUpper(e.GrpcStatus)]
			if !ok {
				errs.invalid(field+".abort.grpcStatus", "unknown gRPC status %q; this rule is ignored", e.GrpcStatus)
				return nil, false
			}
			fa.GRPCStatus = code
		default:
			errs.invalid(field+".abort", "httpStatus or grpcStatus is required; this rule is ignored")
			return nil, false
		}
		out.Abort = fa
	}
	for _, p := range []float64{pctOr(out.Delay), pctOrAbort(out.Abort)} {
		if p < 0 || p > 100 || math.IsNaN(p) {
			errs.invalid(field, "percentage %v is outside [0, 100]; this rule is ignored", p)
			return nil, false
		}
	}
	return out, true
}

func pctOr(d *ir.FaultDelay) float64 {
	if d == nil {
		return 0
	}
	return d.Percent
}

func pctOrAbort(a *ir.FaultAbort) float64 {
	if a == nil {
		return 0
	}
	return a.Percent
}

func convertCORS(errs vsErrors, field string, c *networkingapi.CorsPolicy) (*ir.CORS, bool) {
	out := &ir.CORS{
		AllowMethods:               c.AllowMethods,
		AllowHeaders:               c.AllowHeaders,
		ExposeHeaders:              c.ExposeHeaders,
		ForwardUnmatchedPreflights: c.UnmatchedPreflights != networkingapi.CorsPolicy_IGNORE,
	}
	for _, o := range c.AllowOrigin {
		out.AllowOrigins = append(out.AllowOrigins, ir.StringMatch{Type: ir.MatchExact, Value: o})
	}
	for j, o := range c.AllowOrigins {
		sm, ok := stringMatch(errs, fmt.Sprintf("%s.allowOrigins[%d]", field, j), o, false)
		if !ok {
			return nil, false
		}
		out.AllowOrigins = append(out.AllowOrigins, sm)
	}
	if c.MaxAge != nil {
		out.MaxAge = &metav1.Duration{Duration: c.MaxAge.AsDuration()}
	}
	if c.AllowCredentials != nil {
		out.AllowCredentials = c.AllowCredentials.Value
	}
	return out, true
}

func (b *builder) convertL4Rule(info *vsInfo, errs vsErrors, field string, index int, matches []*networkingapi.TLSMatchAttributes, routes []*networkingapi.RouteDestination, tls bool) *l4Rule {
	rule := &l4Rule{index: index, field: field}
	for j, m := range matches {
		lm := l4Match{port: m.Port, gateways: b.matchGateways(m.Gateways, info.obj.Namespace)}
		if tls {
			if len(m.SniHosts) == 0 {
				errs.invalid(fmt.Sprintf("%s.match[%d].sniHosts", field, j), "sniHosts is required; this rule is ignored")
				return nil
			}
			for k, h := range m.SniHosts {
				host := fqdn(h, info.obj.Namespace, b.opts.DomainSuffix)
				covered := false
				for _, vh := range info.hosts {
					if hostCovers(vh, host) {
						covered = true
					}
				}
				if !covered {
					errs.invalid(fmt.Sprintf("%s.match[%d].sniHosts[%d]", field, j, k), "SNI host %q is not one of the VirtualService's hosts; this rule is ignored", h)
					return nil
				}
				lm.sniHosts = append(lm.sniHosts, host)
			}
		}
		rule.matches = append(rule.matches, lm)
	}
	if tls && len(rule.matches) == 0 {
		errs.invalid(field+".match", "a tls rule needs a match with sniHosts; this rule is ignored")
		return nil
	}
	if len(rule.matches) == 0 {
		rule.matches = []l4Match{{}}
	}
	if len(routes) == 0 {
		errs.invalid(field+".route", "at least one route is required; this rule is ignored")
		return nil
	}
	total := int32(0)
	for _, r := range routes {
		total += r.Weight
	}
	for j, r := range routes {
		if r.Destination == nil {
			errs.invalid(fmt.Sprintf("%s.route[%d].destination", field, j), "destination is required; this rule is ignored")
			return nil
		}
		w := uint32(r.Weight)
		if total == 0 {
			w = uint32(100 / len(routes))
			if j == 0 {
				w += uint32(100 % len(routes))
			}
		} else if r.Weight == 0 {
			continue
		}
		ck := b.resolveDestination(errs, fmt.Sprintf("%s.route[%d].destination", field, j), info, r.Destination)
		rule.keys = append(rule.keys, ck)
		rule.clusters = append(rule.clusters, ir.WeightedCluster{Name: ck.name(), Weight: w})
	}
	return rule
}
