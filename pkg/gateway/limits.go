package gateway

//lint:file-ignore SA1019 Istio still accepts its deprecated fields (minimumRingSize, LEAST_CONN, consecutiveErrors, mirrorPercent, percent, allowOrigin), and so must a gateway that takes the same YAML.

import (
	"fmt"
	"regexp/syntax"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// Envoy's validation rules (protoc-gen-validate annotations on its API)
// for the fields Istio resources turn into. A resource that would break
// one is not used at all, and its status names the field and the rule:
// the proxies would reject the whole configuration otherwise, for
// everybody. These are the common cases, caught here with the Istio
// field's name; anything else Envoy rejects is caught when the snapshot
// is validated, and the resources it came from are excluded then (see
// Options.Exclude).
const (
	// maxHeaderBytes is HeaderValue.key/value's and HeaderMatcher.name's
	// max_bytes.
	maxHeaderBytes = 16384
	// maxHeaderOps is the max_items of the lists of headers to add and
	// to remove.
	maxHeaderOps = 1000
	// maxQueryParamNameBytes is QueryParameterMatcher.name's max_bytes.
	maxQueryParamNameBytes = 1024
	// maxSNIBytes is UpstreamTlsContext.sni's max_bytes.
	maxSNIBytes = 255
	// maxRingSize is RingHashLbConfig.minimum_ring_size's lte.
	maxRingSize = 8388608
	// maxMaglevTableSize is MaglevLbConfig.table_size's lte.
	maxMaglevTableSize = 5000011
	// maxRegexProgramSize is the RE2 program size Istio's proxies accept
	// (runtime re2.max_program_size.error_level, 32768 in Istio's
	// bootstrap); Portico measures it with Go's RE2 compiler, which
	// counts much like RE2.
	maxRegexProgramSize = 32768
)

// limitError is a field that breaks one of Envoy's rules.
type limitError struct {
	field, rule string
}

// fieldPath is the path of an Istio field, built only when a check fails:
// checking a valid resource (the common case, for every resource of every
// build) formats nothing and allocates nothing.
type fieldPath struct {
	parent *fieldPath
	name   string // ".headers", "spec.http"
	index  int    // [index] when key is not set and index >= 0
	key    string // [key]
	keyed  bool
}

func (p *fieldPath) String() string {
	if p == nil {
		return ""
	}
	s := p.parent.String() + p.name
	switch {
	case p.keyed:
		s += "[" + clip(p.key) + "]"
	case p.index >= 0:
		s += fmt.Sprintf("[%d]", p.index)
	}
	return s
}

func field(parent *fieldPath, name string) fieldPath {
	return fieldPath{parent: parent, name: name, index: -1}
}
func indexed(parent *fieldPath, name string, i int) fieldPath {
	return fieldPath{parent: parent, name: name, index: i}
}
func keyed(parent *fieldPath, name, key string) fieldPath {
	return fieldPath{parent: parent, name: name, key: key, keyed: true}
}

// limitChecker checks a resource. Quick mode (report false) only finds out
// whether something fails, visiting maps in any order; report mode lists
// every failure, visiting map keys sorted so that messages are stable.
type limitChecker struct {
	report bool
	failed bool
	errs   []limitError
}

func (c *limitChecker) fail(f *fieldPath, format string, args ...any) {
	c.failed = true
	if c.report {
		c.errs = append(c.errs, limitError{field: f.String(), rule: fmt.Sprintf(format, args...)})
	}
}

// eachKey calls f for every entry of m: in key order when reporting.
func eachKey[V any](c *limitChecker, m map[string]V, f func(string, V)) {
	if c.report {
		for _, k := range sortedKeys(m) {
			f(k, m[k])
		}
		return
	}
	for k, v := range m {
		f(k, v)
	}
}

// headerName checks a header name as Envoy's HeaderValue.key and
// HeaderMatcher.name: 1 to 16384 bytes, no NUL, CR or LF.
func (c *limitChecker) headerName(f *fieldPath, name string) {
	switch {
	case name == "":
		c.fail(f, "a header name must not be empty (Envoy: HeaderValue.key min_len 1)")
	case len(name) > maxHeaderBytes:
		c.fail(f, "header name is %d bytes; Envoy accepts at most %d (HeaderValue.key max_bytes)", len(name), maxHeaderBytes)
	case strings.ContainsAny(name, "\x00\r\n"):
		c.fail(f, "header name %q contains NUL, CR or LF, which Envoy rejects (HeaderValue.key well_known_regex HTTP_HEADER_NAME)", clip(name))
	}
}

// headerValue checks a string Envoy takes as a header value (header
// values, redirect and rewrite targets): at most 16384 bytes, no NUL, CR
// or LF.
func (c *limitChecker) headerValue(f *fieldPath, value, envoyField string) {
	switch {
	case len(value) > maxHeaderBytes:
		c.fail(f, "value is %d bytes; Envoy accepts at most %d (%s max_bytes)", len(value), maxHeaderBytes, envoyField)
	case strings.ContainsAny(value, "\x00\r\n"):
		c.fail(f, "value %q contains NUL, CR or LF, which Envoy rejects (%s well_known_regex HTTP_HEADER_VALUE)", clip(value), envoyField)
	}
}

// headers checks header operations as Envoy's route (or, with
// destination set, weighted cluster) request/response_headers_to_add and
// _to_remove.
func (c *limitChecker) headers(parent *fieldPath, h *networkingapi.Headers, destination bool) {
	if h == nil {
		return
	}
	hf := field(parent, ".headers")
	for _, side := range []struct {
		name string
		ops  *networkingapi.Headers_HeaderOperations
	}{{"request", h.Request}, {"response", h.Response}} {
		if side.ops == nil {
			continue
		}
		sf := field(&hf, "."+side.name)
		for _, op := range []struct {
			name string
			m    map[string]string
		}{{".set", side.ops.Set}, {".add", side.ops.Add}} {
			eachKey(c, op.m, func(k, v string) {
				kf := keyed(&sf, op.name, k)
				c.headerName(&kf, k)
				c.headerValue(&kf, v, "HeaderValue.value")
			})
		}
		if n := len(side.ops.Set) + len(side.ops.Add); n > maxHeaderOps {
			c.fail(&sf, "%d headers to set and add; Envoy accepts at most %d (%s_headers_to_add max_items)", n, maxHeaderOps, side.name)
		}
		if n := len(side.ops.Remove); n > maxHeaderOps {
			rf := field(&sf, ".remove")
			c.fail(&rf, "%d headers to remove; Envoy accepts at most %d (%s_headers_to_remove max_items)", n, maxHeaderOps, side.name)
		}
		for i, k := range side.ops.Remove {
			switch {
			case k == "" && !destination:
				kf := indexed(&sf, ".remove", i)
				c.fail(&kf, "a header name must not be empty (Envoy: %s_headers_to_remove min_len 1)", side.name)
			case strings.ContainsAny(k, "\x00\r\n"):
				kf := indexed(&sf, ".remove", i)
				c.fail(&kf, "header name %q contains NUL, CR or LF, which Envoy rejects (%s_headers_to_remove well_known_regex HTTP_HEADER_NAME)", clip(k), side.name)
			}
		}
	}
}

// regex checks an RE2 expression's program size. Invalid expressions are
// reported where they are converted.
func (c *limitChecker) regex(f *fieldPath, expr string) {
	if expr == "" {
		c.fail(f, "a regular expression must not be empty (Envoy: RegexMatcher.regex min_len 1)")
		return
	}
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return
	}
	if n := len(prog.Inst); n > maxRegexProgramSize {
		c.fail(f, "regular expression program size is %d; Envoy accepts at most %d (re2.max_program_size.error_level)", n, maxRegexProgramSize)
	}
}

// stringMatch checks an Istio StringMatch as Envoy's StringMatcher:
// prefixes and regexes must not be empty.
func (c *limitChecker) stringMatch(f *fieldPath, sm *networkingapi.StringMatch) {
	switch m := sm.GetMatchType().(type) {
	case *networkingapi.StringMatch_Prefix:
		if m.Prefix == "" {
			pf := field(f, ".prefix")
			c.fail(&pf, "a prefix match must not be empty (Envoy: StringMatcher.prefix min_len 1)")
		}
	case *networkingapi.StringMatch_Regex:
		rf := field(f, ".regex")
		c.regex(&rf, m.Regex)
	}
}

func (c *limitChecker) positive(f *fieldPath, d *durationpb.Duration, envoyField string) {
	if d != nil && d.AsDuration() <= 0 {
		c.fail(f, "duration %s must be positive (Envoy: %s gt 0s)", d.AsDuration(), envoyField)
	}
}

func (c *limitChecker) virtualService(vs *networking.VirtualService) {
	for i, h := range vs.Spec.Http {
		rf := indexed(nil, "spec.http", i)
		c.headers(&rf, h.Headers, false)
		for j, d := range h.Route {
			df := indexed(&rf, ".route", j)
			c.headers(&df, d.Headers, true)
		}
		for j, m := range h.Match {
			mf := indexed(&rf, ".match", j)
			if m.Uri != nil {
				if re, ok := m.Uri.MatchType.(*networkingapi.StringMatch_Regex); ok {
					uf := field(&mf, ".uri.regex")
					c.regex(&uf, re.Regex)
				}
			}
			for _, p := range []struct {
				name string
				sm   *networkingapi.StringMatch
			}{{".method", m.Method}, {".authority", m.Authority}, {".scheme", m.Scheme}} {
				if p.sm != nil {
					pf := field(&mf, p.name)
					c.stringMatch(&pf, p.sm)
				}
			}
			for _, hm := range []struct {
				name string
				m    map[string]*networkingapi.StringMatch
			}{{".headers", m.Headers}, {".withoutHeaders", m.WithoutHeaders}} {
				eachKey(c, hm.m, func(k string, sm *networkingapi.StringMatch) {
					kf := keyed(&mf, hm.name, k)
					c.headerName(&kf, k)
					c.stringMatch(&kf, sm)
				})
			}
			eachKey(c, m.QueryParams, func(k string, sm *networkingapi.StringMatch) {
				kf := keyed(&mf, ".queryParams", k)
				switch {
				case k == "":
					c.fail(&kf, "a query parameter name must not be empty (Envoy: QueryParameterMatcher.name min_len 1)")
				case len(k) > maxQueryParamNameBytes:
					c.fail(&kf, "query parameter name is %d bytes; Envoy accepts at most %d (QueryParameterMatcher.name max_bytes)", len(k), maxQueryParamNameBytes)
				}
				c.stringMatch(&kf, sm)
			})
		}
		if r := h.Redirect; r != nil {
			uf, af := field(&rf, ".redirect.uri"), field(&rf, ".redirect.authority")
			c.headerValue(&uf, r.Uri, "RedirectAction.path_redirect")
			c.headerValue(&af, r.Authority, "RedirectAction.host_redirect")
		}
		if r := h.Rewrite; r != nil {
			uf, af := field(&rf, ".rewrite.uri"), field(&rf, ".rewrite.authority")
			c.headerValue(&uf, r.Uri, "RouteAction.prefix_rewrite")
			c.headerValue(&af, r.Authority, "RouteAction.host_rewrite_literal")
			if rr := r.UriRegexRewrite; rr != nil {
				mf, sf := field(&rf, ".rewrite.uriRegexRewrite.match"), field(&rf, ".rewrite.uriRegexRewrite.rewrite")
				c.regex(&mf, rr.Match)
				c.headerValue(&sf, rr.Rewrite, "RegexMatchAndSubstitute.substitution")
			}
		}
		if r := h.Retries; r != nil && r.Attempts > 0 {
			bf := field(&rf, ".retries.backoff")
			c.positive(&bf, r.Backoff, "RetryBackOff.base_interval")
		}
		if f := h.Fault; f != nil && f.Delay != nil {
			df := field(&rf, ".fault.delay.fixedDelay")
			c.positive(&df, f.Delay.GetFixedDelay(), "FaultDelay.fixed_delay")
		}
		if cp := h.CorsPolicy; cp != nil {
			for j, o := range cp.AllowOrigins {
				of := indexed(&rf, ".corsPolicy.allowOrigins", j)
				c.stringMatch(&of, o)
			}
		}
	}
}

func (c *limitChecker) trafficPolicy(f *fieldPath, tp *networkingapi.TrafficPolicy) {
	if tp == nil {
		return
	}
	c.policySections(f, tp.LoadBalancer, tp.ConnectionPool, tp.OutlierDetection, tp.Tls)
	for i, pl := range tp.PortLevelSettings {
		pf := indexed(f, ".portLevelSettings", i)
		c.policySections(&pf, pl.LoadBalancer, pl.ConnectionPool, pl.OutlierDetection, pl.Tls)
	}
}

func (c *limitChecker) policySections(f *fieldPath, lb *networkingapi.LoadBalancerSettings, pool *networkingapi.ConnectionPoolSettings,
	od *networkingapi.OutlierDetection, tls *networkingapi.ClientTLSSettings) {
	if ch := lb.GetConsistentHash(); ch != nil {
		hf := field(f, ".loadBalancer.consistentHash")
		switch k := ch.HashKey.(type) {
		case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
			nf := field(&hf, ".httpHeaderName")
			c.headerName(&nf, k.HttpHeaderName)
		case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
			if k.HttpCookie.GetName() == "" {
				nf := field(&hf, ".httpCookie.name")
				c.fail(&nf, "a cookie name must not be empty (Envoy: HashPolicy.Cookie.name min_len 1)")
			}
		case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
			if k.HttpQueryParameterName == "" {
				nf := field(&hf, ".httpQueryParameterName")
				c.fail(&nf, "a query parameter name must not be empty (Envoy: HashPolicy.QueryParameter.name min_len 1)")
			}
		}
		// The deprecated field is still honoured (applyPolicy reads it),
		// so it is checked too.
		if legacy := ch.MinimumRingSize; legacy > maxRingSize {
			nf := field(&hf, ".minimumRingSize")
			c.fail(&nf, "%d is above %d, Envoy's maximum (RingHashLbConfig.minimum_ring_size lte)", legacy, maxRingSize)
		}
		switch a := ch.HashAlgorithm.(type) {
		case *networkingapi.LoadBalancerSettings_ConsistentHashLB_RingHash_:
			if a.RingHash.GetMinimumRingSize() > maxRingSize {
				nf := field(&hf, ".ringHash.minimumRingSize")
				c.fail(&nf, "%d is above %d, Envoy's maximum (RingHashLbConfig.minimum_ring_size lte)", a.RingHash.GetMinimumRingSize(), maxRingSize)
			}
		case *networkingapi.LoadBalancerSettings_ConsistentHashLB_Maglev:
			if a.Maglev.GetTableSize() > maxMaglevTableSize {
				nf := field(&hf, ".maglev.tableSize")
				c.fail(&nf, "%d is above %d, Envoy's maximum (MaglevLbConfig.table_size lte)", a.Maglev.GetTableSize(), maxMaglevTableSize)
			}
		}
	}
	if t := pool.GetTcp(); t != nil {
		tf := field(f, ".connectionPool.tcp.connectTimeout")
		c.positive(&tf, t.ConnectTimeout, "Cluster.connect_timeout")
	}
	if od != nil {
		inf, bf := field(f, ".outlierDetection.interval"), field(f, ".outlierDetection.baseEjectionTime")
		c.positive(&inf, od.Interval, "OutlierDetection.interval")
		c.positive(&bf, od.BaseEjectionTime, "OutlierDetection.base_ejection_time")
	}
	if tls != nil && len(tls.Sni) > maxSNIBytes {
		sf := field(f, ".tls.sni")
		c.fail(&sf, "SNI is %d bytes; Envoy accepts at most %d (UpstreamTlsContext.sni max_bytes)", len(tls.Sni), maxSNIBytes)
	}
}

func (c *limitChecker) destinationRule(dr *networking.DestinationRule) {
	tf := field(nil, "spec.trafficPolicy")
	c.trafficPolicy(&tf, dr.Spec.TrafficPolicy)
	for i, s := range dr.Spec.Subsets {
		sf := indexed(nil, "spec.subsets", i)
		pf := field(&sf, ".trafficPolicy")
		c.trafficPolicy(&pf, s.GetTrafficPolicy())
	}
}

func (c *limitChecker) check(obj resource.Object) {
	switch o := obj.(type) {
	case *networking.VirtualService:
		c.virtualService(o)
	case *networking.DestinationRule:
		c.destinationRule(o)
	}
}

// envoyLimits checks a resource against Envoy's validation rules for what
// it would be translated into, returning the status message that rejects
// it, or nil. A quick pass finds out whether anything fails; only then is
// the resource checked again to say what.
func envoyLimits(obj resource.Object) *status.Message {
	quick := limitChecker{}
	quick.check(obj)
	if !quick.failed {
		return nil
	}
	c := limitChecker{report: true}
	c.check(obj)
	first := c.errs[0]
	msg := first.rule
	if n := len(c.errs) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more: %s)", n, moreFields(c.errs[1:]))
	}
	return &status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: first.field,
		Message: fmt.Sprintf("%s; Envoy would reject the configuration made from it, so this %s is not used", msg, resource.KindOf(obj))}
}

func moreFields(errs []limitError) string {
	var fields []string
	for i, e := range errs {
		if i == 3 {
			fields = append(fields, "…")
			break
		}
		fields = append(fields, e.field)
	}
	return strings.Join(fields, ", ")
}

// clip shortens a user string for a message: a status must not carry a
// 16 KB header back.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + fmt.Sprintf("…(%d bytes)", len(s))
}

// limitsMemo carries envoyLimits' verdicts between builds, per list
// (VirtualServices, DestinationRules), by position (see byPosition): a
// map lookup and insert per object per build were 7 ms a change at
// 10,000 of each kind.
type limitsMemo struct {
	prev, next map[string]*limitsList // by kind
	spare      map[string]*limitsList // the build before the last's, to refill
	// kind, kindPrev and kindNext are the lists check used last: a list
	// is checked object after object, and looking its kind up in prev and
	// next for each was two map lookups per object.
	kind               string
	kindPrev, kindNext *limitsList
}

// limitsList is one list's verdicts (nil for none), by position; a
// position whose object was not checked holds nothing.
type limitsList = byPosition[*status.Message]

// list returns kind's list of the next build, sized n.
func (m *limitsMemo) list(kind string, n int) *limitsList {
	l := m.next[kind]
	if l != nil {
		return l
	}
	l = m.spare[kind]
	if l == nil {
		l = &limitsList{}
	}
	l.reset(n)
	m.next[kind] = l
	return l
}

// resizedTo returns s with length n and every element zero, reusing its
// array when it is large enough.
func resizedTo[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// check returns the verdict on obj, at index i of its list of n.
func (m *limitsMemo) check(kind string, i, n int, obj resource.Object, id objectID) *status.Message {
	if m.kindNext == nil || m.kind != kind || len(m.kindNext.ids) != n {
		m.kind, m.kindPrev, m.kindNext = kind, m.prev[kind], m.list(kind, n)
	}
	name := objectName{obj.GetNamespace(), obj.GetName()}
	msg, found := (*status.Message)(nil), false
	if m.kindPrev != nil {
		msg, found = m.kindPrev.find(i, id, name)
	}
	if !found {
		msg = envoyLimits(obj)
	}
	m.kindNext.set(i, id, name, msg)
	return msg
}

// exclusion is a resource left out of a build.
type exclusion struct {
	key        resource.Key
	generation int64
	msg        status.Message
}

// withoutExcluded returns res without the resources listed in exclude and
// those breaking Envoy's limits, and what it left out. Lists with nothing
// to leave out are shared, not copied, so that identical inputs still
// look identical to the registry's reuse.
func withoutExcluded(res *resource.Resources, exclude map[resource.Key]status.Message, limits *limitsMemo) (*resource.Resources, []exclusion) {
	var out []exclusion
	listed := func(obj resource.Object) bool {
		if len(exclude) == 0 {
			return false
		}
		key := resource.KeyOf(obj)
		m, ok := exclude[key]
		if ok {
			out = append(out, exclusion{key: key, generation: obj.GetGeneration(), msg: m})
		}
		return ok
	}
	listedOrInvalid := func(i, n int, obj resource.Object, id objectID) bool {
		if listed(obj) {
			return true
		}
		if limits == nil {
			return false
		}
		if m := limits.check(resource.KindOf(obj), i, n, obj, id); m != nil {
			out = append(out, exclusion{key: resource.KeyOf(obj), generation: obj.GetGeneration(), msg: *m})
			return true
		}
		return false
	}
	cp := *res
	cp.VirtualServices = filterObjects(res.VirtualServices, listedOrInvalid)
	cp.DestinationRules = filterObjects(res.DestinationRules, listedOrInvalid)
	if len(exclude) > 0 {
		byKey := func(_, _ int, obj resource.Object, _ objectID) bool { return listed(obj) }
		cp.Gateways = filterObjects(res.Gateways, byKey)
		cp.ServiceEntries = filterObjects(res.ServiceEntries, byKey)
		cp.Services = filterObjects(res.Services, byKey)
		cp.Secrets = filterObjects(res.Secrets, byKey)
	}
	return &cp, out
}

// filterObjects drops the objects drop says to, copying the list only if
// one is dropped.
func filterObjects[T any, P interface {
	*T
	resource.Object
}](list []P, drop func(i, n int, obj resource.Object, id objectID) bool) []P {
	for i, o := range list {
		if !drop(i, len(list), o, idOf(o)) {
			continue
		}
		out := append(make([]P, 0, len(list)-1), list[:i]...)
		for j, o := range list[i+1:] {
			if !drop(i+1+j, len(list), o, idOf(o)) {
				out = append(out, o)
			}
		}
		return out
	}
	return list
}
