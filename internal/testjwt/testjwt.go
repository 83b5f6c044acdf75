// Package testjwt holds JWT test material shared by the proxy's and the
// controller's tests: Istio's public sample JWKS and tokens (from
// istio/istio security/tools/jwt/samples, commit 86c9f01f), the three
// tokens printed in seed 002's article, and helpers that mint tokens with
// fresh keys of every algorithm the proxy verifies.
//
// Nothing here is secret: the sample keys are published by Istio for
// exactly this use, and the minted keys live only as long as a test.
package testjwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// Istio's public samples.
var (
	//go:embed testdata/jwks.json
	SampleJWKS string
	//go:embed testdata/demo.jwt
	demoJWT string
	//go:embed testdata/groups-scope.jwt
	groupsScopeJWT string
)

// SampleIssuer is the issuer (and subject) of every sample token.
const SampleIssuer = "testing@secure.istio.io"

// SampleKid is the kid of the sample JWKS's only key.
const SampleKid = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ"

// Demo is Istio's demo.jwt: RS256, iss = sub = testing@secure.istio.io,
// claim foo=bar, exp 4685989700 (year 2118). It is also the article's
// "valid token without the role claim".
func Demo() string { return strings.TrimSpace(demoJWT) }

// GroupsScope is Istio's groups-scope.jwt: like Demo, with list claims
// groups=[group1 group2] and scope=[scope1 scope2], exp 3537391104.
func GroupsScope() string { return strings.TrimSpace(groupsScopeJWT) }

// The three tokens of seed 002 (the article's "认证/授权" section), as it
// prints them.
const (
	// SeedTampered is the article's "非法的 token": Demo with the last
	// character of its signature changed (g → U), so the signature no
	// longer verifies. Envoy answers 401 "Jwt verification fails".
	SeedTampered = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRIRmJwb0lVcXJZOHQyenBBMnFYZkNtcjVWTzVaRXI0UnpIVV8tZW52dlEiLCJ0eXAiOiJKV1QifQ.eyJleHAiOjQ2ODU5ODk3MDAsImZvbyI6ImJhciIsImlhdCI6MTUzMjM4OTcwMCwiaXNzIjoidGVzdGluZ0BzZWN1cmUuaXN0aW8uaW8iLCJzdWIiOiJ0ZXN0aW5nQHNlY3VyZS5pc3Rpby5pbyJ9.CfNnxWP2tcnR9q0vxyxweaF3ovQYHYZl82hAUsn21bwQd9zP7c-LS9qd_vpdLG4Tn1A15NxfCjp5f7QNBUo-KC9PJqYpgGbaXhaGx7bEdFWjcwv3nZzvc7M__ZpaCERdwU7igUmJqYGBYQ51vr2njU9ZimyKkfDe3axcyiBZde7G6dabliUosJvvKOPcKIWPccCgefSj_GNfwIip3-SsFdlR7BtbVUcqR-yv-XOxJ3Uc1MI0tz3uMiiZcyPV7sNCU4KRnemRIMHVOfuvHsU60_GhGbiSFzgPTAa9WTltbnarTbxudb_YEOx12JiwYToeX0DCPb43W1tzIBxgm8NxUU"
	// SeedNoRole is the article's valid token without a role claim (the
	// same bytes as Istio's demo.jwt). With the article's
	// AuthorizationPolicy it gets 403 "RBAC: access denied".
	SeedNoRole = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRIRmJwb0lVcXJZOHQyenBBMnFYZkNtcjVWTzVaRXI0UnpIVV8tZW52dlEiLCJ0eXAiOiJKV1QifQ.eyJleHAiOjQ2ODU5ODk3MDAsImZvbyI6ImJhciIsImlhdCI6MTUzMjM4OTcwMCwiaXNzIjoidGVzdGluZ0BzZWN1cmUuaXN0aW8uaW8iLCJzdWIiOiJ0ZXN0aW5nQHNlY3VyZS5pc3Rpby5pbyJ9.CfNnxWP2tcnR9q0vxyxweaF3ovQYHYZl82hAUsn21bwQd9zP7c-LS9qd_vpdLG4Tn1A15NxfCjp5f7QNBUo-KC9PJqYpgGbaXhaGx7bEdFWjcwv3nZzvc7M__ZpaCERdwU7igUmJqYGBYQ51vr2njU9ZimyKkfDe3axcyiBZde7G6dabliUosJvvKOPcKIWPccCgefSj_GNfwIip3-SsFdlR7BtbVUcqR-yv-XOxJ3Uc1MI0tz3uMiiZcyPV7sNCU4KRnemRIMHVOfuvHsU60_GhGbiSFzgPTAa9WTltbnarTbxudb_YEOx12JiwYToeX0DCPb43W1tzIBxgm8NxUg"
	// SeedCustomer is the article's token with claim role=customer
	// (exp 2549056888, year 2050), signed by the sample key. It gets 200.
	SeedCustomer = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkRIRmJwb0lVcXJZOHQyenBBMnFYZkNtcjVWTzVaRXI0UnpIVV8tZW52dlEiLCJ0eXAiOiJKV1QifQ.eyJleHAiOjI1NDkwNTY4ODgsImlhdCI6MTU0OTA1Njg4OSwiaXNzIjoidGVzdGluZ0BzZWN1cmUuaXN0aW8uaW8iLCJyb2xlIjoiY3VzdG9tZXIiLCJzdWIiOiJ0ZXN0aW5nQHNlY3VyZS5pc3Rpby5pbyJ9.VM9VOHD2NwDjQ6k7tszB3helfAn5wcldxe950BveiFVg43pp7x5MWTjMtWQRmQc7iYul19PXsmGnSSOiQQobxdn2UnhHJeKeccCdX5YVgX68tR0R9xv_wxeYQWquH3roxHh2Xr2SU3gdt6s7gxKHrW7Zc4Z9bT-fnz3ijRUiyrs-HQN7DBc356eiZy2wS7O539lx3mr-pjM9PQtcDCDOGsnmwq1YdKw9o2VgbesfiHDDjJQlNv40wnsfpq2q4BgSmdsofAGwSNKWtqUE6kU7K2hvV2FvgwjzcB19bbRYMWxRG0gHyqgFy-uM5tsC6Cib-gPAIWxCdXDmLEiqIdjM3w"
)

// Key is a fresh signing key for tests.
type Key struct {
	Alg     jose.SignatureAlgorithm
	Kid     string
	private crypto.Signer
}

// NewKey makes a key for alg (RS256/384/512, PS256/384/512, ES256/384/512
// or EdDSA) with the given kid ("" for none).
func NewKey(t testing.TB, alg jose.SignatureAlgorithm, kid string) *Key {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.ES384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.ES512:
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("testjwt: unsupported algorithm %s", alg)
	}
	if err != nil {
		t.Fatalf("testjwt: generating %s key: %v", alg, err)
	}
	return &Key{Alg: alg, Kid: kid, private: priv}
}

// Public returns the key's public half.
func (k *Key) Public() crypto.PublicKey { return k.private.Public() }

// JWK returns the public key as a JWK (with kid, alg omitted as most
// identity providers do).
func (k *Key) JWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.private.Public(), KeyID: k.Kid, Use: "sig"}
}

// JWKS renders the public halves of keys as a JWKS document.
func JWKS(t testing.TB, keys ...*Key) string {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.JWK())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatalf("testjwt: JWKS: %v", err)
	}
	return string(b)
}

// Mint signs claims with k. extra header fields (e.g. "crit") are added to
// the protected header; "typ" is JWT.
func (k *Key) Mint(t testing.TB, claims map[string]any, extra map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.Kid != "" {
		opts = opts.WithHeader("kid", k.Kid)
	}
	for name, v := range extra {
		opts = opts.WithHeader(jose.HeaderKey(name), v)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.Alg, Key: k.private}, opts)
	if err != nil {
		t.Fatalf("testjwt: signer: %v", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatalf("testjwt: claims: %v", err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatalf("testjwt: sign: %v", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("testjwt: serialize: %v", err)
	}
	return out
}

// Claims returns the decoded payload of a token, without verifying it.
func Claims(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("token has %d sections", len(parts))
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512,
		jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA})
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &out); err != nil {
		return nil, err
	}
	return out, nil
}
