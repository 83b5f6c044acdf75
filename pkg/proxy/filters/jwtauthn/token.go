package jwtauthn

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
)

// Token is a parsed (not yet verified) JWT, as jwt_verify_lib's Jwt.
type Token struct {
	Raw        string
	Alg, Kid   string
	Header     map[string]any
	Payload    map[string]any
	PayloadB64 string
	Iss, Sub   string
	Iat        uint64
	Nbf, Exp   uint64
	Audiences  []string
	Signature  []byte
}

// implemented are the algorithms jwt_verify_lib parses; HS* parse but
// never verify here (the proxy has no symmetric keys).
var implemented = map[string]bool{"ES256": true, "ES384": true, "ES512": true, "HS256": true, "HS384": true, "HS512": true,
	"RS256": true, "RS384": true, "RS512": true, "PS256": true, "PS384": true, "PS512": true, "EdDSA": true}

// decodeSegment decodes base64url with or without padding, ignoring
// non-zero trailing bits as absl's WebSafeBase64Unescape does (the seed's
// tampered token differs from the valid one only there, and Envoy reports
// it as a signature failure, not as bad base64).
func decodeSegment(s string) ([]byte, bool) {
	s = strings.TrimRight(s, "=")
	b, err := base64.RawURLEncoding.DecodeString(s)
	return b, err == nil
}

// Parse parses a token with jwt_verify_lib's checks, in its order.
func Parse(raw string) (*Token, Status) {
	// absl::StrSplit(jwt, '.', SkipEmpty()): empty sections do not count.
	var parts [3]string
	n := 0
	for _, p := range strings.Split(raw, ".") {
		if p == "" {
			continue
		}
		if n == 3 {
			return nil, BadFormat
		}
		parts[n] = p
		n++
	}
	if n != 3 {
		return nil, BadFormat
	}
	t := &Token{Raw: raw}
	hb, ok := decodeSegment(parts[0])
	if !ok {
		return nil, HeaderBadBase64
	}
	if err := json.Unmarshal(hb, &t.Header); err != nil || t.Header == nil {
		return nil, HeaderBadJSON
	}
	alg, ok := t.Header["alg"].(string)
	if !ok {
		return nil, HeaderBadAlg
	}
	if !implemented[alg] {
		return nil, HeaderNotImplementedAlg
	}
	t.Alg = alg
	if v, present := t.Header["kid"]; present {
		if t.Kid, ok = v.(string); !ok {
			return nil, HeaderBadKid
		}
	}
	t.PayloadB64 = parts[1]
	pb, ok := decodeSegment(parts[1])
	if !ok {
		return nil, PayloadBadBase64
	}
	if err := json.Unmarshal(pb, &t.Payload); err != nil || t.Payload == nil {
		return nil, PayloadBadJSON
	}
	var st Status
	if t.Iss, st = optString(t.Payload, "iss", IssNotString); st != OK {
		return nil, st
	}
	if t.Sub, st = optString(t.Payload, "sub", SubNotString); st != OK {
		return nil, st
	}
	if t.Iat, st = optUint(t.Payload, "iat", IatNotInteger, IatOutOfRange); st != OK {
		return nil, st
	}
	if t.Nbf, st = optUint(t.Payload, "nbf", NbfNotInteger, NbfOutOfRange); st != OK {
		return nil, st
	}
	if t.Exp, st = optUint(t.Payload, "exp", ExpNotInteger, ExpOutOfRange); st != OK {
		return nil, st
	}
	if _, st = optString(t.Payload, "jti", JtiNotString); st != OK {
		return nil, st
	}
	switch a := t.Payload["aud"].(type) {
	case nil:
		if _, present := t.Payload["aud"]; present {
			return nil, AudNotString
		}
	case string:
		t.Audiences = []string{a}
	case []any:
		for _, v := range a {
			s, ok := v.(string)
			if !ok {
				return nil, AudNotString
			}
			t.Audiences = append(t.Audiences, s)
		}
	default:
		return nil, AudNotString
	}
	if t.Signature, ok = decodeSegment(parts[2]); !ok {
		return nil, SignatureBadBase64
	}
	return t, OK
}

func optString(m map[string]any, name string, wrong Status) (string, Status) {
	v, present := m[name]
	if !present {
		return "", OK
	}
	s, ok := v.(string)
	if !ok {
		return "", wrong
	}
	return s, OK
}

func optUint(m map[string]any, name string, wrong, outOfRange Status) (uint64, Status) {
	v, present := m[name]
	if !present {
		return 0, OK
	}
	f, ok := v.(float64)
	if !ok {
		return 0, wrong
	}
	if f < 0 || f >= math.MaxUint64 || math.IsNaN(f) {
		return 0, outOfRange
	}
	return uint64(f), OK
}

// timeStatus checks nbf and exp against now with a clock skew, as
// jwt_verify_lib's verifyTimeConstraint (without its overflow).
func timeStatus(nbf, exp, now, skew uint64) Status {
	if nbf > now && nbf-now > skew {
		return NotYetValid
	}
	if exp != 0 && now > exp && now-exp > skew {
		return Expired
	}
	return OK
}
