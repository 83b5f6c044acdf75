// Package rbac is Envoy's role-based access control for the edge proxy:
// envoy.filters.http.rbac and envoy.filters.network.rbac. A config.rbac.v3
// RBAC compiles into a tree of matchers (policies of permissions and
// principals) evaluated with Envoy's semantics: a policy matches when any
// of its permissions and any of its principals match; ALLOW denies when no
// policy matches, DENY when one does, LOG never denies.
package rbac

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/router"
)

// Attrs is what a request or connection offers to match on.
type Attrs struct {
	// Req is nil for network (TCP) evaluation.
	Req *httpx.Request
	// Peer is the connection's source; Client the connection manager's
	// trusted client address (x-forwarded-for aware), Peer for TCP.
	Peer, Client netip.Addr
	// Local is the local address with the listener's configured port.
	Local netip.AddrPort
	SNI   string
	Cert  *x509.Certificate
	// Metadata is the request's dynamic metadata.
	Metadata map[string]map[string]any
}

type matcher interface {
	match(a *Attrs) bool
}

type andM []matcher

func (m andM) match(a *Attrs) bool {
	for _, x := range m {
		if !x.match(a) {
			return false
		}
	}
	return true
}

type orM []matcher

func (m orM) match(a *Attrs) bool {
	for _, x := range m {
		if x.match(a) {
			return true
		}
	}
	return false
}

type anyM struct{}

func (anyM) match(*Attrs) bool { return true }

type notM struct{ m matcher }

func (n notM) match(a *Attrs) bool { return !n.m.match(a) }

// headerM matches a request header (or pseudo-header); the HTTP-only
// matchers never match a connection (the network filter refuses them at
// compile time anyway).
type headerM struct {
	name    string
	present bool // present_match
	sm      *router.StringMatcher
	invert  bool
}

func (h *headerM) match(a *Attrs) bool {
	if a.Req == nil {
		return false
	}
	v, ok := a.Req.Pseudo(h.name)
	m := ok
	if ok && h.sm != nil {
		m = h.sm.Match(v)
	}
	return m != h.invert
}

type pathM struct{ sm router.StringMatcher }

func (p *pathM) match(a *Attrs) bool {
	if a.Req == nil {
		return false
	}
	return p.sm.Match(a.Req.Path())
}

type templateM struct{ re *regexp.Regexp }

func (t *templateM) match(a *Attrs) bool {
	if a.Req == nil {
		return false
	}
	return t.re.MatchString(a.Req.Path())
}

type cidrM struct {
	prefixes []netip.Prefix
	which    int // ipLocal, ipPeer, ipClient
}

const (
	ipLocal = iota
	ipPeer
	ipClient
)

func (c *cidrM) match(a *Attrs) bool {
	var ip netip.Addr
	switch c.which {
	case ipLocal:
		ip = a.Local.Addr()
	case ipPeer:
		ip = a.Peer
	default:
		ip = a.Client
	}
	ip = ip.Unmap()
	for _, p := range c.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

type portM uint32

func (p portM) match(a *Attrs) bool { return uint32(a.Local.Port()) == uint32(p) }

type sniM struct{ sm router.StringMatcher }

func (s *sniM) match(a *Attrs) bool { return s.sm.Match(a.SNI) }

// authM is Envoy's authenticated principal: any verified client
// certificate, or one whose URI SANs, else DNS SANs, else subject match.
type authM struct{ sm *router.StringMatcher }

func (m *authM) match(a *Attrs) bool {
	c := a.Cert
	if c == nil {
		return false
	}
	if m.sm == nil {
		return true
	}
	if len(c.URIs) > 0 {
		for _, u := range c.URIs {
			if m.sm.Match(u.String()) {
				return true
			}
		}
	}
	if len(c.DNSNames) > 0 {
		for _, d := range c.DNSNames {
			if m.sm.Match(d) {
				return true
			}
		}
	}
	return m.sm.Match(c.Subject.String())
}

// metaM is a MetadataMatcher over dynamic metadata.
type metaM struct {
	filter string
	path   []string
	value  valueM
	invert bool
}

func (m *metaM) match(a *Attrs) bool {
	var v any
	present := false
	if ns, ok := a.Metadata[m.filter]; ok && len(m.path) > 0 {
		v, present = ns[m.path[0]]
		for _, k := range m.path[1:] {
			if !present {
				break
			}
			obj, ok := v.(map[string]any)
			if !ok {
				present = false
				break
			}
			v, present = obj[k]
		}
	}
	return m.value.match(v, present) != m.invert
}

// valueM is a ValueMatcher over a JSON-like value.
type valueM interface {
	match(v any, present bool) bool
}

type nullV struct{}

func (nullV) match(v any, present bool) bool { return present && v == nil }

type stringV struct{ sm router.StringMatcher }

func (s *stringV) match(v any, present bool) bool {
	str, ok := v.(string)
	return present && ok && s.sm.Match(str)
}

type boolV bool

func (b boolV) match(v any, present bool) bool {
	x, ok := v.(bool)
	return present && ok && x == bool(b)
}

type presentV bool

func (p presentV) match(_ any, present bool) bool { return bool(p) && present }

type doubleV struct {
	exact      *float64
	start, end float64
}

func (d *doubleV) match(v any, present bool) bool {
	f, ok := v.(float64)
	if !present || !ok {
		return false
	}
	if d.exact != nil {
		return f == *d.exact
	}
	return f >= d.start && f < d.end
}

type listV struct{ oneOf valueM }

func (l *listV) match(v any, present bool) bool {
	list, ok := v.([]any)
	if !present || !ok {
		return false
	}
	for _, e := range list {
		if l.oneOf.match(e, true) {
			return true
		}
	}
	return false
}

type orV []valueM

func (o orV) match(v any, present bool) bool {
	for _, m := range o {
		if m.match(v, present) {
			return true
		}
	}
	return false
}

// compiler compiles permissions and principals; network refuses the
// forms that need an HTTP request.
type compiler struct {
	network bool
}

func (c *compiler) httpOnly(what string) error {
	if c.network {
		return fmt.Errorf("%s needs an HTTP request; it is not supported in envoy.filters.network.rbac", what)
	}
	return nil
}

func (c *compiler) permission(p *rbacv3.Permission) (matcher, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_AndRules:
		return c.permissions(r.AndRules.GetRules(), true)
	case *rbacv3.Permission_OrRules:
		return c.permissions(r.OrRules.GetRules(), false)
	case *rbacv3.Permission_Any:
		if !r.Any {
			return nil, fmt.Errorf("any must be true")
		}
		return anyM{}, nil
	case *rbacv3.Permission_Header:
		if err := c.httpOnly("header"); err != nil {
			return nil, err
		}
		return compileHeader(r.Header)
	case *rbacv3.Permission_UrlPath:
		if err := c.httpOnly("url_path"); err != nil {
			return nil, err
		}
		return compilePath(r.UrlPath)
	case *rbacv3.Permission_DestinationIp:
		return compileCIDRs([]*corev3.CidrRange{r.DestinationIp}, ipLocal)
	case *rbacv3.Permission_DestinationPort:
		return portM(r.DestinationPort), nil
	case *rbacv3.Permission_RequestedServerName:
		sm, err := router.CompileStringMatcher(r.RequestedServerName)
		if err != nil {
			return nil, fmt.Errorf("requested_server_name: %w", err)
		}
		return &sniM{sm: sm}, nil
	case *rbacv3.Permission_NotRule:
		m, err := c.permission(r.NotRule)
		if err != nil {
			return nil, err
		}
		return notM{m}, nil
	case *rbacv3.Permission_UriTemplate:
		if err := c.httpOnly("uri_template"); err != nil {
			return nil, err
		}
		cfg := &uritemplatev3.UriTemplateMatchConfig{}
		if err := r.UriTemplate.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			return nil, fmt.Errorf("uri_template: %w", err)
		}
		re, err := compileTemplate(cfg.PathTemplate)
		if err != nil {
			return nil, err
		}
		return &templateM{re: re}, nil
	default:
		return nil, fmt.Errorf("unsupported permission %T", r)
	}
}

func (c *compiler) permissions(ps []*rbacv3.Permission, and bool) (matcher, error) {
	return combine(ps, c.permission, and)
}

// combine compiles a list of permissions or principals into their
// conjunction (and) or disjunction.
func combine[T any](items []T, compile func(T) (matcher, error), and bool) (matcher, error) {
	ms := make([]matcher, 0, len(items))
	for _, it := range items {
		m, err := compile(it)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	if and {
		return andM(ms), nil
	}
	return orM(ms), nil
}

func (c *compiler) principal(p *rbacv3.Principal) (matcher, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_AndIds:
		return c.principals(id.AndIds.GetIds(), true)
	case *rbacv3.Principal_OrIds:
		return c.principals(id.OrIds.GetIds(), false)
	case *rbacv3.Principal_Any:
		if !id.Any {
			return nil, fmt.Errorf("any must be true")
		}
		return anyM{}, nil
	case *rbacv3.Principal_Authenticated_:
		m := &authM{}
		if pn := id.Authenticated.GetPrincipalName(); pn != nil {
			sm, err := router.CompileStringMatcher(pn)
			if err != nil {
				return nil, fmt.Errorf("authenticated: %w", err)
			}
			m.sm = &sm
		}
		return m, nil
	case *rbacv3.Principal_DirectRemoteIp:
		return compileCIDRs([]*corev3.CidrRange{id.DirectRemoteIp}, ipPeer)
	case *rbacv3.Principal_RemoteIp:
		which := ipClient
		if c.network {
			which = ipPeer // no x-forwarded-for on a connection
		}
		return compileCIDRs([]*corev3.CidrRange{id.RemoteIp}, which)
	case *rbacv3.Principal_Header:
		if err := c.httpOnly("header"); err != nil {
			return nil, err
		}
		return compileHeader(id.Header)
	case *rbacv3.Principal_UrlPath:
		if err := c.httpOnly("url_path"); err != nil {
			return nil, err
		}
		return compilePath(id.UrlPath)
	case *rbacv3.Principal_Metadata:
		if err := c.httpOnly("metadata"); err != nil {
			return nil, err
		}
		// Principal.metadata is deprecated for sourced_metadata, but it is
		// the form the contract (and istiod) emits and Envoy still honours.
		//lint:ignore SA1019 see above
		return compileMetadata(id.Metadata)
	case *rbacv3.Principal_NotId:
		m, err := c.principal(id.NotId)
		if err != nil {
			return nil, err
		}
		return notM{m}, nil
	default:
		return nil, fmt.Errorf("unsupported principal %T", id)
	}
}

func (c *compiler) principals(ps []*rbacv3.Principal, and bool) (matcher, error) {
	return combine(ps, c.principal, and)
}

func compileHeader(h *routev3.HeaderMatcher) (matcher, error) {
	m := &headerM{name: strings.ToLower(h.Name), invert: h.InvertMatch}
	if m.name == "" {
		return nil, fmt.Errorf("header matcher needs a name")
	}
	switch s := h.HeaderMatchSpecifier.(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		m.present = true
		if !s.PresentMatch {
			m.invert = !m.invert
		}
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := router.CompileStringMatcher(s.StringMatch)
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", h.Name, err)
		}
		m.sm = &sm
	default:
		return nil, fmt.Errorf("header %s: unsupported matcher %T", h.Name, s)
	}
	return m, nil
}

func compilePath(p *matcherv3.PathMatcher) (matcher, error) {
	sm, err := router.CompileStringMatcher(p.GetPath())
	if err != nil {
		return nil, fmt.Errorf("url_path: %w", err)
	}
	return &pathM{sm: sm}, nil
}

func compileCIDRs(rs []*corev3.CidrRange, which int) (matcher, error) {
	m := &cidrM{which: which}
	for _, r := range rs {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("CIDR range %q: %w", r.GetAddressPrefix(), err)
		}
		bits := a.BitLen()
		if r.PrefixLen != nil {
			bits = int(r.PrefixLen.Value)
		}
		p, err := a.Unmap().Prefix(bits)
		if err != nil {
			return nil, fmt.Errorf("CIDR range %s/%d: %w", r.GetAddressPrefix(), bits, err)
		}
		m.prefixes = append(m.prefixes, p)
	}
	return m, nil
}

func compileMetadata(mm *matcherv3.MetadataMatcher) (matcher, error) {
	m := &metaM{filter: mm.Filter, invert: mm.Invert}
	for _, seg := range mm.Path {
		k := seg.GetKey()
		if k == "" {
			return nil, fmt.Errorf("metadata path segments must be keys")
		}
		m.path = append(m.path, k)
	}
	if len(m.path) == 0 {
		return nil, fmt.Errorf("metadata matcher needs a path")
	}
	v, err := compileValue(mm.Value)
	if err != nil {
		return nil, fmt.Errorf("metadata %s %v: %w", mm.Filter, m.path, err)
	}
	m.value = v
	return m, nil
}

func compileValue(v *matcherv3.ValueMatcher) (valueM, error) {
	switch p := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		return nullV{}, nil
	case *matcherv3.ValueMatcher_DoubleMatch:
		d := &doubleV{}
		switch dm := p.DoubleMatch.GetMatchPattern().(type) {
		case *matcherv3.DoubleMatcher_Exact:
			x := dm.Exact
			d.exact = &x
		case *matcherv3.DoubleMatcher_Range:
			d.start, d.end = dm.Range.GetStart(), dm.Range.GetEnd()
		default:
			return nil, fmt.Errorf("double_match needs exact or range")
		}
		return d, nil
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := router.CompileStringMatcher(p.StringMatch)
		if err != nil {
			return nil, err
		}
		return &stringV{sm: sm}, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		return boolV(p.BoolMatch), nil
	case *matcherv3.ValueMatcher_PresentMatch:
		return presentV(p.PresentMatch), nil
	case *matcherv3.ValueMatcher_ListMatch:
		one, ok := p.ListMatch.GetMatchPattern().(*matcherv3.ListMatcher_OneOf)
		if !ok {
			return nil, fmt.Errorf("list_match needs one_of")
		}
		inner, err := compileValue(one.OneOf)
		if err != nil {
			return nil, err
		}
		return &listV{oneOf: inner}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		var out orV
		for _, vm := range p.OrMatch.GetValueMatchers() {
			m, err := compileValue(vm)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unsupported value matcher %T", p)
	}
}

// Envoy's uri_template operators: "*" one path segment, "**" any number
// of segments (including none).
const (
	segmentChars = `[a-zA-Z0-9\-._~%!$&'()+,;:@=]`
	oneSegment   = segmentChars + `+`
	anySegments  = `[a-zA-Z0-9\-._~%!$&'()+,;:@=/]*`
)

// compileTemplate turns a path template ("/a/*/b/**", or Envoy's variable
// forms "{x}", "{x=*}", "{x=**}") into an anchored regexp.
func compileTemplate(t string) (*regexp.Regexp, error) {
	if !strings.HasPrefix(t, "/") {
		return nil, fmt.Errorf("uri_template %q must start with /", t)
	}
	var b strings.Builder
	b.WriteString("^")
	for _, seg := range strings.Split(t[1:], "/") {
		b.WriteString("/")
		op := seg
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			name, val, hasVal := strings.Cut(seg[1:len(seg)-1], "=")
			if name == "" {
				return nil, fmt.Errorf("uri_template %q: empty variable", t)
			}
			op = "*"
			if hasVal {
				op = val
			}
			if name == "*" || name == "**" { // Istio's {*} and {**}
				op = name
			}
		}
		switch {
		case op == "**":
			b.WriteString(anySegments)
		case op == "*":
			b.WriteString(oneSegment)
		case strings.ContainsAny(op, "{}"):
			return nil, fmt.Errorf("uri_template %q: unsupported segment %q", t, seg)
		default:
			// A literal, possibly with a "*"/"**" glob and literal suffix
			// in the last segment ("/**.m3u8").
			if strings.Contains(op, "*") {
				pre, rest, _ := strings.Cut(op, "*")
				glob := oneSegment
				if strings.HasPrefix(rest, "*") {
					glob, rest = anySegments, rest[1:]
				}
				if strings.Contains(rest, "*") {
					return nil, fmt.Errorf("uri_template %q: unsupported segment %q", t, seg)
				}
				b.WriteString(regexp.QuoteMeta(pre) + glob + regexp.QuoteMeta(rest))
			} else {
				b.WriteString(regexp.QuoteMeta(op))
			}
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// policy is a compiled rbac Policy.
type policy struct {
	name        string
	permissions matcher
	principals  matcher
}

// Engine is a compiled config.rbac.v3.RBAC.
type Engine struct {
	action   rbacv3.RBAC_Action
	policies []policy
}

// Actions.
const (
	Allow = rbacv3.RBAC_ALLOW
	Deny  = rbacv3.RBAC_DENY
	Log   = rbacv3.RBAC_LOG
)

func compileEngine(r *rbacv3.RBAC, network bool) (*Engine, error) {
	e := &Engine{action: r.GetAction()}
	switch e.action {
	case Allow, Deny, Log:
	default:
		return nil, fmt.Errorf("unsupported rbac action %v", e.action)
	}
	c := &compiler{network: network}
	names := make([]string, 0, len(r.GetPolicies()))
	for n := range r.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names) // Envoy's policies map has no order; be deterministic
	for _, n := range names {
		p := r.Policies[n]
		if len(p.Permissions) == 0 || len(p.Principals) == 0 {
			return nil, fmt.Errorf("policy %s: needs permissions and principals", n)
		}
		perms, err := c.permissions(p.Permissions, false)
		if err != nil {
			return nil, fmt.Errorf("policy %s: permissions: %w", n, err)
		}
		ids, err := c.principals(p.Principals, false)
		if err != nil {
			return nil, fmt.Errorf("policy %s: principals: %w", n, err)
		}
		e.policies = append(e.policies, policy{name: n, permissions: perms, principals: ids})
	}
	return e, nil
}

// Evaluate returns whether a is allowed and the policy that decided ("" when none matched).
func (e *Engine) Evaluate(a *Attrs) (allowed bool, matched string) {
	for i := range e.policies {
		p := &e.policies[i]
		if p.permissions.match(a) && p.principals.match(a) {
			matched = p.name
			break
		}
	}
	switch e.action {
	case Allow:
		return matched != "", matched
	case Deny:
		return matched == "", matched
	default:
		return true, matched
	}
}

// Action returns the engine's action.
func (e *Engine) Action() rbacv3.RBAC_Action { return e.action }
