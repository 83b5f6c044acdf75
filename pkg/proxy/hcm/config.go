// Package hcm is the proxy's HTTP connection manager: it serves HTTP/1.1
// and HTTP/2 connections and runs each request through Envoy's pipeline for
// an edge proxy: forwarding headers, path normalisation, route lookup,
// fault injection, CORS and the router (weighted clusters, retries,
// timeouts, mirrors, rewrites), with Envoy's local replies, response flags,
// stats and access log.
package hcm

import (
	"fmt"
	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/istiometrics"
	statspb "istio.io/api/envoy/extensions/stats"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/filters/jwtauthn"
	"github.com/portico-gateway/portico/pkg/proxy/filters/ratelimit"
	"github.com/portico-gateway/portico/pkg/proxy/filters/rbac"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/tracing"
)

// ForwardClientCert modes (Envoy's forward_client_cert_details).
const (
	XFCCSanitize = iota
	XFCCForwardOnly
	XFCCAppendForward
	XFCCSanitizeSet
	XFCCAlwaysForwardOnly
)

// What to do with a request header whose name holds an underscore
// (Envoy's headers_with_underscores_action).
const (
	UnderscoresAllow = iota
	UnderscoresReject
	UnderscoresDrop
)

// What to do with %2F, %2f, %5C and %5c in a path (Envoy's
// path_with_escaped_slashes_action).
const (
	EscapedSlashesKeep = iota
	EscapedSlashesReject
	EscapedSlashesUnescapeAndRedirect
	EscapedSlashesUnescapeAndForward
)

// Envoy's defaults for what an HttpConnectionManager leaves unset, where
// they are safe at an edge. (Envoy's HTTP/2 windows default to 256 MiB,
// which lets one client pin that much memory per connection; the proxy
// uses the values of Envoy's edge best practices instead.)
const (
	DefaultStreamIdleTimeout       = 5 * time.Minute
	DefaultIdleTimeout             = time.Hour
	DefaultMaxConcurrentStreams    = 100
	DefaultInitialStreamWindow     = 64 << 10
	DefaultInitialConnectionWindow = 1 << 20
	// DefaultBufferLimit is Envoy's per_connection_buffer_limit_bytes
	// default; pkg/translate emits 32 KiB, as Envoy's edge guide does.
	DefaultBufferLimit = 1 << 20
)

// HTTP2 are the HTTP/2 protocol options the proxy honours.
type HTTP2 struct {
	MaxConcurrentStreams    uint32
	InitialStreamWindow     uint32
	InitialConnectionWindow uint32
}

// Config is a compiled HttpConnectionManager.
type Config struct {
	StatPrefix       string
	RouteConfig      string
	UseRemoteAddress bool
	XFFTrustedHops   int
	NormalizePath    bool
	// MergeSlashes collapses runs of '/' in the path.
	MergeSlashes bool
	// EscapedSlashes is one of the EscapedSlashes* actions.
	EscapedSlashes   int
	StripAnyHostPort bool
	ServerName       string
	// AccessLogs are the compiled access_log entries (none: no logging).
	AccessLogs     []accesslog.Target
	logRespHeaders []string // response headers the formats read
	// IstioStats are a Telemetry's metrics overrides (the istio.stats
	// filter); nil: none.
	IstioStats        *istiometrics.Overrides
	ForwardClientCert int
	CertSubject       bool
	CertDNS           bool
	CertURI           bool
	GenerateRequestID bool
	// Fault is the filter-level fault, applying to routes without their own.
	Fault   *router.Fault
	HasCORS bool
	// Steps are the HTTP filters before the router, in configured order.
	Steps []Step
	// ListenerPort is the port the listener is configured with (set by
	// the listener): rbac's destination_port matches it, whatever port
	// the socket was remapped to.
	ListenerPort uint32

	// RequestHeadersTimeout bounds receiving a request head, from its
	// first byte (0: none). StreamIdleTimeout ends a request on which
	// nothing moved in either direction that long; IdleTimeout closes a
	// connection without requests that long.
	RequestHeadersTimeout time.Duration
	StreamIdleTimeout     time.Duration
	IdleTimeout           time.Duration
	// Limits bound request heads (max_request_headers_kb, max_headers_count).
	Limits httpx.Limits
	HTTP2  HTTP2
	// Underscores is one of the Underscores* actions.
	Underscores int
	// WebSocket: upgrade_configs enables the websocket upgrade.
	WebSocket bool
	// BufferLimit is the listener's per_connection_buffer_limit_bytes: the
	// most of a request body held in memory (for retries and mirrors).
	BufferLimit int
	// Tracing is the compiled tracing block (nil: requests are not
	// traced and propagation headers pass untouched).
	Tracing *tracing.Config
}

// Step kinds.
const (
	// StepFilter runs a filters.HTTP (jwt_authn, rbac, local_ratelimit).
	StepFilter = iota
	// StepFault and StepCORS are the connection manager's own fault and
	// CORS handling, run where the configuration lists them.
	StepFault
	StepCORS
)

// Step is one HTTP filter before the router.
type Step struct {
	Kind    int
	Factory filters.HTTPFactory // StepFilter only
}

// Compile converts an HttpConnectionManager. Its http_filters are any
// sequence of jwt_authn, rbac, local_ratelimit, fault and cors, then the
// router; they run in that order.
func Compile(m *hcmv3.HttpConnectionManager) (*Config, error) {
	cfg := &Config{
		StatPrefix:        m.StatPrefix,
		UseRemoteAddress:  m.GetUseRemoteAddress().GetValue(),
		XFFTrustedHops:    int(m.XffNumTrustedHops),
		NormalizePath:     m.GetNormalizePath().GetValue(),
		StripAnyHostPort:  m.GetStripAnyHostPort(),
		ServerName:        m.ServerName,
		ForwardClientCert: int(m.ForwardClientCertDetails),
		GenerateRequestID: m.GenerateRequestId == nil || m.GenerateRequestId.Value,
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "envoy"
	}
	cfg.MergeSlashes = m.MergeSlashes
	switch m.PathWithEscapedSlashesAction {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
		cfg.EscapedSlashes = EscapedSlashesKeep
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		cfg.EscapedSlashes = EscapedSlashesReject
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
		cfg.EscapedSlashes = EscapedSlashesUnescapeAndRedirect
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		cfg.EscapedSlashes = EscapedSlashesUnescapeAndForward
	default:
		return nil, fmt.Errorf("unsupported path_with_escaped_slashes_action %v", m.PathWithEscapedSlashesAction)
	}
	cfg.RequestHeadersTimeout = m.GetRequestHeadersTimeout().AsDuration()
	cfg.StreamIdleTimeout = DefaultStreamIdleTimeout
	if m.StreamIdleTimeout != nil {
		cfg.StreamIdleTimeout = m.StreamIdleTimeout.AsDuration() // 0 disables, as in Envoy
	}
	cfg.IdleTimeout = DefaultIdleTimeout
	cfg.Limits = httpx.DefaultLimits
	cfg.Underscores = UnderscoresAllow
	if o := m.CommonHttpProtocolOptions; o != nil {
		if o.IdleTimeout != nil {
			cfg.IdleTimeout = o.IdleTimeout.AsDuration()
		}
		if o.MaxHeadersCount != nil {
			cfg.Limits.MaxHeaders = int(o.MaxHeadersCount.Value)
		}
		switch o.HeadersWithUnderscoresAction {
		case corev3.HttpProtocolOptions_ALLOW:
		case corev3.HttpProtocolOptions_REJECT_REQUEST:
			cfg.Underscores = UnderscoresReject
		case corev3.HttpProtocolOptions_DROP_HEADER:
			cfg.Underscores = UnderscoresDrop
		default:
			return nil, fmt.Errorf("unsupported headers_with_underscores_action %v", o.HeadersWithUnderscoresAction)
		}
	}
	if m.MaxRequestHeadersKb != nil {
		cfg.Limits.MaxHeaderBytes = int(m.MaxRequestHeadersKb.Value) << 10
	}
	cfg.HTTP2 = HTTP2{MaxConcurrentStreams: DefaultMaxConcurrentStreams, InitialStreamWindow: DefaultInitialStreamWindow,
		InitialConnectionWindow: DefaultInitialConnectionWindow}
	if o := m.Http2ProtocolOptions; o != nil {
		if o.MaxConcurrentStreams != nil {
			cfg.HTTP2.MaxConcurrentStreams = o.MaxConcurrentStreams.Value
		}
		if o.InitialStreamWindowSize != nil {
			cfg.HTTP2.InitialStreamWindow = o.InitialStreamWindowSize.Value
		}
		if o.InitialConnectionWindowSize != nil {
			cfg.HTTP2.InitialConnectionWindow = o.InitialConnectionWindowSize.Value
		}
	}
	cfg.BufferLimit = DefaultBufferLimit
	if d := m.SetCurrentClientCertDetails; d != nil {
		cfg.CertSubject, cfg.CertDNS, cfg.CertURI = d.GetSubject().GetValue(), d.Dns, d.Uri
	}
	for _, u := range m.UpgradeConfigs {
		if !strings.EqualFold(u.UpgradeType, "websocket") {
			return nil, fmt.Errorf("upgrade_configs: unsupported upgrade_type %q (only websocket)", u.UpgradeType)
		}
		if len(u.Filters) > 0 {
			return nil, fmt.Errorf("upgrade_configs: filters are not supported")
		}
		if u.Enabled == nil || u.Enabled.Value {
			cfg.WebSocket = true
		}
	}
	rds := m.GetRds()
	if rds == nil {
		return nil, fmt.Errorf("http connection manager %s: only RDS route configurations are supported", m.StatPrefix)
	}
	cfg.RouteConfig = rds.RouteConfigName
	logs, err := accesslog.FromEnvoy(m.AccessLog)
	if err != nil {
		return nil, fmt.Errorf("http connection manager %s: %w", m.StatPrefix, err)
	}
	cfg.AccessLogs = logs
	if cfg.Tracing, err = tracing.Compile(m.Tracing); err != nil {
		return nil, fmt.Errorf("http connection manager %s: %w", m.StatPrefix, err)
	}
	for _, t := range logs {
		cfg.logRespHeaders = append(cfg.logRespHeaders, t.RespHeaders...)
	}
	sawRouter, sawFault := false, false
	for i, f := range m.HttpFilters {
		if sawRouter {
			return nil, fmt.Errorf("http filter %q after the router", f.Name)
		}
		var fac filters.HTTPFactory
		switch f.Name {
		case router.FaultFilter:
			fc := &faultv3.HTTPFault{}
			if err := f.GetTypedConfig().UnmarshalTo(fc); err != nil {
				return nil, fmt.Errorf("fault filter: %w", err)
			}
			cfg.Fault = router.CompileFault(fc) // nil when it injects nothing
			cfg.Steps = append(cfg.Steps, Step{Kind: StepFault})
			sawFault = true
		case router.CORSFilter:
			cfg.HasCORS = true
			cfg.Steps = append(cfg.Steps, Step{Kind: StepCORS})
		case istiometrics.FilterName:
			m := &statspb.PluginConfig{}
			if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
				return nil, fmt.Errorf("%s filter: %w", istiometrics.FilterName, err)
			}
			o, err := istiometrics.FromPluginConfig(m)
			if err != nil {
				return nil, err
			}
			cfg.IstioStats = o
		case jwtauthn.Name:
			m := &jwtv3.JwtAuthentication{}
			if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
				return nil, fmt.Errorf("jwt_authn filter: %w", err)
			}
			c, err := jwtauthn.Compile(m)
			if err != nil {
				return nil, err
			}
			fac = c
		case rbac.HTTPName:
			m := &httprbacv3.RBAC{}
			if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
				return nil, fmt.Errorf("rbac filter: %w", err)
			}
			c, err := rbac.CompileHTTP(m)
			if err != nil {
				return nil, err
			}
			fac = c
		case ratelimit.Name:
			m := &lrlv3.LocalRateLimit{}
			if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
				return nil, fmt.Errorf("local_ratelimit filter: %w", err)
			}
			c, err := ratelimit.CompileFilter(m)
			if err != nil {
				return nil, err
			}
			fac = c
		case "envoy.filters.http.router":
			sawRouter = true
		default:
			return nil, fmt.Errorf("unsupported http filter %q (position %d)", f.Name, i)
		}
		if fac != nil {
			cfg.Steps = append(cfg.Steps, Step{Kind: StepFilter, Factory: fac})
		}
	}
	if !sawRouter {
		return nil, fmt.Errorf("http filters must end with envoy.filters.http.router")
	}
	if !sawFault {
		// Routes' own fault configuration applied before the chain was
		// generalised even without the filter; keep it (first, as then).
		cfg.Steps = append([]Step{{Kind: StepFault}}, cfg.Steps...)
	}
	return cfg, nil
}
