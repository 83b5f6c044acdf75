// Package tracing is the edge proxy's distributed tracing: W3C trace
// context and B3 propagation, one server span per request and a client
// span per upstream attempt, with Envoy's and Istio's span attribute
// names, exported in batches to an OpenTelemetry collector (OTLP over gRPC
// or HTTP) or a Zipkin collector (v2 JSON), as Envoy's
// envoy.tracers.opentelemetry and envoy.tracers.zipkin do.
package tracing

import (
	"encoding/hex"
	"strings"
)

// TraceID and SpanID are W3C/B3 identifiers; all-zero is invalid.
type (
	TraceID [16]byte
	SpanID  [8]byte
)

func (t TraceID) IsValid() bool { return t != TraceID{} }
func (s SpanID) IsValid() bool  { return s != SpanID{} }

// String is the lower-case hex form used on the wire.
func (t TraceID) String() string { return hex.EncodeToString(t[:]) }
func (s SpanID) String() string  { return hex.EncodeToString(s[:]) }

// Sampling decisions carried by a span context.
const (
	SampledUnknown = iota // no decision: the proxy decides
	SampledNo
	SampledYes
)

// SpanContext is what propagates between hops.
type SpanContext struct {
	TraceID TraceID
	SpanID  SpanID
	// Sampled is one of the Sampled* decisions.
	Sampled int
	// TraceState is W3C tracestate, passed on unchanged.
	TraceState string
}

// Header reads request headers by lower-case name.
type Header interface {
	Get(name string) string
}

// Extract reads an incoming span context: W3C traceparent first, then B3
// single (b3), then B3 multi (x-b3-*). A malformed header is ignored,
// as if absent: the request starts a new trace, and never fails. A B3 or
// W3C header that carries only a sampling decision ("b3: 0",
// "x-b3-sampled: 0") returns ok=false with that decision, which the
// proxy honours for the new trace.
func Extract(h Header) (sc SpanContext, ok bool) {
	if v := h.Get("traceparent"); v != "" {
		if sc, ok := ParseTraceparent(v); ok {
			if ts := h.Get("tracestate"); ts != "" && len(ts) <= 512 {
				sc.TraceState = ts
			}
			return sc, true
		}
	}
	if v := h.Get("b3"); v != "" {
		if sc, ok := ParseB3Single(v); ok {
			return sc, sc.TraceID.IsValid()
		}
	}
	return parseB3Multi(h)
}

// ParseTraceparent parses "00-<32 hex>-<16 hex>-<2 hex>". Versions above
// 00 are accepted when the first four fields parse, as the spec requires.
func ParseTraceparent(v string) (SpanContext, bool) {
	var sc SpanContext
	v = strings.TrimSpace(v)
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return sc, false
	}
	var ver [1]byte
	if !decodeHex(ver[:], v[0:2]) || ver[0] == 0xff || (ver[0] == 0 && len(v) != 55) || (len(v) > 55 && v[55] != '-') {
		return sc, false
	}
	var flags [1]byte
	if !decodeHex(sc.TraceID[:], v[3:35]) || !decodeHex(sc.SpanID[:], v[36:52]) || !decodeHex(flags[:], v[53:55]) {
		return sc, false
	}
	if !sc.TraceID.IsValid() || !sc.SpanID.IsValid() {
		return sc, false
	}
	sc.Sampled = SampledNo
	if flags[0]&1 == 1 {
		sc.Sampled = SampledYes
	}
	return sc, true
}

// ParseB3Single parses "b3: {traceid}-{spanid}[-{sampling}[-{parent}]]"
// or a bare sampling decision ("0", "1", "d"). A 64-bit trace ID is
// left-padded to 128 bits, as Envoy does.
func ParseB3Single(v string) (SpanContext, bool) {
	var sc SpanContext
	v = strings.TrimSpace(v)
	if s, ok := b3Sampled(v); ok && len(v) == 1 {
		sc.Sampled = s
		return sc, true
	}
	parts := strings.Split(v, "-")
	if len(parts) < 2 || len(parts) > 4 {
		return sc, false
	}
	if !parseB3TraceID(&sc.TraceID, parts[0]) || len(parts[1]) != 16 || !decodeHex(sc.SpanID[:], parts[1]) || !sc.SpanID.IsValid() {
		return SpanContext{}, false
	}
	if len(parts) >= 3 {
		s, ok := b3Sampled(parts[2])
		if !ok {
			return SpanContext{}, false
		}
		sc.Sampled = s
	}
	if len(parts) == 4 {
		var p SpanID
		if len(parts[3]) != 16 || !decodeHex(p[:], parts[3]) {
			return SpanContext{}, false
		}
	}
	return sc, true
}

func parseB3Multi(h Header) (SpanContext, bool) {
	var sc SpanContext
	if s, ok := b3Sampled(h.Get("x-b3-sampled")); ok {
		sc.Sampled = s
	}
	if h.Get("x-b3-flags") == "1" {
		sc.Sampled = SampledYes // debug
	}
	tid, sid := h.Get("x-b3-traceid"), h.Get("x-b3-spanid")
	if tid == "" || sid == "" {
		return sc, false
	}
	if !parseB3TraceID(&sc.TraceID, strings.TrimSpace(tid)) {
		return SpanContext{Sampled: sc.Sampled}, false
	}
	sid = strings.TrimSpace(sid)
	if len(sid) != 16 || !decodeHex(sc.SpanID[:], sid) || !sc.SpanID.IsValid() {
		return SpanContext{Sampled: sc.Sampled}, false
	}
	return sc, true
}

func parseB3TraceID(t *TraceID, s string) bool {
	*t = TraceID{}
	switch len(s) {
	case 32:
		if !decodeHex(t[:], s) {
			return false
		}
	case 16:
		if !decodeHex(t[8:], s) {
			return false
		}
	default:
		return false
	}
	return t.IsValid()
}

func b3Sampled(s string) (int, bool) {
	switch strings.TrimSpace(s) {
	case "1", "d", "true":
		return SampledYes, true
	case "0", "false":
		return SampledNo, true
	}
	return SampledUnknown, false
}

// decodeHex decodes exactly len(dst)*2 lower- or upper-case hex digits.
func decodeHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := unhex(s[2*i])
		lo, ok2 := unhex(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Headers the proxy replaces on the upstream request.
var propagationHeaders = []string{"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
	"x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"}

// HeaderWriter edits the upstream request's headers.
type HeaderWriter interface {
	Set(name, value string)
	Del(name string)
}

// Inject replaces the propagation headers with sc as the parent of the
// next hop: W3C traceparent (and tracestate when known) and B3 multi
// headers (x-b3-parentspanid is parent, when valid), so applications
// instrumented for either format continue the trace. The incoming
// single "b3" header is removed: it would contradict the new span ID.
func Inject(h HeaderWriter, sc SpanContext, parent SpanID) {
	for _, n := range propagationHeaders {
		h.Del(n)
	}
	flags, b3s := "00", "0"
	if sc.Sampled == SampledYes {
		flags, b3s = "01", "1"
	}
	tid, sid := sc.TraceID.String(), sc.SpanID.String()
	h.Set("traceparent", "00-"+tid+"-"+sid+"-"+flags)
	if sc.TraceState != "" {
		h.Set("tracestate", sc.TraceState)
	}
	h.Set("x-b3-traceid", tid)
	h.Set("x-b3-spanid", sid)
	if parent.IsValid() {
		h.Set("x-b3-parentspanid", parent.String())
	}
	h.Set("x-b3-sampled", b3s)
}
