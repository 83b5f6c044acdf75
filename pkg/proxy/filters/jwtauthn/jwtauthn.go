// Package jwtauthn is Envoy's envoy.filters.http.jwt_authn for the edge
// proxy: it finds JWTs where providers say (headers with a value prefix,
// query parameters, cookies; by default "Authorization: Bearer" and
// access_token), verifies them with go-jose against inline JWKS with
// jwt_verify_lib's checks and order (format, issuer, nbf/exp with clock
// skew, audiences, key selection by kid and alg, signature), answers
// failures with Envoy's 401 bodies and www-authenticate header, and
// publishes verified payloads as dynamic metadata for rbac. Verified
// tokens are cached by hash until they expire, as Envoy's jwt_cache.
package jwtauthn

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// Name is the filter's name.
const Name = "envoy.filters.http.jwt_authn"

// DefaultClockSkew is Envoy's clock_skew_seconds default.
const DefaultClockSkew = 60

// provider is a compiled JwtProvider.
type provider struct {
	name          string
	issuer        string
	audiences     []string
	keys          []key
	forward       bool
	payloadHeader string
	metadataKey   string
	skew          uint64
	claims        []claimHeader
}

type claimHeader struct {
	header string
	path   []string // claim name split at '.'
}

// location is a place tokens are looked for, with the providers that look
// there (a token found there must be from one of their issuers).
type location struct {
	kind      int // locHeader, locParam, locCookie
	name      string
	prefix    string // header value prefix
	providers []int
}

const (
	locHeader = iota
	locParam
	locCookie
)

type rule struct {
	prefix, path string
	re           *regexp.Regexp
	req          requirement
}

// requirement is a JwtRequirement in the forms the proxy implements:
// provider_name, allow_missing, allow_missing_or_failed, and requires_any
// of those (Istio's shape).
type requirement struct {
	providers    []bool // by provider index
	allowMissing bool
	allowFailed  bool
}

// Config is a compiled JwtAuthentication.
type Config struct {
	providers []provider
	locations []location
	rules     []rule
}

// Compile checks and compiles a JwtAuthentication.
func Compile(m *jwtv3.JwtAuthentication) (*Config, error) {
	c := &Config{}
	names := make([]string, 0, len(m.Providers))
	for n := range m.Providers {
		names = append(names, n)
	}
	sort.Strings(names)
	index := map[string]int{}
	locs := map[string]int{}
	addLoc := func(l location, p int) {
		k := fmt.Sprintf("%d\x00%s\x00%s", l.kind, l.name, l.prefix)
		i, ok := locs[k]
		if !ok {
			i = len(c.locations)
			locs[k] = i
			c.locations = append(c.locations, l)
		}
		c.locations[i].providers = append(c.locations[i].providers, p)
	}
	for i, n := range names {
		p, err := compileProvider(n, m.Providers[n])
		if err != nil {
			return nil, fmt.Errorf("jwt_authn provider %s: %w", n, err)
		}
		index[n] = i
		c.providers = append(c.providers, p)
		mp := m.Providers[n]
		if len(mp.FromHeaders) == 0 && len(mp.FromParams) == 0 && len(mp.FromCookies) == 0 {
			addLoc(location{kind: locHeader, name: "authorization", prefix: "Bearer "}, i)
			addLoc(location{kind: locParam, name: "access_token"}, i)
		}
		for _, h := range mp.FromHeaders {
			if h.Name == "" {
				return nil, fmt.Errorf("jwt_authn provider %s: from_headers needs a name", n)
			}
			addLoc(location{kind: locHeader, name: strings.ToLower(h.Name), prefix: h.ValuePrefix}, i)
		}
		for _, q := range mp.FromParams {
			addLoc(location{kind: locParam, name: q}, i)
		}
		for _, ck := range mp.FromCookies {
			addLoc(location{kind: locCookie, name: ck}, i)
		}
	}
	for i, r := range m.Rules {
		cr, err := compileRule(r, index, len(c.providers))
		if err != nil {
			return nil, fmt.Errorf("jwt_authn rules[%d]: %w", i, err)
		}
		c.rules = append(c.rules, cr)
	}
	return c, nil
}

func compileProvider(name string, p *jwtv3.JwtProvider) (provider, error) {
	out := provider{name: name, issuer: p.Issuer, audiences: p.Audiences, forward: p.Forward,
		payloadHeader: strings.ToLower(p.ForwardPayloadHeader), metadataKey: p.PayloadInMetadata,
		skew: DefaultClockSkew}
	if p.ClockSkewSeconds > 0 { // Envoy: 0 means the default
		out.skew = uint64(p.ClockSkewSeconds)
	}
	local, ok := p.JwksSourceSpecifier.(*jwtv3.JwtProvider_LocalJwks)
	if !ok {
		return out, fmt.Errorf("only local_jwks is supported (the controller inlines remote JWKS)")
	}
	var doc string
	switch s := local.LocalJwks.GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		doc = s.InlineString
	case *corev3.DataSource_InlineBytes:
		doc = string(s.InlineBytes)
	default:
		return out, fmt.Errorf("local_jwks must be inline_string or inline_bytes")
	}
	var err error
	if out.keys, err = parseJWKS(doc); err != nil {
		return out, fmt.Errorf("local_jwks: %w", err)
	}
	for _, ch := range p.ClaimToHeaders {
		if ch.HeaderName == "" || ch.ClaimName == "" {
			return out, fmt.Errorf("claim_to_headers needs header_name and claim_name")
		}
		out.claims = append(out.claims, claimHeader{header: strings.ToLower(ch.HeaderName), path: strings.Split(ch.ClaimName, ".")})
	}
	return out, nil
}

func compileRule(r *jwtv3.RequirementRule, index map[string]int, n int) (rule, error) {
	var out rule
	switch p := r.GetMatch().GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.prefix = p.Prefix
	case *routev3.RouteMatch_Path:
		out.path = p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return out, fmt.Errorf("match: %w", err)
		}
		out.re = re
	default:
		return out, fmt.Errorf("match must be prefix, path or safe_regex")
	}
	if m := r.GetMatch(); m.CaseSensitive != nil || len(m.Headers) > 0 || len(m.QueryParameters) > 0 {
		return out, fmt.Errorf("match supports only a path (no case_sensitive, headers or query_parameters)")
	}
	out.req = requirement{providers: make([]bool, n)}
	if r.RequirementType == nil {
		// A rule without a requirement exempts its paths (Envoy).
		out.req.allowMissing, out.req.allowFailed = true, true
		return out, nil
	}
	req, ok := r.RequirementType.(*jwtv3.RequirementRule_Requires)
	if !ok {
		return out, fmt.Errorf("only requires is supported (not requirement_name)")
	}
	if err := addRequirement(&out.req, req.Requires, index, true); err != nil {
		return out, err
	}
	return out, nil
}

func addRequirement(out *requirement, r *jwtv3.JwtRequirement, index map[string]int, top bool) error {
	all := func() {
		for i := range out.providers {
			out.providers[i] = true
		}
	}
	switch t := r.GetRequiresType().(type) {
	case *jwtv3.JwtRequirement_ProviderName:
		i, ok := index[t.ProviderName]
		if !ok {
			return fmt.Errorf("unknown provider %q", t.ProviderName)
		}
		out.providers[i] = true
	case *jwtv3.JwtRequirement_AllowMissing:
		out.allowMissing = true
		if top {
			all()
		}
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		out.allowMissing, out.allowFailed = true, true
		if top {
			all()
		}
	case *jwtv3.JwtRequirement_RequiresAny:
		if !top {
			return fmt.Errorf("nested requires_any is not supported")
		}
		for _, c := range t.RequiresAny.GetRequirements() {
			if err := addRequirement(out, c, index, false); err != nil {
				return err
			}
		}
		if !slicesAny(out.providers) {
			all() // requires_any of only allow_missing*: every provider's tokens
		}
	case nil:
		// An empty requirement verifies nothing (Envoy: no verifier).
		out.allowMissing, out.allowFailed = true, true
	default:
		return fmt.Errorf("unsupported requirement %T (supported: provider_name, requires_any, allow_missing, allow_missing_or_failed)", t)
	}
	return nil
}

func slicesAny(b []bool) bool {
	for _, v := range b {
		if v {
			return true
		}
	}
	return false
}

// Name implements filters.HTTPFactory.
func (c *Config) Name() string { return Name }

// New implements filters.HTTPFactory.
func (c *Config) New(env filters.Env) filters.HTTP {
	sc := stats.HTTPScope(env.StatPrefix)
	now := env.Now
	if now == nil {
		now = time.Now
	}
	return &Filter{cfg: c, cache: newCache(DefaultCacheSize), now: now,
		allowed: env.Stats.Counter(sc, "jwt_authn.allowed"), denied: env.Stats.Counter(sc, "jwt_authn.denied"),
		hit: env.Stats.Counter(sc, "jwt_authn.jwt_cache_hit"), miss: env.Stats.Counter(sc, "jwt_authn.jwt_cache_miss")}
}

// Filter is a jwt_authn instance (one per connection manager handler).
type Filter struct {
	cfg                        *Config
	cache                      *cache
	now                        func() time.Time
	allowed, denied, hit, miss *stats.Counter
}

// found is a token found in a request.
type found struct {
	token string
	loc   *location
	field int // header field index, -1 otherwise
}

// Decode implements filters.HTTP.
func (f *Filter) Decode(s *filters.Stream) *filters.Reply {
	req := s.Req
	path := req.Path()
	var r *rule
	for i := range f.cfg.rules {
		if f.cfg.rules[i].matches(path) {
			r = &f.cfg.rules[i]
			break
		}
	}
	if r == nil {
		f.allowed.Inc()
		return nil
	}
	var buf [2]found
	toks := f.extract(req, &r.req, buf[:0])
	if len(toks) == 0 {
		if r.req.allowMissing {
			f.allowed.Inc()
			return nil
		}
		return f.deny(s, Missing)
	}
	var remove []string
	for i := range toks {
		v, st := f.verifyToken(&toks[i], &r.req)
		if st != OK {
			if r.req.allowFailed {
				continue
			}
			return f.deny(s, st)
		}
		p := &f.cfg.providers[v.provider]
		if p.metadataKey != "" {
			s.SetMetadata(Name, p.metadataKey, v.payload)
		}
		if p.payloadHeader != "" {
			req.Header.Set(p.payloadHeader, v.payloadB64)
		}
		for _, h := range v.claimHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		if !p.forward && toks[i].loc.kind == locHeader {
			remove = append(remove, toks[i].loc.name)
		}
	}
	for _, n := range remove {
		req.Header.Del(n)
	}
	f.allowed.Inc()
	return nil
}

func (r *rule) matches(path string) bool {
	switch {
	case r.re != nil:
		return r.re.MatchString(path)
	case r.path != "":
		return path == r.path
	default:
		return strings.HasPrefix(path, r.prefix)
	}
}

// extract finds the tokens of a requirement's providers.
func (f *Filter) extract(req *httpx.Request, rq *requirement, out []found) []found {
	var query url.Values
	var cookies []httpx.Field
	cookiesParsed := false
	for li := range f.cfg.locations {
		l := &f.cfg.locations[li]
		if !l.wanted(rq) {
			continue
		}
		switch l.kind {
		case locHeader:
			for fi := range req.Header.Fields {
				fl := &req.Header.Fields[fi]
				if fl.Name != l.name {
					continue
				}
				v := fl.Value
				if l.prefix != "" {
					i := strings.Index(v, l.prefix)
					if i < 0 {
						continue
					}
					v = tokenAt(v, i+len(l.prefix))
				}
				if v != "" {
					out = append(out, found{token: v, loc: l, field: fi})
				}
			}
		case locParam:
			if query == nil {
				q := req.Query()
				if q == "" {
					continue
				}
				query, _ = url.ParseQuery(q)
				if query == nil {
					query = url.Values{}
				}
			}
			if v := query.Get(l.name); v != "" {
				out = append(out, found{token: v, loc: l, field: -1})
			}
		case locCookie:
			if !cookiesParsed {
				cookies, cookiesParsed = parseCookies(&req.Header), true
			}
			for _, c := range cookies {
				if c.Name == l.name && c.Value != "" {
					out = append(out, found{token: c.Value, loc: l, field: -1})
					break
				}
			}
		}
	}
	return out
}

func (l *location) wanted(rq *requirement) bool {
	for _, p := range l.providers {
		if rq.providers[p] {
			return true
		}
	}
	return false
}

// tokenAt returns the JWT that starts at or after i in v, as Envoy's
// extractJWT: from the first base64url/dot character to the first other.
func tokenAt(v string, i int) string {
	start := -1
	for j := i; j < len(v); j++ {
		if isTokenChar(v[j]) {
			start = j
			break
		}
	}
	if start < 0 {
		return ""
	}
	end := start
	for end < len(v) && isTokenChar(v[end]) {
		end++
	}
	return v[start:end]
}

// tokenChars are base64url's alphabet, the dot and padding.
var tokenChars = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=") {
		t[c] = true
	}
	return t
}()

func isTokenChar(c byte) bool { return tokenChars[c] }

func parseCookies(h *httpx.Header) []httpx.Field {
	var out []httpx.Field
	for _, f := range h.Fields {
		if f.Name != "cookie" {
			continue
		}
		for _, part := range strings.Split(f.Value, ";") {
			name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				continue
			}
			out = append(out, httpx.Field{Name: name, Value: strings.Trim(value, `"`)})
		}
	}
	return out
}

// verified is what a successful verification yields (cached).
type verified struct {
	token        string
	provider     int
	nbf, exp     uint64
	payload      map[string]any
	payloadB64   string
	claimHeaders []httpx.Field
}

// verifyToken checks one token in jwt_verify_lib's order; a cached
// verification still has its location, issuer and times checked.
func (f *Filter) verifyToken(t *found, rq *requirement) (*verified, Status) {
	now := uint64(f.now().Unix())
	if v := f.cache.get(t.token); v != nil {
		f.hit.Inc()
		if !t.loc.allows(v.provider, rq) {
			return nil, UnknownIssuer
		}
		if st := timeStatus(v.nbf, v.exp, now, f.cfg.providers[v.provider].skew); st != OK {
			return nil, st
		}
		return v, OK
	}
	f.miss.Inc()
	tok, st := Parse(t.token)
	if st != OK {
		return nil, st
	}
	pi := -1
	for _, p := range t.loc.providers {
		if rq.providers[p] && (f.cfg.providers[p].issuer == "" || f.cfg.providers[p].issuer == tok.Iss) {
			pi = p
			break
		}
	}
	if pi < 0 {
		return nil, UnknownIssuer
	}
	p := &f.cfg.providers[pi]
	if st := timeStatus(tok.Nbf, tok.Exp, now, p.skew); st != OK {
		return nil, st
	}
	if !audienceAllowed(p.audiences, tok.Audiences) {
		return nil, AudienceNotAllowed
	}
	if st := verify(tok, p.keys); st != OK {
		return nil, st
	}
	v := &verified{token: t.token, provider: pi, nbf: tok.Nbf, exp: tok.Exp, payload: tok.Payload, payloadB64: tok.PayloadB64}
	for _, ch := range p.claims {
		if s, ok := claimString(tok.Payload, ch.path); ok {
			v.claimHeaders = append(v.claimHeaders, httpx.Field{Name: ch.header, Value: s})
		}
	}
	f.cache.put(v)
	return v, OK
}

func (l *location) allows(p int, rq *requirement) bool {
	if !rq.providers[p] {
		return false
	}
	for _, q := range l.providers {
		if q == p {
			return true
		}
	}
	return false
}

// audienceAllowed: no configured audiences allows any token; otherwise
// one of the token's must be configured (Envoy strips a scheme and a
// trailing slash from both before comparing).
func audienceAllowed(allowed, got []string) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range allowed {
		for _, g := range got {
			if sanitizeAudience(a) == sanitizeAudience(g) {
				return true
			}
		}
	}
	return false
}

func sanitizeAudience(a string) string {
	a = strings.TrimPrefix(a, "http://")
	a = strings.TrimPrefix(a, "https://")
	return strings.TrimSuffix(a, "/")
}

// claimString renders a claim for claim_to_headers as Envoy does:
// strings as they are, numbers and booleans printed, objects and lists
// as base64 of their JSON.
func claimString(payload map[string]any, path []string) (string, bool) {
	var v any = payload
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[k]; !ok {
			return "", false
		}
	}
	switch c := v.(type) {
	case string:
		return c, true
	case float64:
		return strconv.FormatFloat(c, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(c), true
	case map[string]any, []any:
		b, err := json.Marshal(c)
		if err != nil {
			return "", false
		}
		return base64.StdEncoding.EncodeToString(b), true
	}
	return "", false
}

// deny answers a failed verification as Envoy does: 401 (403 for a
// disallowed audience) with the status text and a www-authenticate
// challenge naming the original URI.
func (f *Filter) deny(s *filters.Stream, st Status) *filters.Reply {
	f.denied.Inc()
	req := s.Req
	scheme := req.Header.Get("x-forwarded-proto")
	if scheme == "" {
		scheme = req.Scheme
	}
	challenge := `Bearer realm="` + scheme + "://" + req.Authority + req.Target + `"`
	if st != Missing {
		challenge += `, error="invalid_token"`
	}
	code := 401
	if st == AudienceNotAllowed {
		code = 403
	}
	return &filters.Reply{Status: code, Body: st.String(), Headers: []httpx.Field{{Name: "www-authenticate", Value: challenge}}}
}
