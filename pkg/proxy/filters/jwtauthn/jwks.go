package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// key is one public key of a provider's JWKS.
type key struct {
	kid, alg string
	kty      string // RSA, EC, OKP
	pub      any
	// esAlg is the only ES* algorithm an EC key's curve signs.
	esAlg string
}

// parseJWKS parses a JWKS document. Unlike Envoy, which accepts a broken
// inline JWKS and then fails every token, a JWKS the proxy cannot use is
// an error, so the update is NACKed and the last good one keeps serving.
// Symmetric ("oct") keys are refused: the proxy verifies asymmetric
// algorithms only.
func parseJWKS(doc string) ([]key, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(doc), &set); err != nil {
		return nil, fmt.Errorf("JWKS is not valid JSON: %w", err)
	}
	if set.Keys == nil {
		return nil, errors.New("JWKS has no [keys]")
	}
	var out []key
	for i, raw := range set.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("JWKS key %d: %w", i, err)
		}
		if !jwk.Valid() {
			return nil, fmt.Errorf("JWKS key %d (kid %q) is not valid", i, jwk.KeyID)
		}
		k := key{kid: jwk.KeyID, alg: jwk.Algorithm}
		switch p := jwk.Key.(type) {
		case *rsa.PublicKey:
			k.kty, k.pub = "RSA", p
			if k.alg != "" && !strings.HasPrefix(k.alg, "RS") && !strings.HasPrefix(k.alg, "PS") {
				return nil, fmt.Errorf("JWKS key %d: [alg] %q is not RS* or PS* for an RSA key", i, k.alg)
			}
		case *ecdsa.PublicKey:
			k.kty, k.pub = "EC", p
			switch p.Curve {
			case elliptic.P256():
				k.esAlg = "ES256"
			case elliptic.P384():
				k.esAlg = "ES384"
			case elliptic.P521():
				k.esAlg = "ES512"
			default:
				return nil, fmt.Errorf("JWKS key %d: unsupported EC curve", i)
			}
			if k.alg != "" && k.alg != k.esAlg {
				return nil, fmt.Errorf("JWKS key %d: [alg] %q does not match its curve (%s)", i, k.alg, k.esAlg)
			}
		case ed25519.PublicKey:
			k.kty, k.pub = "OKP", p
			if k.alg != "" && k.alg != "EdDSA" {
				return nil, fmt.Errorf("JWKS key %d: [alg] %q is not EdDSA for an OKP key", i, k.alg)
			}
		case []byte:
			return nil, fmt.Errorf("JWKS key %d: symmetric (oct) keys are not supported", i)
		default:
			if jwk.IsPublic() {
				return nil, fmt.Errorf("JWKS key %d: unsupported key type %T", i, p)
			}
			return nil, fmt.Errorf("JWKS key %d is a private key; a JWKS carries public keys", i)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("JWKS has no keys")
	}
	return out, nil
}

// verify checks a parsed token's signature against keys, with
// jwt_verify_lib's key selection: a key whose kid differs (when both have
// one) or whose alg differs (when it has one) is skipped; the token's alg
// must suit the key type. The signature itself is checked by go-jose,
// restricted to the token's algorithm.
func verify(t *Token, keys []key) Status {
	if _, unencoded := t.Header["b64"]; unencoded {
		// RFC 7797 unencoded payloads are not JWTs; refuse rather than
		// let the signed bytes differ from the claims read.
		return VerificationFail
	}
	matched := false
	var jws *jose.JSONWebSignature
	for i := range keys {
		k := &keys[i]
		if t.Kid != "" && k.kid != "" && k.kid != t.Kid {
			continue
		}
		if k.alg != "" && k.alg != t.Alg {
			continue
		}
		matched = true
		switch k.kty {
		case "RSA":
			if !strings.HasPrefix(t.Alg, "RS") && !strings.HasPrefix(t.Alg, "PS") {
				continue
			}
		case "EC":
			if t.Alg != k.esAlg {
				continue
			}
		case "OKP":
			if t.Alg != "EdDSA" {
				continue
			}
			if len(t.Signature) != ed25519.SignatureSize {
				return Ed25519SignatureWrongLength
			}
		}
		if jws == nil {
			var err error
			jws, err = jose.ParseSignedCompact(t.Raw, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(t.Alg)})
			if err != nil {
				return VerificationFail
			}
		}
		if _, err := jws.Verify(k.pub); err == nil {
			return OK
		}
	}
	if matched {
		return VerificationFail
	}
	return KidAlgMismatch
}
