package testjwt

import (
	"encoding/json"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func sampleKeySet(t *testing.T) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(SampleJWKS), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].KeyID != SampleKid {
		t.Fatalf("sample JWKS: %+v", set.Keys)
	}
	return set
}

func verify(t *testing.T, set jose.JSONWebKeySet, token string) error {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return err
	}
	_, err = jws.Verify(set.Keys[0].Key)
	return err
}

// TestSeedTokensAgainstSampleJWKS pins what the seed 002 scenario relies
// on: the article's valid tokens verify with Istio's sample key, the
// tampered one does not, and none of them expires before 2050.
func TestSeedTokensAgainstSampleJWKS(t *testing.T) {
	set := sampleKeySet(t)
	cases := []struct {
		name    string
		token   string
		valid   bool
		role    any
		minYear int
	}{
		{"tampered", SeedTampered, false, nil, 2100},
		{"no role", SeedNoRole, true, nil, 2100},
		{"customer", SeedCustomer, true, "customer", 2050},
		{"demo.jwt", Demo(), true, nil, 2100},
		{"groups-scope.jwt", GroupsScope(), true, nil, 2050},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := verify(t, set, c.token)
			if c.valid != (err == nil) {
				t.Fatalf("verify: valid=%v, err=%v", c.valid, err)
			}
			claims, err := Claims(c.token)
			if err != nil {
				t.Fatal(err)
			}
			if claims["iss"] != SampleIssuer || claims["sub"] != SampleIssuer {
				t.Errorf("iss/sub = %v/%v", claims["iss"], claims["sub"])
			}
			if claims["role"] != c.role {
				t.Errorf("role = %v, want %v", claims["role"], c.role)
			}
			exp := time.Unix(int64(claims["exp"].(float64)), 0)
			if exp.Year() < c.minYear {
				t.Errorf("exp %v is before %d", exp, c.minYear)
			}
		})
	}
	if SeedNoRole != Demo() {
		t.Error("the article's token without role should be Istio's demo.jwt")
	}
}

func TestMintedTokensVerify(t *testing.T) {
	for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.ES384, jose.EdDSA} {
		t.Run(string(alg), func(t *testing.T) {
			k := NewKey(t, alg, "k1")
			other := NewKey(t, alg, "k2")
			tok := k.Mint(t, map[string]any{"iss": "me", "exp": time.Now().Add(time.Hour).Unix()}, nil)
			jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{alg})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jws.Verify(k.Public()); err != nil {
				t.Errorf("own key: %v", err)
			}
			if _, err := jws.Verify(other.Public()); err == nil {
				t.Error("another key verified the token")
			}
			var set jose.JSONWebKeySet
			if err := json.Unmarshal([]byte(JWKS(t, k, other)), &set); err != nil || len(set.Keys) != 2 {
				t.Fatalf("JWKS round trip: %v %d", err, len(set.Keys))
			}
		})
	}
}
