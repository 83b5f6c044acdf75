package translate

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Edge are the timeouts and limits every HTTP listener gets: what Envoy's
// guide for edge proxies configures ("Configuring Envoy as an edge proxy"),
// where Envoy's own defaults would let one client hold connections, memory
// or file descriptors without bound. Field names follow Envoy's, in
// camelCase, so that the options file reads like the config_dump it
// produces.
type Edge struct {
	// RequestHeadersTimeout bounds receiving a request head, from its
	// first byte (Envoy: unset; edge guide: 10 s).
	RequestHeadersTimeout Duration `json:"requestHeadersTimeout"`
	// StreamIdleTimeout ends a request on which nothing moved either way.
	StreamIdleTimeout Duration `json:"streamIdleTimeout"`
	// IdleTimeout closes a connection without requests.
	IdleTimeout Duration `json:"idleTimeout"`
	// MaxRequestHeadersKb bounds a request head (Envoy's default, 60).
	MaxRequestHeadersKb uint32 `json:"maxRequestHeadersKb"`
	// MaxHeadersCount bounds the header fields of a request (100).
	MaxHeadersCount uint32 `json:"maxHeadersCount"`
	// HeadersWithUnderscoresAction: ALLOW, REJECT_REQUEST or DROP_HEADER.
	HeadersWithUnderscoresAction string `json:"headersWithUnderscoresAction"`
	// PerConnectionBufferLimitBytes bounds what a connection buffers,
	// request bodies kept for retries and mirrors included.
	PerConnectionBufferLimitBytes uint32 `json:"perConnectionBufferLimitBytes"`
	HTTP2                         HTTP2  `json:"http2"`
	// PathNormalization is Istio's meshConfig.pathNormalization.normalization:
	// NONE, BASE (RFC 3986), MERGE_SLASHES, DECODE_AND_MERGE_SLASHES.
	PathNormalization string `json:"pathNormalization"`
	// XffNumTrustedHops is Istio's gatewayTopology.numTrustedProxies:
	// proxies in front of the gateway whose x-forwarded-for entries are
	// trusted.
	XffNumTrustedHops uint32 `json:"xffNumTrustedHops"`
}

// HTTP2 are Envoy's http2_protocol_options at the edge.
type HTTP2 struct {
	MaxConcurrentStreams        uint32 `json:"maxConcurrentStreams"`
	InitialStreamWindowSize     uint32 `json:"initialStreamWindowSize"`
	InitialConnectionWindowSize uint32 `json:"initialConnectionWindowSize"`
}

// Duration reads "10s" and writes it back.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("negative duration %s", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// DefaultEdge is what Envoy's edge guide configures, with Istio's default
// path normalization (BASE) and Envoy's default idle timeout.
func DefaultEdge() Edge {
	return Edge{
		RequestHeadersTimeout:         Duration{10 * time.Second},
		StreamIdleTimeout:             Duration{5 * time.Minute},
		IdleTimeout:                   Duration{time.Hour},
		MaxRequestHeadersKb:           60,
		MaxHeadersCount:               100,
		HeadersWithUnderscoresAction:  "REJECT_REQUEST",
		PerConnectionBufferLimitBytes: 32 << 10,
		HTTP2: HTTP2{
			MaxConcurrentStreams:        100,
			InitialStreamWindowSize:     64 << 10,
			InitialConnectionWindowSize: 1 << 20,
		},
		PathNormalization: "BASE",
	}
}

// Validate reports the first invalid field, by its name.
func (e *Edge) Validate() error {
	switch e.HeadersWithUnderscoresAction {
	case "ALLOW", "REJECT_REQUEST", "DROP_HEADER":
	default:
		return fmt.Errorf("headersWithUnderscoresAction: %q is not ALLOW, REJECT_REQUEST or DROP_HEADER", e.HeadersWithUnderscoresAction)
	}
	switch e.PathNormalization {
	case "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES":
	default:
		return fmt.Errorf("pathNormalization: %q is not NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES", e.PathNormalization)
	}
	// Envoy's own bounds (protoc-gen-validate rules of the same fields).
	if e.MaxRequestHeadersKb == 0 || e.MaxRequestHeadersKb > 8192 {
		return fmt.Errorf("maxRequestHeadersKb: %d is not in 1..8192", e.MaxRequestHeadersKb)
	}
	if e.MaxHeadersCount == 0 {
		return fmt.Errorf("maxHeadersCount: must be at least 1")
	}
	if v := e.HTTP2.MaxConcurrentStreams; v == 0 || v > 2147483647 {
		return fmt.Errorf("http2.maxConcurrentStreams: %d is not in 1..2147483647", v)
	}
	if v := e.HTTP2.InitialStreamWindowSize; v < 65535 || v > 2147483647 {
		return fmt.Errorf("http2.initialStreamWindowSize: %d is not in 65535..2147483647", v)
	}
	if v := e.HTTP2.InitialConnectionWindowSize; v < 65535 || v > 2147483647 {
		return fmt.Errorf("http2.initialConnectionWindowSize: %d is not in 65535..2147483647", v)
	}
	if e.PerConnectionBufferLimitBytes == 0 {
		return fmt.Errorf("perConnectionBufferLimitBytes: must be at least 1")
	}
	return nil
}

// applyEdge sets the edge options on a connection manager.
func (t *translator) applyEdge(m *hcmv3.HttpConnectionManager) {
	e := &t.opts.Edge
	if d := e.RequestHeadersTimeout.Duration; d > 0 {
		m.RequestHeadersTimeout = durationpb.New(d)
	}
	m.StreamIdleTimeout = durationpb.New(e.StreamIdleTimeout.Duration)
	m.MaxRequestHeadersKb = wrapperspb.UInt32(e.MaxRequestHeadersKb)
	m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{
		IdleTimeout:                  durationpb.New(e.IdleTimeout.Duration),
		MaxHeadersCount:              wrapperspb.UInt32(e.MaxHeadersCount),
		HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_HeadersWithUnderscoresAction(corev3.HttpProtocolOptions_HeadersWithUnderscoresAction_value[e.HeadersWithUnderscoresAction]),
	}
	m.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{
		MaxConcurrentStreams:        wrapperspb.UInt32(e.HTTP2.MaxConcurrentStreams),
		InitialStreamWindowSize:     wrapperspb.UInt32(e.HTTP2.InitialStreamWindowSize),
		InitialConnectionWindowSize: wrapperspb.UInt32(e.HTTP2.InitialConnectionWindowSize),
	}
	if e.XffNumTrustedHops > 0 {
		m.XffNumTrustedHops = e.XffNumTrustedHops
	}
	// Istio's pathNormalization, as Istio translates it.
	switch e.PathNormalization {
	case "NONE":
		m.NormalizePath = wrapperspb.Bool(false)
	case "MERGE_SLASHES":
		m.MergeSlashes = true
	case "DECODE_AND_MERGE_SLASHES":
		m.MergeSlashes = true
		m.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD
	}
}
