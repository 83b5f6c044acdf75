package jwtauthn

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/portico-gateway/portico/internal/testjwt"
	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// istioShape is what the translator emits for RequestAuthentications:
// providers origins-<n>, one rule requiring any of them or none.
func istioShape(providers ...*jwtv3.JwtProvider) *jwtv3.JwtAuthentication {
	m := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}}
	any := &jwtv3.JwtRequirementOrList{}
	for i, p := range providers {
		name := "origins-" + string(rune('0'+i))
		m.Providers[name] = p
		any.Requirements = append(any.Requirements, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}})
	}
	any.Requirements = append(any.Requirements, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	m.Rules = []*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: any}}}}}
	return m
}

func jwtProvider(issuer, jwks string) *jwtv3.JwtProvider {
	return &jwtv3.JwtProvider{Issuer: issuer, PayloadInMetadata: issuer,
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}}}
}

func newFilter(t testing.TB, m *jwtv3.JwtAuthentication, now time.Time) (*Filter, *stats.Store) {
	t.Helper()
	c, err := Compile(m)
	if err != nil {
		t.Fatal(err)
	}
	st := stats.NewStore()
	return c.New(filters.Env{Stats: st, StatPrefix: "p", Now: func() time.Time { return now }}).(*Filter), st
}

func request(target string, hdr ...string) *httpx.Request {
	r := &httpx.Request{Method: "GET", Target: target, Authority: "api.example.com", Scheme: "http"}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestVerificationOutcomes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rsa := testjwt.NewKey(t, jose.RS256, "rsa")
	es := testjwt.NewKey(t, jose.ES256, "ec")
	ed := testjwt.NewKey(t, jose.EdDSA, "ed")
	edNoKid := *ed
	edNoKid.Kid = ""
	ps := testjwt.NewKey(t, jose.PS256, "ps")
	stranger := testjwt.NewKey(t, jose.RS256, "rsa")
	jwks := testjwt.JWKS(t, rsa, es, ed, ps)
	m := istioShape(jwtProvider("https://issuer", jwks), jwtProvider(testjwt.SampleIssuer, testjwt.SampleJWKS))
	m.Providers["origins-0"].Audiences = []string{"api"}
	claims := func(kv ...any) map[string]any {
		c := map[string]any{"iss": "https://issuer", "sub": "alice", "aud": "api", "exp": now.Add(time.Hour).Unix()}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	good := rsa.Mint(t, claims(), nil)
	parts := strings.Split(good, ".")
	cases := []struct {
		name  string
		token string
		code  int
		body  string
	}{
		{"no token", "", 0, ""},
		{"RS256", good, 0, ""},
		{"ES256", es.Mint(t, claims(), nil), 0, ""},
		{"EdDSA without kid", edNoKid.Mint(t, claims(), nil), 0, ""},
		{"PS256", ps.Mint(t, claims(), nil), 0, ""},
		{"seed customer", testjwt.SeedCustomer, 0, ""},
		{"seed tampered", testjwt.SeedTampered, 401, "Jwt verification fails"},
		{"expired", rsa.Mint(t, claims("exp", now.Add(-61*time.Second).Unix()), nil), 401, "Jwt is expired"},
		{"expired within skew", rsa.Mint(t, claims("exp", now.Add(-59*time.Second).Unix()), nil), 0, ""},
		{"not yet valid", rsa.Mint(t, claims("nbf", now.Add(61*time.Second).Unix()), nil), 401, "Jwt not yet valid"},
		{"nbf within skew", rsa.Mint(t, claims("nbf", now.Add(59*time.Second).Unix()), nil), 0, ""},
		{"unknown issuer", rsa.Mint(t, claims("iss", "https://other"), nil), 401, "Jwt issuer is not configured"},
		{"no issuer", rsa.Mint(t, claims("iss", nil), nil), 401, "Jwt issuer is not configured"},
		{"wrong audience", rsa.Mint(t, claims("aud", "other"), nil), 403, "Audiences in Jwt are not allowed"},
		{"audience in list", rsa.Mint(t, claims("aud", []string{"x", "https://api/"}), nil), 0, ""},
		{"unknown kid", testjwt.NewKey(t, jose.RS256, "nope").Mint(t, claims(), nil), 401, "Jwks doesn't have key to match kid or alg from Jwt"},
		{"same kid other key", stranger.Mint(t, claims(), nil), 401, "Jwt verification fails"},
		{"ES384 with only a P-256 key", testjwt.NewKey(t, jose.ES384, "ec").Mint(t, claims(), nil), 401, "Jwt verification fails"},
		{"two dots missing", "abc.def", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"four sections", good + ".x", 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"empty section", parts[0] + ".." + parts[2], 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"bad header base64", "!!!." + parts[1] + "." + parts[2], 401, "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"},
		{"bad header base64 in charset", "a." + parts[1] + "." + parts[2], 401, "Jwt header is an invalid Base64url encoded"},
		{"header not JSON", b64("nope") + "." + parts[1] + "." + parts[2], 401, "Jwt header is an invalid JSON"},
		{"alg none", b64(`{"alg":"none"}`) + "." + parts[1] + ".c2ln", 401, "Jwt header [alg] is not supported"},
		{"alg missing", b64(`{"typ":"JWT"}`) + "." + parts[1] + ".c2ln", 401, "Jwt header [alg] field is required and must be a string"},
		{"kid not string", b64(`{"alg":"RS256","kid":5}`) + "." + parts[1] + ".c2ln", 401, "Jwt header [kid] field is not a string"},
		{"payload not JSON", parts[0] + "." + b64("[1") + "." + parts[2], 401, "Jwt payload is an invalid JSON"},
		{"exp not integer", parts[0] + "." + b64(`{"iss":"https://issuer","exp":"soon"}`) + "." + parts[2], 401, "Jwt payload [exp] field is not an integer"},
		{"huge exp", parts[0] + "." + b64(`{"iss":"https://issuer","exp":1e300}`) + "." + parts[2], 401, "Jwt payload [exp] field is not a positive 64 bit integer"},
		{"aud not string", parts[0] + "." + b64(`{"iss":"https://issuer","aud":[1]}`) + "." + parts[2], 401, "Jwt payload [aud] field is not a string or string list"},
		{"payload swapped", parts[0] + "." + b64(`{"iss":"https://issuer","aud":"api","sub":"root"}`) + "." + parts[2], 401, "Jwt verification fails"},
		{"HS256 with the RSA key as secret", hs256WithPublicKey(t, rsa, claims()), 401, "Jwt verification fails"},
		{"crit header", rsa.Mint(t, claims(), map[string]any{"crit": []string{"exp"}, "exp": 1}), 401, "Jwt verification fails"},
		{"EdDSA short signature", ed.Mint(t, claims(), nil)[:len(ed.Mint(t, claims(), nil))-10], 401, "Jwt ED25519 signature is wrong length"},
	}
	f, st := newFilter(t, m, now)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for round := 0; round < 2; round++ { // the second round may hit the cache
				var hdr []string
				if c.token != "" {
					hdr = []string{"authorization", "Bearer " + c.token}
				}
				s := &filters.Stream{Req: request("/x", hdr...)}
				r := f.Decode(s)
				if c.code == 0 {
					if r != nil {
						t.Fatalf("round %d: got %d %q, want pass", round, r.Status, r.Body)
					}
					if s.Req.Header.Has("authorization") {
						t.Error("the token was forwarded without forward: true")
					}
					continue
				}
				if r == nil {
					t.Fatalf("round %d: passed, want %d %q", round, c.code, c.body)
				}
				if r.Status != c.code || r.Body != c.body {
					t.Fatalf("round %d: got %d %q, want %d %q", round, r.Status, r.Body, c.code, c.body)
				}
				wantChallenge := `Bearer realm="http://api.example.com/x", error="invalid_token"`
				if len(r.Headers) != 1 || r.Headers[0].Name != "www-authenticate" || r.Headers[0].Value != wantChallenge {
					t.Errorf("headers %v, want www-authenticate %s", r.Headers, wantChallenge)
				}
			}
		})
	}
	if v, _ := st.Lookup("http.p.jwt_authn.jwt_cache_hit"); v == 0 {
		t.Error("no cache hit counted")
	}
	if v, _ := st.Lookup("http.p.jwt_authn.denied"); v == 0 {
		t.Error("no denial counted")
	}
}

// hs256WithPublicKey is the classic algorithm-confusion attack: an HMAC
// token whose secret is the RSA public key's bytes.
func hs256WithPublicKey(t *testing.T, k *testjwt.Key, claims map[string]any) string {
	t.Helper()
	jwk := k.JWK()
	secret, err := jwk.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, (&jose.SignerOptions{}).WithHeader("kid", k.Kid))
	if err != nil {
		t.Fatal(err)
	}
	payload := `{"iss":"https://issuer","aud":"api","exp":` + strconv.FormatInt(claims["exp"].(int64), 10) + `}`
	j, err := s.Sign([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := j.CompactSerialize()
	return out
}
