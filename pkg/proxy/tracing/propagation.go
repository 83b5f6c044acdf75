// Package tracing gives the edge proxy Envoy's request tracing: it reads
// the caller's trace context (W3C traceparent/tracestate, B3 single and
// multi header), decides sampling as Envoy does (an incoming decision
// wins, else a percentage that is consistent for one x-request-id), records
// a server span per request and a client span per upstream attempt with
// Envoy's and Istio's attribute names, injects the context into the
// upstream request, and exports spans with the OpenTelemetry SDK over OTLP
// (gRPC or HTTP) or as Zipkin v2 JSON.
package tracing

import (
	"encoding/hex"
	"strings"
)

// Carrier is a header block: httpx.Header satisfies it.
type Carrier interface {
	Get(name string) string
	Set(name, value string)
	Del(name string)
}

// Format is the header format a trace context arrived in.
type Format uint8

const (
	// FormatNone: no (valid) trace context arrived.
	FormatNone Format = iota
	FormatW3C
	FormatB3Single
	FormatB3Multi
)

// TraceID and SpanID are W3C/B3 identifiers (B3's 64-bit trace IDs are
// widened with leading zeros, as OpenTelemetry does).
type (
	TraceID [16]byte
	SpanID  [8]byte
)

// Context is an incoming trace context.
type Context struct {
	TraceID TraceID
	SpanID  SpanID
	// Decided: the caller made a sampling decision, which is Sampled.
	Decided, Sampled bool
	// Debug: B3's "d" / X-B3-Flags: 1 (forces sampling).
	Debug      bool
	TraceState string
	Format     Format
}

// Valid reports whether the context names a trace and a parent span.
func (c *Context) Valid() bool { return c.TraceID != (TraceID{}) && c.SpanID != (SpanID{}) }

// Limits on what is parsed: longer values are malformed.
const (
	maxTraceState = 512
	maxB3Single   = 16 + 1 + 32 + 1 + 16 + 1 + 1 + 16 // generous
)

// Extract reads the trace context of a request: traceparent first (what
// Envoy's OpenTelemetry tracer reads), then B3 single, then B3 multi. A
// malformed header counts as absent; a B3 header carrying only a sampling
// decision ("0", "1", "d") yields a decision without a parent.
func Extract(h Carrier) Context {
	if tp := h.Get("traceparent"); tp != "" {
		if c, ok := ParseTraceparent(tp); ok {
			if ts := h.Get("tracestate"); len(ts) <= maxTraceState {
				c.TraceState = ts
			}
			return c
		}
	}
	if b := h.Get("b3"); b != "" {
		if c, ok := ParseB3Single(b); ok {
			return c
		}
	}
	if c, ok := parseB3Multi(h); ok {
		return c
	}
	return Context{}
}

// ParseTraceparent parses a W3C traceparent header: version-traceid-
// parentid-flags. Version ff is invalid; future versions may carry more
// fields after the flags, which are ignored as the spec says.
func ParseTraceparent(s string) (Context, bool) {
	var c Context
	if len(s) < 55 || (len(s) > 55 && s[55] != '-') {
		return c, false
	}
	if s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return c, false
	}
	ver, ok := hexByte(s[0:2])
	if !ok || ver == 0xff || (ver == 0 && len(s) != 55) {
		return c, false
	}
	if !hexInto(c.TraceID[:], s[3:35]) || !hexInto(c.SpanID[:], s[36:52]) || !c.Valid() {
		return c, false
	}
	flags, ok := hexByte(s[53:55])
	if !ok {
		return c, false
	}
	c.Decided, c.Sampled, c.Format = true, flags&1 == 1, FormatW3C
	return c, true
}

// ParseB3Single parses the b3 header: {TraceId}-{SpanId}[-{Sampling}[-
// {ParentSpanId}]] or a lone sampling state (0, 1, d).
func ParseB3Single(s string) (Context, bool) {
	c := Context{Format: FormatB3Single}
	if len(s) > maxB3Single {
		return Context{}, false
	}
	if len(s) == 1 {
		return c, c.setB3Sampling(s)
	}
	parts := strings.Split(s, "-")
	if len(parts) < 2 || len(parts) > 4 {
		return Context{}, false
	}
	if !c.setB3IDs(parts[0], parts[1]) {
		return Context{}, false
	}
	if len(parts) >= 3 && !c.setB3Sampling(parts[2]) {
		return Context{}, false
	}
	if len(parts) == 4 {
		var p SpanID
		if len(parts[3]) != 16 || !hexInto(p[:], parts[3]) {
			return Context{}, false
		}
	}
	return c, true
}

func parseB3Multi(h Carrier) (Context, bool) {
	c := Context{Format: FormatB3Multi}
	tid, sid := h.Get("x-b3-traceid"), h.Get("x-b3-spanid")
	sampled, flags := h.Get("x-b3-sampled"), h.Get("x-b3-flags")
	if tid == "" && sampled == "" && flags == "" {
		return Context{}, false
	}
	if tid != "" && !c.setB3IDs(tid, sid) {
		// Malformed IDs: the whole context is ignored (a new trace).
		return Context{}, false
	}
	switch {
	case flags == "1":
		c.Decided, c.Sampled, c.Debug = true, true, true
	case sampled == "1" || strings.EqualFold(sampled, "true"):
		c.Decided, c.Sampled = true, true
	case sampled == "0" || strings.EqualFold(sampled, "false"):
		c.Decided = true
	case sampled != "":
		return Context{}, false
	}
	return c, true
}

func (c *Context) setB3IDs(tid, sid string) bool {
	switch len(tid) {
	case 32:
		if !hexInto(c.TraceID[:], tid) {
			return false
		}
	case 16:
		if !hexInto(c.TraceID[8:], tid) {
			return false
		}
	default:
		return false
	}
	return len(sid) == 16 && hexInto(c.SpanID[:], sid) && c.Valid()
}

func (c *Context) setB3Sampling(s string) bool {
	switch s {
	case "0":
		c.Decided = true
	case "1":
		c.Decided, c.Sampled = true, true
	case "d":
		c.Decided, c.Sampled, c.Debug = true, true, true
	default:
		return false
	}
	return true
}

// hexInto decodes lower- or upper-case hex of exactly 2*len(dst) digits.
func hexInto(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		b, ok := hexByte(s[2*i : 2*i+2])
		if !ok {
			return false
		}
		dst[i] = b
	}
	return true
}

func hexByte(s string) (byte, bool) {
	hi, ok1 := unhex(s[0])
	lo, ok2 := unhex(s[1])
	return hi<<4 | lo, ok1 && ok2
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

// Inject writes a span's context into an upstream request: traceparent
// (and the caller's tracestate) always, B3 too when the caller used B3 or
// b3 is set (Envoy's Zipkin tracer sends B3 multi headers). Stale headers
// of the other formats are removed so the upstream sees one parent.
func Inject(h Carrier, tid TraceID, sid SpanID, sampled bool, incoming Format, traceState string, b3 bool) {
	var buf [55]byte
	copy(buf[:3], "00-")
	hex.Encode(buf[3:35], tid[:])
	buf[35] = '-'
	hex.Encode(buf[36:52], sid[:])
	buf[52] = '-'
	buf[53], buf[54] = '0', '0'
	if sampled {
		buf[54] = '1'
	}
	h.Set("traceparent", string(buf[:]))
	if traceState != "" {
		h.Set("tracestate", traceState)
	} else {
		h.Del("tracestate")
	}
	flag := "0"
	if sampled {
		flag = "1"
	}
	switch {
	case incoming == FormatB3Single:
		h.Set("b3", string(buf[3:35])+"-"+string(buf[36:52])+"-"+flag)
	case incoming == FormatB3Multi || b3:
		h.Del("b3")
		h.Set("x-b3-traceid", string(buf[3:35]))
		h.Set("x-b3-spanid", string(buf[36:52]))
		h.Del("x-b3-parentspanid")
		h.Del("x-b3-flags")
		h.Set("x-b3-sampled", flag)
	}
}
