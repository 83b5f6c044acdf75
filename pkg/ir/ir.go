// Package ir is the intermediate representation between binding
// (pkg/gateway) and Envoy translation (pkg/translate): plain Go values that
// marshal to YAML, one Proxy per class of gateway workloads. It says what a
// proxy must do, already resolved (hosts intersected, short names expanded,
// policies merged), so translation is a pure, mechanical step.
package ir

import (
	"fmt"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Duration marshals as "5s".
type Duration = metav1.Duration

// Ref names the resource a piece of configuration came from. It marshals as
// "Kind/namespace/name" so golden files and debug output stay readable.
type Ref struct {
	Kind      string
	Namespace string
	Name      string
}

func (r Ref) String() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

// MarshalText implements encoding.TextMarshaler.
func (r Ref) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *Ref) UnmarshalText(b []byte) error {
	parts := strings.SplitN(string(b), "/", 3)
	if len(parts) != 3 {
		return fmt.Errorf("invalid ref %q: want Kind/namespace/name", b)
	}
	r.Kind, r.Namespace, r.Name = parts[0], parts[1], parts[2]
	return nil
}

// ConfigPath is Istio's spelling of a config reference, used in Envoy
// metadata (filter_metadata.istio.config) so tools written for Istio work.
func (r Ref) ConfigPath() string {
	kind := map[string]string{
		"Gateway":         "gateway",
		"VirtualService":  "virtual-service",
		"DestinationRule": "destination-rule",
		"ServiceEntry":    "service-entry",
		"Service":         "service",
		"Secret":          "secret",
	}[r.Kind]
	group := "networking.istio.io/v1"
	if r.Kind == "Service" || r.Kind == "Secret" {
		group = "v1"
	}
	if kind == "" {
		kind = strings.ToLower(r.Kind)
	}
	return "/apis/" + group + "/namespaces/" + r.Namespace + "/" + kind + "/" + r.Name
}

// Proxy is everything one class of gateway workloads (proxies sharing the
// same labels) must serve.
type Proxy struct {
	// Name identifies the class: its labels, sorted, as "k=v,k=v".
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	// Gateways that select this class, as namespace/name, oldest first.
	Gateways     []string       `json:"gateways,omitempty"`
	Listeners    []*Listener    `json:"listeners,omitempty"`
	RouteConfigs []*RouteConfig `json:"routeConfigs,omitempty"`
	Clusters     []*Cluster     `json:"clusters,omitempty"`
	Secrets      []*Secret      `json:"secrets,omitempty"`
}

// Listener is one bound address:port.
type Listener struct {
	Name         string         `json:"name"`
	Address      string         `json:"address"`
	Port         uint32         `json:"port"`
	FilterChains []*FilterChain `json:"filterChains"`
	Sources      []Ref          `json:"sources,omitempty"`
}

// NeedsTLSInspector reports whether the listener must read the ClientHello
// before it can choose a filter chain.
func (l *Listener) NeedsTLSInspector() bool {
	for _, fc := range l.FilterChains {
		if len(fc.ServerNames) > 0 || fc.TLS != nil {
			return true
		}
	}
	return false
}

// FilterChain is one way a connection on a listener is handled. Chains are
// chosen by SNI (ServerNames); a chain without ServerNames is the default.
type FilterChain struct {
	Name        string         `json:"name"`
	ServerNames []string       `json:"serverNames,omitempty"`
	TLS         *DownstreamTLS `json:"tls,omitempty"`
	// Exactly one of HTTP and TCP is set.
	HTTP *HTTPFilter `json:"http,omitempty"`
	TCP  *TCPFilter  `json:"tcp,omitempty"`
	// Security is the authentication and authorization the chain
	// enforces (JWT only on HTTP chains; RBAC on both).
	Security *Security `json:"security,omitempty"`
	Sources  []Ref     `json:"sources,omitempty"`
}

// TLSMode is how TLS is terminated for a filter chain.
type TLSMode string

// TLS modes, spelled as in Istio.
const (
	TLSSimple         TLSMode = "SIMPLE"
	TLSMutual         TLSMode = "MUTUAL"
	TLSOptionalMutual TLSMode = "OPTIONAL_MUTUAL"
)

// DownstreamTLS terminates TLS on a filter chain.
type DownstreamTLS struct {
	Mode TLSMode `json:"mode"`
	// CertificateSecrets are SDS names of the certificate/key pairs
	// (more than one when RSA and ECDSA certificates are served together).
	CertificateSecrets []string `json:"certificateSecrets"`
	// ValidationSecret is the SDS name of the CA bundle clients are verified
	// against (MUTUAL, OPTIONAL_MUTUAL).
	ValidationSecret string   `json:"validationSecret,omitempty"`
	SubjectAltNames  []string `json:"subjectAltNames,omitempty"`
	// MinVersion / MaxVersion are Envoy's names: TLSv1_0 … TLSv1_3.
	MinVersion   string   `json:"minVersion,omitempty"`
	MaxVersion   string   `json:"maxVersion,omitempty"`
	CipherSuites []string `json:"cipherSuites,omitempty"`
	ALPN         []string `json:"alpn,omitempty"`
}

// HTTPFilter is an HTTP connection manager using a route configuration.
type HTTPFilter struct {
	RouteConfig string `json:"routeConfig"`
	StatPrefix  string `json:"statPrefix"`
	// ForwardClientCert is set on TLS chains: Istio sanitises and sets XFCC.
	ForwardClientCert bool `json:"forwardClientCert,omitempty"`
	// LocalRateLimit is set when some virtual host or route of the route
	// configuration is rate limited: the filter must be in the chain.
	LocalRateLimit bool `json:"localRateLimit,omitempty"`
}

// TCPFilter proxies a connection's bytes to weighted clusters.
type TCPFilter struct {
	StatPrefix  string            `json:"statPrefix"`
	Clusters    []WeightedCluster `json:"clusters"`
	Source      Ref               `json:"source"`
	IdleTimeout *Duration         `json:"idleTimeout,omitempty"`
}

// InvalidBackendCluster is the name of a destination that no cluster
// has: the share of traffic a route sends to it is answered with 500.
// Gateway API requires that share for a backendRef that does not
// resolve, while the rule's valid backends keep their own shares.
const InvalidBackendCluster = "portico~invalid-backend"

// WeightedCluster is a destination with a share of the traffic.
type WeightedCluster struct {
	Name   string `json:"name"`
	Weight uint32 `json:"weight"`
	// Header operations applied only when this destination is chosen.
	RequestHeaders  *HeaderOps `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderOps `json:"responseHeaders,omitempty"`
}

// RouteConfig is a set of virtual hosts served by one or more filter chains.
type RouteConfig struct {
	Name         string         `json:"name"`
	VirtualHosts []*VirtualHost `json:"virtualHosts,omitempty"`
}

// VirtualHost groups routes by the Host header.
type VirtualHost struct {
	Name    string   `json:"name"`
	Domains []string `json:"domains"`
	// RequireTLS redirects plain-text requests to https (httpsRedirect).
	RequireTLS bool     `json:"requireTLS,omitempty"`
	Routes     []*Route `json:"routes,omitempty"`
	// LocalRateLimit limits the host's requests (a route's own limit
	// replaces it).
	LocalRateLimit *LocalRateLimit `json:"localRateLimit,omitempty"`
	Sources        []Ref           `json:"sources,omitempty"`
}

// Route is one match and what to do with the requests it matches.
type Route struct {
	Name   string `json:"name"`
	Source Ref    `json:"source"`
	Match  Match  `json:"match"`
	// Exactly one of Forward, Redirect, DirectResponse is set.
	Forward        *Forward        `json:"forward,omitempty"`
	Redirect       *Redirect       `json:"redirect,omitempty"`
	DirectResponse *DirectResponse `json:"directResponse,omitempty"`

	RequestHeaders  *HeaderOps `json:"requestHeaders,omitempty"`
	ResponseHeaders *HeaderOps `json:"responseHeaders,omitempty"`
	Fault           *Fault     `json:"fault,omitempty"`
	CORS            *CORS      `json:"cors,omitempty"`
	// LocalRateLimit limits the route's requests.
	LocalRateLimit *LocalRateLimit `json:"localRateLimit,omitempty"`
}

// MatchType is how a string is compared.
type MatchType string

// String match types.
const (
	MatchExact   MatchType = "Exact"
	MatchPrefix  MatchType = "Prefix"
	MatchRegex   MatchType = "Regex"
	MatchPresent MatchType = "Present"
	MatchSuffix  MatchType = "Suffix"
)

// StringMatch compares a string.
type StringMatch struct {
	Type  MatchType `json:"type"`
	Value string    `json:"value,omitempty"`
	// IgnoreCase is used by authorization matches (hosts).
	IgnoreCase bool `json:"ignoreCase,omitempty"`
}

// Match selects requests. All parts must match.
type Match struct {
	Path        *StringMatch  `json:"path,omitempty"`
	IgnoreCase  bool          `json:"ignoreCase,omitempty"`
	Headers     []HeaderMatch `json:"headers,omitempty"`
	QueryParams []HeaderMatch `json:"queryParams,omitempty"`
}

// HeaderMatch matches one header (or query parameter). Pseudo-headers
// (":method", ":authority", ":scheme") carry Istio's method, authority and
// scheme matches.
type HeaderMatch struct {
	Name   string      `json:"name"`
	Match  StringMatch `json:"match"`
	Invert bool        `json:"invert,omitempty"`
}

// Forward sends matched requests upstream.
type Forward struct {
	Clusters []WeightedCluster `json:"clusters"`
	// Timeout is the whole-request timeout; zero disables it (Istio's
	// default for gateway routes).
	Timeout    *Duration    `json:"timeout,omitempty"`
	Retry      *Retry       `json:"retry,omitempty"`
	Mirrors    []Mirror     `json:"mirrors,omitempty"`
	Rewrite    *Rewrite     `json:"rewrite,omitempty"`
	HashPolicy []HashPolicy `json:"hashPolicy,omitempty"`
}

// Retry is a route's retry policy.
type Retry struct {
	Attempts             uint32    `json:"attempts"`
	PerTryTimeout        *Duration `json:"perTryTimeout,omitempty"`
	RetryOn              []string  `json:"retryOn,omitempty"`
	RetriableStatusCodes []uint32  `json:"retriableStatusCodes,omitempty"`
	// RetryPreviousHosts avoids retrying on a host that already failed.
	RetryPreviousHosts bool      `json:"retryPreviousHosts,omitempty"`
	Backoff            *Duration `json:"backoff,omitempty"`
}

// Mirror copies a share of requests to another cluster.
type Mirror struct {
	Cluster string  `json:"cluster"`
	Percent float64 `json:"percent"`
}

// Rewrite changes the request before it goes upstream.
type Rewrite struct {
	// PathPrefix replaces the matched prefix (or the whole path for an
	// exact match).
	PathPrefix string        `json:"pathPrefix,omitempty"`
	PathRegex  *RegexRewrite `json:"pathRegex,omitempty"`
	Authority  string        `json:"authority,omitempty"`
}

// RegexRewrite replaces every match of Pattern with Substitution.
type RegexRewrite struct {
	Pattern      string `json:"pattern"`
	Substitution string `json:"substitution"`
}

// HashPolicy is how a consistent-hash key is computed.
type HashPolicy struct {
	Header     string      `json:"header,omitempty"`
	Cookie     *HashCookie `json:"cookie,omitempty"`
	SourceIP   bool        `json:"sourceIP,omitempty"`
	QueryParam string      `json:"queryParam,omitempty"`
}

// HashCookie hashes on a cookie, generating it when TTL is set.
type HashCookie struct {
	Name string    `json:"name"`
	Path string    `json:"path,omitempty"`
	TTL  *Duration `json:"ttl,omitempty"`
}

// Redirect answers with a redirect.
type Redirect struct {
	Scheme     string `json:"scheme,omitempty"`
	Host       string `json:"host,omitempty"`
	Port       uint32 `json:"port,omitempty"`
	Path       string `json:"path,omitempty"`
	PathPrefix string `json:"pathPrefix,omitempty"`
	// Code is 301 (default), 302, 303, 307 or 308.
	Code uint32 `json:"code"`
}

// DirectResponse answers without going upstream.
type DirectResponse struct {
	Status uint32 `json:"status"`
	Body   string `json:"body,omitempty"`
}

// Header is one name/value pair.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HeaderOps sets, appends and removes headers.
type HeaderOps struct {
	Set    []Header `json:"set,omitempty"`
	Add    []Header `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// Empty reports whether the operations do nothing.
func (h *HeaderOps) Empty() bool {
	return h == nil || len(h.Set) == 0 && len(h.Add) == 0 && len(h.Remove) == 0
}

// Fault injects delays and aborts.
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay delays a share of requests.
type FaultDelay struct {
	Fixed   Duration `json:"fixed"`
	Percent float64  `json:"percent"`
}

// FaultAbort fails a share of requests.
type FaultAbort struct {
	HTTPStatus uint32  `json:"httpStatus,omitempty"`
	GRPCStatus uint32  `json:"grpcStatus,omitempty"`
	Percent    float64 `json:"percent"`
}

// CORS is a route's cross-origin policy.
type CORS struct {
	AllowOrigins     []StringMatch `json:"allowOrigins,omitempty"`
	AllowMethods     []string      `json:"allowMethods,omitempty"`
	AllowHeaders     []string      `json:"allowHeaders,omitempty"`
	ExposeHeaders    []string      `json:"exposeHeaders,omitempty"`
	MaxAge           *Duration     `json:"maxAge,omitempty"`
	AllowCredentials bool          `json:"allowCredentials,omitempty"`
	// ForwardUnmatchedPreflights passes preflights that match no origin
	// upstream instead of answering them.
	ForwardUnmatchedPreflights bool `json:"forwardUnmatchedPreflights,omitempty"`
}

// Discovery is how a cluster finds its endpoints.
type Discovery string

// Cluster discovery types (Envoy's names).
const (
	DiscoveryEDS       Discovery = "EDS"
	DiscoveryStrictDNS Discovery = "STRICT_DNS"
)

// Cluster is an upstream: one service port, optionally one subset.
type Cluster struct {
	// Name follows Istio: outbound|<port>|<subset>|<fqdn>.
	Name      string     `json:"name"`
	Service   string     `json:"service"`
	Port      uint32     `json:"port"`
	Subset    string     `json:"subset,omitempty"`
	Discovery Discovery  `json:"discovery"`
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// Protocol is the upstream protocol: HTTP (1.1), HTTP2 or TCP.
	Protocol       string            `json:"protocol,omitempty"`
	ConnectTimeout Duration          `json:"connectTimeout"`
	LoadBalancer   *LoadBalancer     `json:"loadBalancer,omitempty"`
	Limits         *ConnectionLimits `json:"limits,omitempty"`
	Outlier        *OutlierDetection `json:"outlierDetection,omitempty"`
	TLS            *UpstreamTLS      `json:"tls,omitempty"`
	TCPKeepalive   *TCPKeepalive     `json:"tcpKeepalive,omitempty"`
	Sources        []Ref             `json:"sources,omitempty"`
}

// Endpoint is one upstream address.
type Endpoint struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	Weight  uint32 `json:"weight,omitempty"`
	// Labels are carried so config_dump shows why an endpoint is in a subset.
	Labels map[string]string `json:"labels,omitempty"`
}

// LoadBalancer is a cluster's balancing policy.
type LoadBalancer struct {
	// Policy is ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV.
	Policy string `json:"policy"`
	// RingSize is the minimum ring size (RING_HASH) or table size (MAGLEV).
	RingSize uint64 `json:"ringSize,omitempty"`
}

// ConnectionLimits are circuit-breaker thresholds; zero means unlimited.
type ConnectionLimits struct {
	MaxConnections           uint32    `json:"maxConnections,omitempty"`
	MaxPendingRequests       uint32    `json:"maxPendingRequests,omitempty"`
	MaxRequests              uint32    `json:"maxRequests,omitempty"`
	MaxRetries               uint32    `json:"maxRetries,omitempty"`
	MaxRequestsPerConnection uint32    `json:"maxRequestsPerConnection,omitempty"`
	IdleTimeout              *Duration `json:"idleTimeout,omitempty"`
	MaxConnectionDuration    *Duration `json:"maxConnectionDuration,omitempty"`
}

// OutlierDetection ejects failing endpoints.
type OutlierDetection struct {
	Consecutive5xx        *uint32   `json:"consecutive5xx,omitempty"`
	ConsecutiveGateway    *uint32   `json:"consecutiveGatewayErrors,omitempty"`
	ConsecutiveLocal      *uint32   `json:"consecutiveLocalOriginFailures,omitempty"`
	Interval              *Duration `json:"interval,omitempty"`
	BaseEjectionTime      *Duration `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent    uint32    `json:"maxEjectionPercent"`
	MinHealthPercent      uint32    `json:"minHealthPercent,omitempty"`
	SplitExternalLocalErr bool      `json:"splitExternalLocalOriginErrors,omitempty"`
}

// TCPKeepalive sets keepalive probes on upstream connections.
type TCPKeepalive struct {
	Probes   uint32    `json:"probes,omitempty"`
	Time     *Duration `json:"time,omitempty"`
	Interval *Duration `json:"interval,omitempty"`
}

// UpstreamTLS originates TLS to the upstream.
type UpstreamTLS struct {
	Mode               TLSMode  `json:"mode"`
	SNI                string   `json:"sni,omitempty"`
	CertificateSecret  string   `json:"certificateSecret,omitempty"`
	ValidationSecret   string   `json:"validationSecret,omitempty"`
	SubjectAltNames    []string `json:"subjectAltNames,omitempty"`
	InsecureSkipVerify bool     `json:"insecureSkipVerify,omitempty"`
	ALPN               []string `json:"alpn,omitempty"`
}

// Secret is certificate material, named as Envoy's SDS resource.
type Secret struct {
	Name string `json:"name"`
	// Exactly one of File and Inline is set.
	File    *FileSecret   `json:"file,omitempty"`
	Inline  *InlineSecret `json:"inline,omitempty"`
	Sources []Ref         `json:"sources,omitempty"`
	// GrantedTo is set for a Secret of another namespace that a Gateway
	// API listener names under a ReferenceGrant: the Gateway's namespace,
	// whose proxies may then receive it as if it were their own (Istio's
	// SDS rule honours ReferenceGrants the same way).
	GrantedTo string `json:"grantedTo,omitempty"`
}

// FileSecret is material the proxy reads from its own filesystem and
// watches (mounted Kubernetes secrets, Istio's file-cert paths).
type FileSecret struct {
	CertificateChain string `json:"certificateChain,omitempty"`
	PrivateKey       string `json:"privateKey,omitempty"`
	TrustedCA        string `json:"trustedCA,omitempty"`
	// WatchedDirectory is where a kubelet-style "..data" swap happens.
	WatchedDirectory string `json:"watchedDirectory,omitempty"`
}

// InlineSecret is material the controller read from a Kubernetes Secret.
type InlineSecret struct {
	CertificateChain []byte `json:"certificateChain,omitempty"`
	PrivateKey       []byte `json:"privateKey,omitempty"`
	TrustedCA        []byte `json:"trustedCA,omitempty"`
}

// ClusterName is Istio's cluster name for a service port and subset.
func ClusterName(port uint32, subset, fqdn string) string {
	// Built by hand: it is computed for every route of every build.
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "|" + subset + "|" + fqdn
}

// ListenerName is Istio's gateway listener name.
func ListenerName(address string, port uint32) string {
	return fmt.Sprintf("%s_%d", address, port)
}

// HTTPRouteName is the route configuration shared by plain-text HTTP
// servers on a port.
func HTTPRouteName(port uint32) string { return fmt.Sprintf("http.%d", port) }

// HTTPSRouteName is the route configuration of one terminated HTTPS server.
func HTTPSRouteName(port uint32, portName, gateway, namespace string) string {
	return fmt.Sprintf("https.%d.%s.%s.%s", port, portName, gateway, namespace)
}

// VirtualHostName is Istio's virtual host name.
func VirtualHostName(host string, port uint32) string {
	return host + ":" + strconv.FormatUint(uint64(port), 10)
}

// FileCertSecretName is Istio's SDS name for a file certificate pair.
func FileCertSecretName(cert, key string) string { return "file-cert:" + cert + "~" + key }

// FileRootSecretName is Istio's SDS name for a file CA bundle.
func FileRootSecretName(ca string) string { return "file-root:" + ca }

// KubernetesSecretName is Istio's SDS name for a credentialName.
func KubernetesSecretName(name string) string { return "kubernetes://" + name }
