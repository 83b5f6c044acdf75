package gateway

// Istio's per-VirtualService analyses, with its codes, levels and
// semantics (istio.io/istio pkg/config/validation: validateGatewayNames,
// analyzeUnreachable{HTTP,TCP,TLS}Rules, agent.ValidateDuration), so that
// `portico analyze` and `istioctl analyze` agree on the same YAML.

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	networkingapi "istio.io/api/networking/v1alpha3"

	"github.com/portico-gateway/portico/pkg/status"
)

// istioVirtualServiceAnalyses runs Istio's analyses of a VirtualService's
// own spec (not of what it binds to). Only for Istio objects: Gateway API
// routes converted to VirtualServices have their own rules.
func (b *builder) istioVirtualServiceAnalyses(errs vsErrors, spec *networkingapi.VirtualService) {
	legacyGatewayNames(errs, "spec.gateways", spec.Gateways)
	for i, h := range spec.Http {
		for j, m := range h.GetMatch() {
			legacyGatewayNames(errs, fmt.Sprintf("spec.http[%d].match[%d].gateways", i, j), m.GetGateways())
		}
	}
	for i, t := range spec.Tls {
		for j, m := range t.GetMatch() {
			legacyGatewayNames(errs, fmt.Sprintf("spec.tls[%d].match[%d].gateways", i, j), m.GetGateways())
		}
	}
	for i, t := range spec.Tcp {
		for j, m := range t.GetMatch() {
			legacyGatewayNames(errs, fmt.Sprintf("spec.tcp[%d].match[%d].gateways", i, j), m.GetGateways())
		}
	}
	unreachableRules(errs, spec)
}

// legacyGatewayNames warns (IST0133) about the legacy "name.namespace[.svc.
// cluster.local]" spelling of a gateway reference. Portico binds it as
// Istio does; Istio warns because the <namespace>/<name> form is the one
// that cannot be misread.
func legacyGatewayNames(errs vsErrors, field string, names []string) {
	for i, g := range names {
		if g == "mesh" || strings.Contains(g, "/") || !strings.Contains(g, ".") {
			continue
		}
		parts := strings.Split(g, ".")
		errs.add(status.Warning, status.SchemaWarning, status.ReasonInvalidSpec, fmt.Sprintf("%s[%d]", field, i),
			"using legacy gatewayName format %q; prefer the <namespace>/<name> format: %q", g, parts[1]+"/"+parts[0])
	}
}

// checkDuration applies Istio's rule for VirtualService durations
// (agent.ValidateDuration): at least 1ms, in whole milliseconds. A 0s
// timeout is not "no timeout" in Istio's API: it is rejected.
func checkDuration(errs vsErrors, field string, d *durationpb.Duration) bool {
	if d == nil || errs.b.synthetic(errs.key) {
		return true // Gateway API timeouts have their own rules (0s: none)
	}
	v := d.AsDuration()
	switch {
	case v < time.Millisecond:
		errs.invalid(field, "%s %s: duration must be greater than 1ms; this rule is ignored", lastField(field), v)
		return false
	case v%time.Millisecond != 0:
		errs.invalid(field, "%s %s: only durations to ms precision are supported; this rule is ignored", lastField(field), v)
		return false
	}
	return true
}

// positive returns d if it is above zero, else nil: Envoy itself refuses
// a zero or negative backoff or fault delay, and envoyLimits leaves such a
// VirtualService out whole before binding (IST0106 naming the field, as
// Istio's validation rejects it whole), so only the 1ms/precision rule
// remains to check here.
func positive(d *durationpb.Duration) *durationpb.Duration {
	if d == nil || d.AsDuration() <= 0 {
		return nil
	}
	return d
}

func lastField(field string) string {
	if i := strings.LastIndexByte(field, '.'); i >= 0 {
		return field[i+1:]
	}
	return field
}

// unreachableRules reports rules (IST0130, Warning) and matches (IST0131,
// Info) of one VirtualService that can never be used because an earlier
// rule of the same VirtualService takes their requests: exactly Istio's
// analysis, which compares matches literally (minus their names) and
// prefix matches by coverage. Shadowing across VirtualServices is
// reported separately, where routes are merged (bind.go).
func unreachableRules(errs vsErrors, spec *networkingapi.VirtualService) {
	unused := func(section string) func(rule, reason string) {
		return func(rule, reason string) {
			errs.add(status.Warning, status.VirtualServiceUnreachableRule, status.ReasonConflictingServer, "spec."+section,
				"VirtualService rule %s not used (%s).", rule, reason)
		}
	}
	ineffective := func(section string) func(rule, match, dup string) {
		return func(rule, match, dup string) {
			errs.add(status.Info, status.VirtualServiceIneffectiveMatch, status.ReasonConflictingServer, "spec."+section,
				"VirtualService rule %s match %s is not used (duplicate/overlapping match in rule %s).", rule, match, dup)
		}
	}
	httpRules := make([]ruleMatches, len(spec.Http))
	for i, h := range spec.Http {
		if h == nil {
			continue
		}
		r := ruleMatches{present: true, name: ruleName(h.Name, i)}
		for j, m := range h.Match {
			r.matches = append(r.matches, matchKey{key: httpMatchOf(m), name: ruleName(m.GetName(), j)})
		}
		httpRules[i] = r
	}
	prefixes := unreachable(httpRules, unused("http"), ineffective("http"), spec.Http)
	overlappingPrefixes(prefixes, ineffective("http"))

	tcpRules := make([]ruleMatches, len(spec.Tcp))
	for i, t := range spec.Tcp {
		if t == nil {
			continue
		}
		r := ruleMatches{present: true, name: fmt.Sprintf("#%d", i)}
		for j, m := range t.Match {
			r.matches = append(r.matches, matchKey{key: matchOf(m), name: fmt.Sprintf("#%d", j)})
		}
		tcpRules[i] = r
	}
	unreachable(tcpRules, unused("tcp"), ineffective("tcp"), nil)

	tlsRules := make([]ruleMatches, len(spec.Tls))
	for i, t := range spec.Tls {
		if t == nil {
			continue
		}
		r := ruleMatches{present: true, name: fmt.Sprintf("#%d", i)}
		for j, m := range t.Match {
			r.matches = append(r.matches, matchKey{key: matchOf(m), name: fmt.Sprintf("#%d", j)})
		}
		tlsRules[i] = r
	}
	unreachable(tlsRules, unused("tls"), ineffective("tls"), nil)
}

type ruleMatches struct {
	present bool // false for a null entry, which Istio skips
	name    string
	matches []matchKey
}

type matchKey struct {
	key  string // the match's serialisation without its name
	name string
}

// ruleName names a rule or match as Istio's messages do: its quoted name,
// else #index.
func ruleName(name string, i int) string {
	if name != "" {
		return fmt.Sprintf("%q", name)
	}
	return fmt.Sprintf("#%d", i)
}

// matchOf identifies a match by content. Istio's analyzer compares
// matches by their JSON; the deterministic protobuf encoding is equal
// exactly when that is (TestMatchKeyEqualsJSON) and costs a fraction:
// printing every match as JSON was a quarter of binding a cold start.
// A null match stays distinct from an empty one, as in JSON.
func matchOf[M interface {
	proto.Message
	comparable
}](m M) string {
	var none M
	if m == none {
		return "null"
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err.Error()
	}
	return "pb:" + string(b)
}

func httpMatchOf(m *networkingapi.HTTPMatchRequest) string {
	if m != nil && m.Name != "" {
		m = proto.Clone(m).(*networkingapi.HTTPMatchRequest)
		m.Name = ""
	}
	return matchOf(m)
}

// unreachable is Istio's analyzeUnreachable*Rules: a rule after a rule
// without matches is unreachable; a match equal to an earlier one is
// ineffective, and a rule whose matches all are is unreachable. For HTTP
// (http non-nil) it returns the prefix matches seen, for the overlap
// analysis.
func unreachable(rules []ruleMatches, unused func(rule, reason string), ineffective func(rule, match, dup string), http []*networkingapi.HTTPRoute) []*prefixMatch {
	seen := map[string]int{}
	catchAll := -1
	var prefixes []*prefixMatch
	for i, r := range rules {
		if !r.present {
			continue
		}
		if len(r.matches) == 0 {
			if catchAll >= 0 {
				unused(r.name, "only the last rule can have no matches")
			}
			catchAll = i
			continue
		}
		dups := 0
		for j, m := range r.matches {
			if catchAll >= 0 {
				unused(r.name, "route without matches defined before")
				continue
			}
			if d, ok := seen[m.key]; ok {
				ineffective(r.name, m.name, rules[d].name)
				dups++
				continue
			}
			seen[m.key] = i
			if http != nil {
				if p := newPrefixMatch(http[i].Match[j], r.name, m.name); p != nil {
					prefixes = append(prefixes, p)
				}
			}
		}
		if dups == len(r.matches) {
			unused(r.name, "all matches used by prior rules")
		}
	}
	return prefixes
}

// prefixMatch is an HTTP match with a URI prefix, reduced to what Istio's
// overlap analysis compares (istio.io/istio genMatchHTTPRoutes).
type prefixMatch struct {
	rule, match string
	prefix      string
	port        uint32
	method      string
	authority   string
	headers     map[string]string
	query       map[string]string
	noHeaders   map[string]string
}

func exactOrPrefix(m *networkingapi.StringMatch) string {
	if e := m.GetExact(); e != "" {
		return "exact:" + e
	}
	if p := m.GetPrefix(); p != "" {
		return "prefix:" + p
	}
	return ""
}

func stringMatches(in map[string]*networkingapi.StringMatch) map[string]string {
	out := make(map[string]string, len(in))
	for k, v := range in {
		out[k] = exactOrPrefix(v)
	}
	return out
}

func newPrefixMatch(m *networkingapi.HTTPMatchRequest, rule, match string) *prefixMatch {
	prefix := m.GetUri().GetPrefix()
	if prefix == "" {
		return nil
	}
	method := exactOrPrefix(m.Method)
	if method == "" {
		method = "exact:GET" // as Istio assumes
	}
	return &prefixMatch{rule: rule, match: match, prefix: prefix, port: m.Port, method: method, authority: exactOrPrefix(m.Authority),
		headers: stringMatches(m.Headers), query: stringMatches(m.QueryParams), noHeaders: stringMatches(m.WithoutHeaders)}
}

// covers is Istio's coveredValidation: a's prefix is a prefix of b's and
// every other condition of a is equal to or a string prefix of b's.
func (a *prefixMatch) covers(b *prefixMatch) bool {
	if !strings.HasPrefix(b.prefix, a.prefix) || a.port != b.port {
		return false
	}
	if a.method != b.method && !strings.HasPrefix(a.method, b.method) {
		return false
	}
	if a.authority != b.authority && !strings.HasPrefix(a.authority, b.authority) {
		return false
	}
	for _, pair := range [][2]map[string]string{{a.headers, b.headers}, {a.query, b.query}, {a.noHeaders, b.noHeaders}} {
		x, y := pair[0], pair[1]
		if len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || (v != w && !strings.HasPrefix(v, w)) {
				return false
			}
		}
	}
	return true
}

func overlappingPrefixes(ms []*prefixMatch, ineffective func(rule, match, dup string)) {
	for i, a := range ms {
		for _, b := range ms[i+1:] {
			if b.prefix == a.prefix {
				continue // equal matches were reported above
			}
			if a.covers(b) {
				ineffective(b.rule, b.match+" of prefix "+b.prefix, a.match+" of prefix "+a.prefix+" on "+a.rule)
			}
		}
	}
}
