package accesslog

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// HeaderGetter reads a header by name, case-insensitively (httpx.Header).
type HeaderGetter interface {
	Get(name string) string
}

// EnvoyDefaultFormat is the format Envoy (and Portico) use when none is
// configured.
const EnvoyDefaultFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% ` +
	`"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

type opKind uint8

const (
	opLiteral opKind = iota
	opStartTime
	opReq
	opResp
	opResponseCode
	opResponseFlags
	opResponseCodeDetails
	opDuration
	opUpstreamHost
	opUpstreamCluster
	opUpstreamLocalAddress
	opDownstreamRemote
	opDownstreamRemoteNoPort
	opDownstreamLocal
	opDownstreamLocalNoPort
	opBytesSent
	opBytesReceived
	opProtocol
	opRequestedServerName
	opRouteName
	opUpstreamTransportFailureReason
	opConnectionTerminationDetails
)

// simpleOps are the operators without arguments.
var simpleOps = map[string]opKind{
	"RESPONSE_CODE":                          opResponseCode,
	"RESPONSE_FLAGS":                         opResponseFlags,
	"RESPONSE_CODE_DETAILS":                  opResponseCodeDetails,
	"DURATION":                               opDuration,
	"UPSTREAM_HOST":                          opUpstreamHost,
	"UPSTREAM_CLUSTER":                       opUpstreamCluster,
	"UPSTREAM_CLUSTER_RAW":                   opUpstreamCluster,
	"UPSTREAM_LOCAL_ADDRESS":                 opUpstreamLocalAddress,
	"DOWNSTREAM_REMOTE_ADDRESS":              opDownstreamRemote,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": opDownstreamRemoteNoPort,
	"DOWNSTREAM_LOCAL_ADDRESS":               opDownstreamLocal,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":  opDownstreamLocalNoPort,
	"BYTES_SENT":                             opBytesSent,
	"BYTES_RECEIVED":                         opBytesReceived,
	"PROTOCOL":                               opProtocol,
	"REQUESTED_SERVER_NAME":                  opRequestedServerName,
	"ROUTE_NAME":                             opRouteName,
	"UPSTREAM_TRANSPORT_FAILURE_REASON":      opUpstreamTransportFailureReason,
	"CONNECTION_TERMINATION_DETAILS":         opConnectionTerminationDetails,
}

// timePiece is one piece of a START_TIME format: a Go layout fragment, a
// literal, or a fractional-seconds / epoch directive.
type timePiece struct {
	layout  string // Go layout fragment (empty: lit)
	lit     string
	frac    int  // %E<n>S / %<n>f: digits of fractional seconds
	seconds bool // %E<n>S includes the seconds before the fraction
	epoch   bool // %s
}

type part struct {
	kind      opKind
	lit       string // literal text (opLiteral)
	name, alt string // REQ/RESP header names, lower case
	max       int    // :N truncation (0: none)
	time      []timePiece
	// layout is time as one Go layout, when that renders the same (the
	// common case, and one AppendFormat call instead of one per piece).
	layout string
}

// Compiled is a compiled access log format: operators are parsed once, when
// the listener is applied; rendering walks a slice without parsing.
type Compiled struct {
	parts []part   // text format
	keys  []string // JSON format: keys in output order
	vals  [][]part // JSON format: each value's parts
	json  bool
}

// CompileText compiles an Envoy text format string (text_format_source).
func CompileText(s string) (*Compiled, error) {
	parts, err := compile(s)
	if err != nil {
		return nil, err
	}
	return &Compiled{parts: parts}, nil
}

// CompileJSON compiles an Envoy json_format dictionary. Values must be
// strings (operators and literals); keys are written in sorted order, one
// object per line.
func CompileJSON(fields map[string]string) (*Compiled, error) {
	f := &Compiled{json: true}
	for k := range fields {
		f.keys = append(f.keys, k)
	}
	sort.Strings(f.keys)
	for _, k := range f.keys {
		p, err := compile(fields[k])
		if err != nil {
			return nil, fmt.Errorf("json_format key %q: %w", k, err)
		}
		f.vals = append(f.vals, p)
	}
	return f, nil
}

// CompileJSONObject compiles a JSON object given as text (Istio's
// accessLogFormat with accessLogEncoding JSON). Nested objects and non-string
// values are refused.
func CompileJSONObject(s string) (*Compiled, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("access log JSON format: %w", err)
	}
	fields := make(map[string]string, len(m))
	for k, v := range m {
		sv, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("access log JSON format: key %q: only string values are supported", k)
		}
		fields[k] = sv
	}
	return CompileJSON(fields)
}

func compile(s string) ([]part, error) {
	var parts []part
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			parts = append(parts, part{kind: opLiteral, lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			lit.WriteByte('%') // %% is a literal percent
			i += 2
			continue
		}
		end, p, err := parseOp(s, i)
		if err != nil {
			return nil, err
		}
		flush()
		parts = append(parts, p)
		i = end
	}
	flush()
	return parts, nil
}

// parseOp parses the operator starting at s[i] == '%' and returns the index
// after its closing '%'.
func parseOp(s string, i int) (int, part, error) {
	rest := s[i+1:]
	// Operator names are upper case letters and underscores.
	n := 0
	for n < len(rest) && (rest[n] >= 'A' && rest[n] <= 'Z' || rest[n] == '_') {
		n++
	}
	name := rest[:n]
	if name == "" {
		return 0, part{}, fmt.Errorf("access log format: '%%' at offset %d does not start a command operator (write %%%% for a literal percent)", i)
	}
	rest = rest[n:]
	var arg string
	hasArg := false
	if strings.HasPrefix(rest, "(") {
		close := strings.IndexByte(rest, ')')
		if close < 0 {
			return 0, part{}, fmt.Errorf("access log format: operator %%%s%%: missing ')'", name)
		}
		arg, hasArg, rest = rest[1:close], true, rest[close+1:]
	}
	max := 0
	if strings.HasPrefix(rest, ":") {
		j := 1
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		v, err := strconv.Atoi(rest[1:j])
		if err != nil || v <= 0 {
			return 0, part{}, fmt.Errorf("access log format: operator %%%s%%: bad length %q", name, rest[:j])
		}
		max, rest = v, rest[j:]
	}
	if !strings.HasPrefix(rest, "%") {
		return 0, part{}, fmt.Errorf("access log format: operator %%%s%%: missing closing '%%'", name)
	}
	end := len(s) - len(rest) + 1
	p := part{max: max}
	switch name {
	case "REQ", "RESP":
		if !hasArg || arg == "" {
			return 0, part{}, fmt.Errorf("access log format: %%%s%% needs a header name: %%%s(X?Y):N%%", name, name)
		}
		p.kind = opReq
		if name == "RESP" {
			p.kind = opResp
		}
		h, alt, _ := strings.Cut(arg, "?")
		p.name, p.alt = strings.ToLower(h), strings.ToLower(alt)
		return end, p, nil
	case "START_TIME":
		if max != 0 {
			return 0, part{}, fmt.Errorf("access log format: %%START_TIME%% takes no length")
		}
		tf := "%Y-%m-%dT%H:%M:%E3SZ"
		if hasArg && arg != "" {
			tf = arg
		}
		pieces, err := compileTime(tf)
		if err != nil {
			return 0, part{}, err
		}
		p.kind, p.time, p.layout = opStartTime, pieces, singleLayout(pieces)
		return end, p, nil
	}
	k, ok := simpleOps[name]
	if !ok {
		return 0, part{}, fmt.Errorf("access log format: unsupported command operator %%%s%%", name)
	}
	if hasArg {
		return 0, part{}, fmt.Errorf("access log format: operator %%%s%% takes no argument", name)
	}
	p.kind = k
	return end, p, nil
}

// strftime directives Envoy formats commonly see, as Go layout fragments.
var strftime = map[byte]string{
	'Y': "2006", 'y': "06", 'm': "01", 'd': "02", 'e': "_2", 'H': "15", 'I': "03", 'M': "04", 'S': "05",
	'p': "PM", 'b': "Jan", 'h': "Jan", 'B': "January", 'a': "Mon", 'A': "Monday", 'z': "-0700", 'Z': "MST",
	'j': "002", 'F': "2006-01-02", 'T': "15:04:05",
}

func compileTime(f string) ([]timePiece, error) {
	var out []timePiece
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			out = append(out, timePiece{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			lit.WriteByte(f[i])
			continue
		}
		if i+1 >= len(f) {
			return nil, fmt.Errorf("access log format: START_TIME format %q ends in '%%'", f)
		}
		i++
		c := f[i]
		switch {
		case c == '%':
			lit.WriteByte('%')
		case c == 's':
			flush()
			out = append(out, timePiece{epoch: true})
		case c == 'E' || c >= '1' && c <= '9':
			// %E<n>S: seconds with n fractional digits; %<n>f: n digits.
			j := i
			if c == 'E' {
				j++
			}
			if j >= len(f) || f[j] < '1' || f[j] > '9' || j+1 >= len(f) {
				return nil, fmt.Errorf("access log format: START_TIME format %q: unsupported directive at %d", f, i-1)
			}
			digits := int(f[j] - '0')
			kind := f[j+1]
			if c == 'E' && kind != 'S' || c != 'E' && kind != 'f' {
				return nil, fmt.Errorf("access log format: START_TIME format %q: unsupported directive at %d", f, i-1)
			}
			flush()
			out = append(out, timePiece{frac: digits, seconds: c == 'E'})
			i = j + 1
		case c == 'f':
			flush()
			out = append(out, timePiece{frac: 9})
		default:
			l, ok := strftime[c]
			if !ok {
				return nil, fmt.Errorf("access log format: START_TIME format %q: unsupported directive %%%c", f, c)
			}
			flush()
			out = append(out, timePiece{layout: l})
		}
	}
	flush()
	return out, nil
}

// singleLayout joins pieces into one Go layout, and keeps it only if it
// renders exactly as the pieces do on sample times (a literal could read
// as a Go layout token), else "".
func singleLayout(pieces []timePiece) string {
	var l strings.Builder
	for _, p := range pieces {
		switch {
		case p.lit != "":
			l.WriteString(p.lit)
		case p.layout != "":
			l.WriteString(p.layout)
		case p.frac > 0 && p.seconds:
			l.WriteString("05." + strings.Repeat("0", p.frac))
		default:
			return "" // epoch, bare fraction: no Go layout
		}
	}
	layout := l.String()
	for _, t := range []time.Time{time.Date(2026, 11, 28, 15, 4, 5, 123456789, time.UTC),
		time.Date(1999, 1, 2, 3, 7, 9, 7000000, time.UTC), time.Date(2000, 12, 31, 23, 59, 59, 0, time.UTC)} {
		if string(t.AppendFormat(nil, layout)) != string(appendTime(nil, t, pieces)) {
			return ""
		}
	}
	return layout
}

// valType is what an operator produced.
type valType uint8

const (
	vMissing valType = iota // Envoy prints "-" (text) or null (JSON)
	vString
	vNumber
)

func appendTime(b []byte, t time.Time, pieces []timePiece) []byte {
	t = t.UTC()
	for i := range pieces {
		p := &pieces[i]
		switch {
		case p.lit != "":
			b = append(b, p.lit...)
		case p.layout != "":
			b = t.AppendFormat(b, p.layout)
		case p.epoch:
			b = strconv.AppendInt(b, t.Unix(), 10)
		case p.frac > 0:
			if p.seconds {
				b = t.AppendFormat(b, "05")
			}
			ns := t.Nanosecond()
			for d := 9; d > p.frac; d-- {
				ns /= 10
			}
			var tmp [9]byte
			for d := p.frac - 1; d >= 0; d-- {
				tmp[d] = byte('0' + ns%10)
				ns /= 10
			}
			if p.seconds {
				b = append(b, '.')
			}
			b = append(b, tmp[:p.frac]...)
		}
	}
	return b
}

func withoutPort(a string) string {
	if i := strings.LastIndexByte(a, ':'); i >= 0 && !strings.HasSuffix(a, "]") {
		a = a[:i]
	}
	return strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
}

func (e *Entry) reqHeader(name string) string {
	switch name {
	case ":method":
		return e.Method
	case ":path":
		return e.Path
	case ":authority":
		return e.Authority
	case ":scheme":
		return e.Scheme
	case "user-agent":
		if e.UserAgent != "" {
			return e.UserAgent
		}
	case "x-forwarded-for":
		if e.ForwardedFor != "" {
			return e.ForwardedFor
		}
	case "x-request-id":
		if e.RequestID != "" {
			return e.RequestID
		}
	}
	if e.ReqHeaders == nil {
		return ""
	}
	return e.ReqHeaders.Get(name)
}

func (e *Entry) respHeader(name string) (string, int64, valType) {
	if name == "x-envoy-upstream-service-time" {
		if e.UpstreamServiceTime >= 0 && !e.TCP {
			return "", e.UpstreamServiceTime.Milliseconds(), vNumber
		}
		return "", 0, vMissing
	}
	if e.RespHeaders == nil {
		return "", 0, vMissing
	}
	if v := e.RespHeaders.Get(name); v != "" {
		return v, 0, vString
	}
	return "", 0, vMissing
}

func str(s string) (string, int64, valType) {
	if s == "" {
		return "", 0, vMissing
	}
	return s, 0, vString
}

// value evaluates one operator. Strings needing formatting (time, flags)
// are appended to scratch and returned as a string view of it.
func (p *part) value(e *Entry, scratch []byte) (string, int64, valType, []byte) {
	switch p.kind {
	case opStartTime:
		if p.layout != "" {
			scratch = e.Start.UTC().AppendFormat(scratch[:0], p.layout)
			return bytesView(scratch), 0, vString, scratch
		}
		scratch = appendTime(scratch[:0], e.Start, p.time)
		return bytesView(scratch), 0, vString, scratch
	case opReq:
		if e.TCP {
			return "", 0, vMissing, scratch
		}
		v := e.reqHeader(p.name)
		if v == "" && p.alt != "" {
			v = e.reqHeader(p.alt)
		}
		s, n, t := str(v)
		return s, n, t, scratch
	case opResp:
		if e.TCP {
			return "", 0, vMissing, scratch
		}
		s, n, t := e.respHeader(p.name)
		if t == vMissing && p.alt != "" {
			s, n, t = e.respHeader(p.alt)
		}
		return s, n, t, scratch
	case opResponseCode:
		return "", int64(e.Code), vNumber, scratch
	case opResponseFlags:
		if e.Flags == 0 {
			return "", 0, vMissing, scratch
		}
		scratch = e.Flags.appendTo(scratch[:0])
		return bytesView(scratch), 0, vString, scratch
	case opResponseCodeDetails:
		s, n, t := str(e.ResponseCodeDetails)
		return s, n, t, scratch
	case opDuration:
		return "", e.Duration.Milliseconds(), vNumber, scratch
	case opUpstreamHost:
		s, n, t := str(e.UpstreamHost)
		return s, n, t, scratch
	case opUpstreamCluster:
		s, n, t := str(e.Cluster)
		return s, n, t, scratch
	case opUpstreamLocalAddress:
		s, n, t := str(e.UpstreamLocal)
		return s, n, t, scratch
	case opDownstreamRemote:
		s, n, t := str(e.DownstreamRemote)
		return s, n, t, scratch
	case opDownstreamRemoteNoPort:
		s, n, t := str(withoutPort(e.DownstreamRemote))
		return s, n, t, scratch
	case opDownstreamLocal:
		s, n, t := str(e.DownstreamLocal)
		return s, n, t, scratch
	case opDownstreamLocalNoPort:
		s, n, t := str(withoutPort(e.DownstreamLocal))
		return s, n, t, scratch
	case opBytesSent:
		return "", e.BytesSent, vNumber, scratch
	case opBytesReceived:
		return "", e.BytesReceived, vNumber, scratch
	case opProtocol:
		if e.TCP {
			return "", 0, vMissing, scratch
		}
		s, n, t := str(e.Protocol)
		return s, n, t, scratch
	case opRequestedServerName:
		s, n, t := str(e.SNI)
		return s, n, t, scratch
	case opRouteName:
		s, n, t := str(e.RouteName)
		return s, n, t, scratch
	case opUpstreamTransportFailureReason:
		s, n, t := str(e.UpstreamTransportFailureReason)
		return s, n, t, scratch
	}
	// CONNECTION_TERMINATION_DETAILS: Portico does not track it yet.
	return "", 0, vMissing, scratch
}

// truncate cuts s to max bytes without splitting a UTF-8 sequence.
func truncate(s string, max int) string {
	if max <= 0 || len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max]
}

// Append renders e with the format, ending with a newline for JSON (text
// formats carry their own, as Envoy's do).
func (f *Compiled) Append(b []byte, e *Entry, scratch []byte) ([]byte, []byte) {
	if !f.json {
		// Text: literals as written, values escaped (\xHH), "-" when empty.
		return appendParts(b, f.parts, e, scratch, appendRaw, appendOrDash)
	}
	b = append(b, '{')
	for i, k := range f.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		vp := f.vals[i]
		if len(vp) == 1 && vp[0].kind != opLiteral {
			// A lone operator keeps its type: numbers as numbers, missing as null.
			var s string
			var n int64
			var t valType
			s, n, t, scratch = vp[0].value(e, scratch)
			switch t {
			case vMissing:
				b = append(b, "null"...)
			case vNumber:
				if vp[0].max > 0 {
					b = append(b, '"')
					b = appendNumber(b, n, vp[0].max)
					b = append(b, '"')
				} else {
					b = strconv.AppendInt(b, n, 10)
				}
			default:
				b = appendJSONString(b, truncate(s, vp[0].max))
			}
			continue
		}
		// Mixed literal and operators: a string, missing values as "-".
		b = append(b, '"')
		b, scratch = appendParts(b, vp, e, scratch, appendJSONBody, appendJSONBody)
		b = append(b, '"')
	}
	return append(b, '}', '\n'), scratch
}

// appendParts renders a run of literals and operators, the shared body
// of a text format and of a JSON value that mixes literals with
// operators; lit and val escape for the output (text or JSON string).
func appendParts(b []byte, parts []part, e *Entry, scratch []byte, lit, val func([]byte, string) []byte) ([]byte, []byte) {
	for i := range parts {
		p := &parts[i]
		if p.kind == opLiteral {
			b = lit(b, p.lit)
			continue
		}
		var s string
		var n int64
		var t valType
		s, n, t, scratch = p.value(e, scratch)
		switch t {
		case vMissing:
			b = append(b, '-')
		case vNumber:
			b = appendNumber(b, n, p.max)
		default:
			b = val(b, truncate(s, p.max))
		}
	}
	return b, scratch
}

func appendRaw(b []byte, s string) []byte { return append(b, s...) }

func appendNumber(b []byte, n int64, max int) []byte {
	start := len(b)
	b = strconv.AppendInt(b, n, 10)
	if max > 0 && len(b)-start > max {
		b = b[:start+max]
	}
	return b
}

func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendJSONBody(b, s)
	return append(b, '"')
}

// appendJSONBody escapes s for a JSON string: quotes, backslashes and all
// control bytes (so no value can end the line or the object); invalid
// UTF-8 becomes U+FFFD.
func appendJSONBody(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, `\u202`...)
			b = append(b, hexDigit[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

// bytesView is b as a string without a copy. The caller consumes it
// before b is written again (the next operator's value).
func bytesView(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// RespHeaders lists the response headers the format reads (lower case),
// besides x-envoy-upstream-service-time which the proxy knows itself, so
// a request keeps only those.
func (f *Compiled) RespHeaders() []string {
	if f == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	add := func(ps []part) {
		for _, p := range ps {
			if p.kind != opResp {
				continue
			}
			for _, n := range []string{p.name, p.alt} {
				if n != "" && n != "x-envoy-upstream-service-time" && !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
			}
		}
	}
	add(f.parts)
	for _, v := range f.vals {
		add(v)
	}
	return out
}
