package jwtauthn

import (
	"reflect"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portico-gateway/portico/internal/testjwt"
	"github.com/portico-gateway/portico/pkg/proxy/filters"
)

// FuzzJWT feeds arbitrary tokens through extraction, parsing and
// verification. It must never panic, and a token that passes must carry
// exactly the claims of a token the key holder signed (changing anything
// signed must fail; only unsigned slack such as base64 trailing bits may
// differ).
func FuzzJWT(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	es := testjwt.NewKey(f, jose.ES256, "es")
	ed := testjwt.NewKey(f, jose.EdDSA, "ed")
	claims := map[string]any{"iss": "iss", "sub": "s", "aud": "api", "exp": now.Add(time.Hour).Unix(), "role": []any{"a"}}
	signed := []string{es.Mint(f, claims, nil), ed.Mint(f, claims, nil)}
	var want []map[string]any
	for _, s := range signed {
		c, err := testjwt.Claims(s)
		if err != nil {
			f.Fatal(err)
		}
		want = append(want, c)
	}
	m := istioShape(jwtProvider("iss", testjwt.JWKS(f, es, ed)), jwtProvider(testjwt.SampleIssuer, testjwt.SampleJWKS))
	m.Providers["origins-0"].Audiences = []string{"api"}
	flt, _ := newFilter(f, m, now)
	for _, s := range append(signed, testjwt.SeedTampered, testjwt.SeedCustomer, "a.b.c", "..", "eyJhbGciOiJub25lIn0.e30.") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if len(tok) > 8192 {
			return
		}
		flt.cache = newCache(4) // each input verified, not answered from a previous one
		s := &filters.Stream{Req: request("/", "authorization", "Bearer "+tok)}
		r := flt.Decode(s)
		if r != nil {
			if r.Status != 401 && r.Status != 403 || r.Body == "" {
				t.Fatalf("reply %d %q", r.Status, r.Body)
			}
			return
		}
		for ns, kv := range s.Metadata {
			for k, v := range kv {
				if k == testjwt.SampleIssuer {
					continue // Istio's sample tokens are signed by their key holder
				}
				ok := false
				for _, w := range want {
					if reflect.DeepEqual(v, w) {
						ok = true
					}
				}
				if !ok {
					t.Fatalf("%s/%s: accepted claims %v that nobody signed", ns, k, v)
				}
			}
		}
	})
}
