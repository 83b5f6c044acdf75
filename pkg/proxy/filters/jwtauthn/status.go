package jwtauthn

// Status is a verification outcome, with jwt_verify_lib's texts (Envoy
// answers a failed request with the text as its body).
type Status int

// Statuses Envoy's jwt_authn filter can answer with.
const (
	OK Status = iota
	Missing
	NotYetValid
	Expired
	BadFormat
	HeaderBadBase64
	HeaderBadJSON
	HeaderBadAlg
	HeaderNotImplementedAlg
	HeaderBadKid
	PayloadBadBase64
	PayloadBadJSON
	IssNotString
	SubNotString
	IatNotInteger
	IatOutOfRange
	NbfNotInteger
	NbfOutOfRange
	ExpNotInteger
	ExpOutOfRange
	JtiNotString
	AudNotString
	SignatureBadBase64
	UnknownIssuer
	AudienceNotAllowed
	VerificationFail
	KidAlgMismatch
	Ed25519SignatureWrongLength
)

var statusText = [...]string{
	OK:                          "OK",
	Missing:                     "Jwt is missing",
	NotYetValid:                 "Jwt not yet valid",
	Expired:                     "Jwt is expired",
	BadFormat:                   "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
	HeaderBadBase64:             "Jwt header is an invalid Base64url encoded",
	HeaderBadJSON:               "Jwt header is an invalid JSON",
	HeaderBadAlg:                "Jwt header [alg] field is required and must be a string",
	HeaderNotImplementedAlg:     "Jwt header [alg] is not supported",
	HeaderBadKid:                "Jwt header [kid] field is not a string",
	PayloadBadBase64:            "Jwt payload is an invalid Base64url encoded",
	PayloadBadJSON:              "Jwt payload is an invalid JSON",
	IssNotString:                "Jwt payload [iss] field is not a string",
	SubNotString:                "Jwt payload [sub] field is not a string",
	IatNotInteger:               "Jwt payload [iat] field is not an integer",
	IatOutOfRange:               "Jwt payload [iat] field is not a positive 64 bit integer",
	NbfNotInteger:               "Jwt payload [nbf] field is not an integer",
	NbfOutOfRange:               "Jwt payload [nbf] field is not a positive 64 bit integer",
	ExpNotInteger:               "Jwt payload [exp] field is not an integer",
	ExpOutOfRange:               "Jwt payload [exp] field is not a positive 64 bit integer",
	JtiNotString:                "Jwt payload [jti] field is not a string",
	AudNotString:                "Jwt payload [aud] field is not a string or string list",
	SignatureBadBase64:          "Jwt signature is an invalid Base64url encoded",
	UnknownIssuer:               "Jwt issuer is not configured",
	AudienceNotAllowed:          "Audiences in Jwt are not allowed",
	VerificationFail:            "Jwt verification fails",
	KidAlgMismatch:              "Jwks doesn't have key to match kid or alg from Jwt",
	Ed25519SignatureWrongLength: "Jwt ED25519 signature is wrong length",
}

func (s Status) String() string {
	if s >= 0 && int(s) < len(statusText) {
		return statusText[s]
	}
	return "unknown"
}
