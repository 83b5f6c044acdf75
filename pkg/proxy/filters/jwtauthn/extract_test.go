package jwtauthn

import (
	"reflect"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/portico-gateway/portico/internal/testjwt"
	"github.com/portico-gateway/portico/pkg/proxy/filters"
)

func TestLocationsAndOutputs(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k := testjwt.NewKey(t, jose.RS256, "k")
	tok := k.Mint(t, map[string]any{"iss": "iss", "sub": "bob", "exp": now.Add(time.Hour).Unix(),
		"org": map[string]any{"team": "edge"}, "n": 42, "admin": true}, nil)
	payloadB64 := strings.Split(tok, ".")[1]
	custom := jwtProvider("iss", testjwt.JWKS(t, k))
	custom.FromHeaders = []*jwtv3.JwtHeader{{Name: "X-Token", ValuePrefix: "Token "}}
	custom.FromParams = []string{"jwt"}
	custom.FromCookies = []string{"session"}
	custom.Forward = true
	custom.ForwardPayloadHeader = "x-jwt-payload"
	custom.ClaimToHeaders = []*jwtv3.JwtClaimToHeader{{HeaderName: "x-team", ClaimName: "org.team"},
		{HeaderName: "x-n", ClaimName: "n"}, {HeaderName: "x-admin", ClaimName: "admin"}, {HeaderName: "x-none", ClaimName: "missing"}}
	m := istioShape(custom)
	f, _ := newFilter(t, m, now)
	cases := []struct {
		name   string
		target string
		hdr    []string
		found  bool
	}{
		{"header with prefix", "/", []string{"x-token", "Token " + tok}, true},
		{"prefix later in value", "/", []string{"x-token", "scheme=x, Token " + tok + " ; more"}, true},
		{"header without prefix", "/", []string{"x-token", tok}, false},
		{"param", "/?a=1&jwt=" + tok, nil, true},
		{"cookie", "/", []string{"cookie", "a=b; session=" + tok}, true},
		{"default location unused", "/", []string{"authorization", "Bearer " + tok}, false},
		{"default param unused", "/?access_token=" + tok, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &filters.Stream{Req: request(c.target, c.hdr...)}
			if r := f.Decode(s); r != nil {
				t.Fatalf("denied: %d %s", r.Status, r.Body)
			}
			got := s.Metadata[Name]["iss"]
			if !c.found {
				if got != nil || s.Req.Header.Has("x-jwt-payload") {
					t.Fatal("a token was used from a location the provider does not name")
				}
				return
			}
			payload, _ := got.(map[string]any)
			if payload["sub"] != "bob" {
				t.Fatalf("metadata %v", s.Metadata)
			}
			want := map[string]string{"x-jwt-payload": payloadB64, "x-team": "edge", "x-n": "42", "x-admin": "true"}
			for h, v := range want {
				if g := s.Req.Header.Get(h); g != v {
					t.Errorf("%s = %q, want %q", h, g, v)
				}
			}
			if s.Req.Header.Has("x-none") {
				t.Error("a missing claim produced a header")
			}
			for i := 0; i+1 < len(c.hdr); i += 2 {
				if !s.Req.Header.Has(c.hdr[i]) {
					t.Errorf("forward: true, but %s was removed", c.hdr[i])
				}
			}
		})
	}
}

func TestRequirementForms(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k := testjwt.NewKey(t, jose.ES256, "k")
	good := k.Mint(t, map[string]any{"iss": "iss", "exp": now.Add(time.Hour).Unix()}, nil)
	bad := testjwt.NewKey(t, jose.ES256, "k").Mint(t, map[string]any{"iss": "iss", "exp": now.Add(time.Hour).Unix()}, nil)
	req := func(r *jwtv3.JwtRequirement) *jwtv3.JwtAuthentication {
		return &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": jwtProvider("iss", testjwt.JWKS(t, k))},
			Rules: []*jwtv3.RequirementRule{
				{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/open"}}},
				{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					RequirementType: &jwtv3.RequirementRule_Requires{Requires: r}}}}
	}
	name := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "p"}}
	missing := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}
	failed := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: &emptypb.Empty{}}}
	cases := []struct {
		name                 string
		r                    *jwtv3.JwtRequirement
		none, valid, invalid int // 0: pass
	}{
		{"provider_name", name, 401, 0, 401},
		{"allow_missing", missing, 0, 0, 401},
		{"allow_missing_or_failed", failed, 0, 0, 0},
		{"requires_any provider or missing", &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{
			RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: []*jwtv3.JwtRequirement{name, missing}}}}, 0, 0, 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, _ := newFilter(t, req(c.r), now)
			for _, tc := range []struct {
				tok  string
				want int
			}{{"", c.none}, {good, c.valid}, {bad, c.invalid}} {
				var hdr []string
				if tc.tok != "" {
					hdr = []string{"authorization", "Bearer " + tc.tok}
				}
				got := 0
				r := f.Decode(&filters.Stream{Req: request("/api?x=1", hdr...)})
				if r != nil {
					got = r.Status
					if tc.tok == "" {
						want := `Bearer realm="http://api.example.com/api?x=1"`
						if r.Body != "Jwt is missing" || r.Headers[0].Value != want {
							t.Errorf("missing: %q %q", r.Body, r.Headers[0].Value)
						}
					}
				}
				if got != tc.want {
					t.Errorf("token %.10q: got %d, want %d", tc.tok, got, tc.want)
				}
				// A path no rule requires anything for passes whatever the token.
				if r := f.Decode(&filters.Stream{Req: request("/open", hdr...)}); r != nil {
					t.Errorf("/open: %d", r.Status)
				}
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	k := testjwt.NewKey(t, jose.RS256, "k")
	cases := map[string]func(m *jwtv3.JwtAuthentication){
		"remote_jwks": func(m *jwtv3.JwtAuthentication) {
			m.Providers["origins-0"].JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{}}
		},
		"bad JWKS": func(m *jwtv3.JwtAuthentication) {
			m.Providers["origins-0"] = jwtProvider("i", `{"keys":[{"kty":"RSA"}]}`)
		},
		"empty JWKS":    func(m *jwtv3.JwtAuthentication) { m.Providers["origins-0"] = jwtProvider("i", `{"keys":[]}`) },
		"not JSON JWKS": func(m *jwtv3.JwtAuthentication) { m.Providers["origins-0"] = jwtProvider("i", `keys`) },
		"oct key": func(m *jwtv3.JwtAuthentication) {
			m.Providers["origins-0"] = jwtProvider("i", `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)
		},
		"unknown provider": func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].GetRequires().GetRequiresAny().Requirements[0] = &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "nope"}}
		},
		"requires_all": func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].RequirementType = &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{}}}
		},
		"requirement_name": func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].RequirementType = &jwtv3.RequirementRule_RequirementName{RequirementName: "x"}
		},
		"header match": func(m *jwtv3.JwtAuthentication) {
			m.Rules[0].Match.Headers = []*routev3.HeaderMatcher{{Name: "x"}}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := istioShape(jwtProvider("i", testjwt.JWKS(t, k)))
			if _, err := Compile(m); err != nil {
				t.Fatalf("base config: %v", err)
			}
			mutate(m)
			if _, err := Compile(m); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestCacheIsBoundedAndEqualsVerification: with a cache far smaller than
// the token population, every answer equals a cache-less verification.
func TestCacheIsBoundedAndEqualsVerification(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k := testjwt.NewKey(t, jose.ES256, "k")
	other := testjwt.NewKey(t, jose.ES256, "k")
	m := istioShape(jwtProvider("iss", testjwt.JWKS(t, k)))
	f, _ := newFilter(t, m, now)
	f.cache = newCache(8)
	fresh, _ := newFilter(t, m, now)
	var toks []string
	for i := 0; i < 40; i++ {
		key := k
		if i%3 == 0 {
			key = other
		}
		toks = append(toks, key.Mint(t, map[string]any{"iss": "iss", "i": i, "exp": now.Add(time.Duration(i-20) * time.Minute).Unix()}, nil))
	}
	for step := 0; step < 400; step++ {
		tok := toks[(step*7+step/3)%len(toks)]
		fresh.cache = newCache(1)
		a := f.Decode(&filters.Stream{Req: request("/", "authorization", "Bearer "+tok)})
		b := fresh.Decode(&filters.Stream{Req: request("/", "authorization", "Bearer "+tok)})
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("step %d: cached %+v, fresh %+v", step, a, b)
		}
		if n := f.cache.len(); n > 8 {
			t.Fatalf("cache holds %d entries", n)
		}
	}
}
