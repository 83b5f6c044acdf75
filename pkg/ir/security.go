package ir

// Security is the end-user authentication and authorization a filter
// chain enforces, resolved from the RequestAuthentications and
// AuthorizationPolicies that apply to it (Istio's attachment rules): JWT
// providers first, then RBAC filters in Istio's order (AUDIT as LOG, DENY,
// ALLOW).
type Security struct {
	// JWT is set on HTTP chains some RequestAuthentication applies to.
	JWT  *JWTAuthn `json:"jwt,omitempty"`
	RBAC []*RBAC   `json:"rbac,omitempty"`
}

// JWTAuthn verifies tokens: a request without one passes, one with a
// token must verify with a provider whose issuer matches (Istio's
// semantics).
type JWTAuthn struct {
	Providers []*JWTProvider `json:"providers"`
}

// JWTProvider is one jwtRule.
type JWTProvider struct {
	// Name is istiod's: origins-<n> in rule order.
	Name      string   `json:"name"`
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences,omitempty"`
	// JWKS is the key set, inline (fetched from jwksUri by the controller,
	// or a key nobody can sign with when that failed).
	JWKS                 string          `json:"jwks"`
	FromHeaders          []JWTHeader     `json:"fromHeaders,omitempty"`
	FromParams           []string        `json:"fromParams,omitempty"`
	FromCookies          []string        `json:"fromCookies,omitempty"`
	Forward              bool            `json:"forward,omitempty"`
	ForwardPayloadHeader string          `json:"forwardPayloadHeader,omitempty"`
	ClaimToHeaders       []ClaimToHeader `json:"claimToHeaders,omitempty"`
	Source               Ref             `json:"source"`
}

// JWTHeader is a header a token is read from, after Prefix.
type JWTHeader struct {
	Name   string `json:"name"`
	Prefix string `json:"prefix,omitempty"`
}

// ClaimToHeader copies a verified claim into a request header.
type ClaimToHeader struct {
	Header string `json:"header"`
	Claim  string `json:"claim"`
}

// RBACAction is Envoy's RBAC action.
type RBACAction string

// Actions, as Envoy names them (Istio's AUDIT is LOG).
const (
	RBACAllow RBACAction = "ALLOW"
	RBACDeny  RBACAction = "DENY"
	RBACLog   RBACAction = "LOG"
)

// RBAC is one RBAC filter: every policy of one action.
type RBAC struct {
	Action RBACAction `json:"action"`
	// Policies sorted by name; an ALLOW filter without policies denies
	// everything (an ALLOW policy exists but nothing can match it).
	Policies []*RBACPolicy `json:"policies,omitempty"`
}

// RBACPolicy is one rule of an AuthorizationPolicy: it matches when one
// permission and one principal match.
type RBACPolicy struct {
	// Name is istiod's: ns[<namespace>]-policy[<name>]-rule[<index>].
	Name        string        `json:"name"`
	Source      Ref           `json:"source"`
	Permissions []*Permission `json:"permissions"`
	Principals  []*Principal  `json:"principals"`
}

// Permission is Envoy's RBAC permission (what is asked for). Exactly one
// field is set.
type Permission struct {
	Any bool          `json:"any,omitempty"`
	And []*Permission `json:"and,omitempty"`
	Or  []*Permission `json:"or,omitempty"`
	Not *Permission   `json:"not,omitempty"`
	// Header matches a request header (":authority", ":method").
	Header *HeaderMatch `json:"header,omitempty"`
	// Path matches the path without query.
	Path *StringMatch `json:"path,omitempty"`
	// PathTemplate is Envoy's uri_template form of Istio's {*} and {**}.
	PathTemplate    string       `json:"pathTemplate,omitempty"`
	DestinationPort uint32       `json:"destinationPort,omitempty"`
	DestinationIP   string       `json:"destinationIP,omitempty"`
	ServerName      *StringMatch `json:"serverName,omitempty"`
}

// Principal is Envoy's RBAC principal (who asks). Exactly one field is set.
type Principal struct {
	Any bool         `json:"any,omitempty"`
	And []*Principal `json:"and,omitempty"`
	Or  []*Principal `json:"or,omitempty"`
	Not *Principal   `json:"not,omitempty"`
	// Authenticated matches the client certificate's identity.
	Authenticated *StringMatch `json:"authenticated,omitempty"`
	// DirectRemoteIP is the peer address (CIDR); RemoteIP the client
	// address from X-Forwarded-For.
	DirectRemoteIP string         `json:"directRemoteIP,omitempty"`
	RemoteIP       string         `json:"remoteIP,omitempty"`
	Header         *HeaderMatch   `json:"header,omitempty"`
	Metadata       *MetadataMatch `json:"metadata,omitempty"`
}

// MetadataMatch matches dynamic metadata: JWT claims as jwt_authn stores
// them (filter envoy.filters.http.jwt_authn, path [issuer, claim, ...]).
type MetadataMatch struct {
	Filter string   `json:"filter"`
	Path   []string `json:"path"`
	// Value is compared with a string value, or, with OrList, with a
	// string value or any string of a list value (a claim "matches" a
	// list claim containing it, as in Istio).
	Value  StringMatch `json:"value"`
	OrList bool        `json:"orList,omitempty"`
}

// LocalRateLimit is a token bucket shared by every connection of a proxy.
type LocalRateLimit struct {
	MaxTokens     uint32   `json:"maxTokens"`
	TokensPerFill uint32   `json:"tokensPerFill"`
	FillInterval  Duration `json:"fillInterval"`
	Source        Ref      `json:"source"`
}
