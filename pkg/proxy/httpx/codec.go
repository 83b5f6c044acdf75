package httpx

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unsafe"
)

// Errors a codec reports. ErrMalformed and its wrappings are protocol
// errors (400 to a client, UPE from an upstream).
var (
	ErrMalformed      = errors.New("malformed HTTP message")
	ErrHeaderTooLarge = errors.New("header section too large")
	// ErrTooManyHeaders: more header fields than Limits.MaxHeaders (431).
	ErrTooManyHeaders = errors.New("too many header fields")
	// ErrUnsupportedCoding is a transfer coding the proxy does not
	// implement (501, as RFC 9112 section 6.1 asks).
	ErrUnsupportedCoding = errors.New("unsupported transfer coding")
)

// MaxHeaderBytes bounds a header section (Envoy's default is 60 KiB).
const MaxHeaderBytes = 60 << 10

// MaxHeaders is Envoy's default max_headers_count.
const MaxHeaders = 100

// Limits bound what a request head may hold (Envoy's
// max_request_headers_kb and max_headers_count).
type Limits struct {
	// MaxHeaderBytes bounds the request line and header section together.
	MaxHeaderBytes int
	// MaxHeaders bounds the number of header fields.
	MaxHeaders int
}

// DefaultLimits are Envoy's defaults.
var DefaultLimits = Limits{MaxHeaderBytes: MaxHeaderBytes, MaxHeaders: MaxHeaders}

func (l Limits) orDefault() Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = MaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = MaxHeaders
	}
	return l
}

// readHeaderBlock reads up to and including the blank line ending a header
// section, returning one owned copy of it: every string of the message is
// a slice of this one allocation.
//
// maxLines bounds the lines after the first (0: no bound): a head with more
// fields than allowed is refused as soon as that is known, without reading
// the rest of it.
func readHeaderBlock(br *bufio.Reader, scratch []byte, max, maxLines int) ([]byte, error) {
	buf := scratch[:0]
	lines := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				if len(buf)+len(line) > max {
					return nil, ErrHeaderTooLarge
				}
				buf = append(buf, line...)
				continue
			}
			if len(buf) == 0 && len(line) == 0 {
				return nil, err
			}
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		buf = append(buf, line...)
		if len(buf) > max {
			return nil, ErrHeaderTooLarge
		}
		n := len(line)
		if n == 1 || n == 2 && line[0] == '\r' {
			if len(buf) == n {
				// Tolerate empty lines before a request line (RFC 9112 2.2).
				buf = buf[:0]
				continue
			}
			return buf, nil
		}
		if lines++; maxLines > 0 && lines > maxLines+1 {
			return nil, ErrTooManyHeaders
		}
	}
}

// toString views b as a string without copying; b must never change.
func toString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func trimCR(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		return b[:n-1]
	}
	return b
}

// parseFields parses header lines, lowercasing names in place. A field
// value may hold visible characters, obs-text, spaces and tabs; any other
// control character (a bare CR, NUL, a vertical tab, an escape sequence
// for a log viewer) makes the message malformed, and only spaces and tabs
// are optional whitespace around it (RFC 9110 section 5.5): trimming more
// is how "Transfer-Encoding: \x0bchunked" gets read two ways.
func parseFields(block []byte, h *Header, maxFields int) error {
	for len(block) > 0 {
		i := bytes.IndexByte(block, '\n')
		if i < 0 {
			return fmt.Errorf("%w: unterminated header line", ErrMalformed)
		}
		line := trimCR(block[:i])
		block = block[i+1:]
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return fmt.Errorf("%w: obsolete header line folding", ErrMalformed)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return fmt.Errorf("%w: header line without a name", ErrMalformed)
		}
		name := line[:colon]
		for j, c := range name {
			switch {
			case c >= 'A' && c <= 'Z':
				name[j] = c + ('a' - 'A')
			case !isTokenChar(c):
				return fmt.Errorf("%w: invalid header name %q", ErrMalformed, name)
			}
		}
		value := trimOWS(line[colon+1:])
		if !ValidFieldValue(toString(value)) {
			return fmt.Errorf("%w: invalid character in header %q", ErrMalformed, name)
		}
		if len(h.Fields) >= maxFields {
			return ErrTooManyHeaders
		}
		h.Fields = append(h.Fields, Field{Name: toString(name), Value: toString(value)})
	}
	return nil
}

// trimOWS trims optional whitespace: spaces and horizontal tabs only.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// ValidFieldValue reports whether v may be a field value: no control
// characters but horizontal tab (RFC 9110 section 5.5; obs-text allowed).
func ValidFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// ValidFieldName reports whether n is a token (RFC 9110 section 5.1).
func ValidFieldName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if !isTokenChar(n[i]) {
			return false
		}
	}
	return true
}

// ValidTarget reports whether a request target in origin form (or "*")
// is safe to forward: it starts with '/', and holds no whitespace, control
// characters or fragment. Anything else is what request smuggling and
// request-line injection are made of ("GET /a HTTP/1.1\r\nX: y" upstream);
// nginx and Envoy reject such targets too. Bytes above 0x7f are allowed,
// as they are by both.
func ValidTarget(t string) bool {
	if t == "*" {
		return true
	}
	if t == "" || t[0] != '/' {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c <= ' ' || c == 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// ValidAuthority reports whether an authority (Host, :authority, the
// authority of an absolute-form target) is a host with an optional port:
// RFC 3986 reg-name, IPv4 or bracketed IPv6 characters only. Userinfo is
// refused: "user@host" would be routed by one reading and forwarded with
// another; so is ',', which makes a Host header read as a list. An empty
// authority is valid (HTTP/1.0, or routing to "*").
func ValidAuthority(a string) bool {
	for i := 0; i < len(a); i++ {
		c := a[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!$&'()*+;=:[]%", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// isTokenChar reports whether c may appear in a header name (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// framing describes how a message body is delimited.
type framing struct {
	length  int64 // -1 unknown
	chunked bool
}

// bodyFraming applies RFC 9112 section 6.3 to a header set. It removes
// framing headers the proxy regenerates. Only what both nginx and Envoy
// read the same way is accepted: "chunked" as the only transfer coding,
// a Content-Length of decimal digits (repeated only with the same value),
// and never both together (Envoy's default; a request with both is the
// classic smuggling vector, RFC 9112 section 6.1).
func bodyFraming(h *Header, request bool) (framing, error) {
	f := framing{length: -1}
	te, hasTE := h.Lookup("transfer-encoding")
	_, hasCL := h.Lookup("content-length")
	if hasTE {
		if request && hasCL {
			return f, fmt.Errorf("%w: both content-length and transfer-encoding", ErrMalformed)
		}
		for _, tok := range strings.Split(te, ",") {
			if !ValidFieldName(string(trimOWS([]byte(tok)))) {
				return f, fmt.Errorf("%w: invalid transfer-encoding %q", ErrMalformed, te)
			}
		}
		if !strings.EqualFold(string(trimOWS([]byte(te))), "chunked") {
			return f, fmt.Errorf("%w: transfer-encoding %q", ErrUnsupportedCoding, te)
		}
		f.chunked = true
		h.Del("transfer-encoding")
		h.Del("content-length") // a response with both is chunked
		return f, nil
	}
	if hasCL {
		n, err := ParseContentLength(h)
		if err != nil {
			return f, err
		}
		f.length = n
		h.Del("content-length")
	}
	return f, nil
}

// ParseContentLength reads the content-length fields of h: decimal
// digits only (no sign, no spaces, no "0x"), and every value the same.
// It returns -1 when there is none.
func ParseContentLength(h *Header) (int64, error) {
	n := int64(-1)
	for i := range h.Fields {
		if h.Fields[i].Name != "content-length" {
			continue
		}
		for rest, more := h.Fields[i].Value, true; more; {
			var part string
			part, rest, more = strings.Cut(rest, ",")
			m, ok := parseDecimal(strings.Trim(part, " \t"))
			if !ok {
				return -1, fmt.Errorf("%w: invalid content-length %q", ErrMalformed, h.Fields[i].Value)
			}
			if n >= 0 && m != n {
				return -1, fmt.Errorf("%w: conflicting content-length values", ErrMalformed)
			}
			n = m
		}
	}
	return n, nil
}

// parseDecimal parses 1*DIGIT into a non-negative int64.
func parseDecimal(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// ReadRequest parses a request head with the default limits.
func ReadRequest(br *bufio.Reader, req *Request, scratch []byte) error {
	return DefaultLimits.ReadRequest(br, req, scratch)
}

// ReadRequest parses a request head within l. Its body reader reads from
// br. Every string of the request is validated here, so nothing a client
// sends can change how the request is framed upstream.
func (l Limits) ReadRequest(br *bufio.Reader, req *Request, scratch []byte) error {
	l = l.orDefault()
	block, err := readHeaderBlock(br, scratch, l.MaxHeaderBytes, l.MaxHeaders)
	if err != nil {
		return err
	}
	owned := make([]byte, len(block))
	copy(owned, block)
	nl := bytes.IndexByte(owned, '\n')
	line := trimCR(owned[:nl])
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return fmt.Errorf("%w: bad request line", ErrMalformed)
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return fmt.Errorf("%w: bad request line", ErrMalformed)
	}
	req.Method = toString(line[:sp1])
	req.Target = toString(rest[:sp2])
	proto := rest[sp2+1:]
	switch toString(proto) {
	case "HTTP/1.1":
		req.Proto = "HTTP/1.1"
	case "HTTP/1.0":
		req.Proto = "HTTP/1.0"
	default:
		return fmt.Errorf("%w: unsupported protocol %q", ErrMalformed, proto)
	}
	if !ValidFieldName(req.Method) {
		return fmt.Errorf("%w: invalid method", ErrMalformed)
	}
	req.Header.Reset()
	if err := parseFields(owned[nl+1:], &req.Header, l.MaxHeaders); err != nil {
		return err
	}
	host, hasHost := req.Header.Lookup("host")
	if req.Proto == "HTTP/1.1" && !hasHost {
		return fmt.Errorf("%w: HTTP/1.1 request without host", ErrMalformed)
	}
	if strings.Contains(host, ",") {
		return fmt.Errorf("%w: several host headers", ErrMalformed)
	}
	req.Header.Del("host")
	req.Authority = host
	if req.Target == "" || req.Target[0] != '/' {
		switch {
		case req.Target == "*" && req.Method == "OPTIONS":
		case hasPrefixFold(req.Target, "http://") || hasPrefixFold(req.Target, "https://"):
			// Absolute form: the authority is in the target, and wins over
			// Host (RFC 9112 section 3.2.2).
			u := req.Target[strings.Index(req.Target, "//")+2:]
			slash := strings.IndexAny(u, "/?")
			switch {
			case slash < 0:
				req.Authority, req.Target = u, "/"
			case u[slash] == '?':
				req.Authority, req.Target = u[:slash], "/"+u[slash:]
			default:
				req.Authority, req.Target = u[:slash], u[slash:]
			}
		default:
			return fmt.Errorf("%w: invalid request target %q", ErrMalformed, req.Target)
		}
	}
	if !ValidTarget(req.Target) {
		return fmt.Errorf("%w: invalid request target %q", ErrMalformed, req.Target)
	}
	if !ValidAuthority(req.Authority) {
		return fmt.Errorf("%w: invalid authority %q", ErrMalformed, req.Authority)
	}
	req.Close = req.Proto == "HTTP/1.0"
	if conn, ok := req.Header.Lookup("connection"); ok {
		for _, tok := range strings.Split(conn, ",") {
			switch strings.ToLower(strings.TrimSpace(tok)) {
			case "close":
				req.Close = true
			case "keep-alive":
				if req.Proto == "HTTP/1.0" {
					req.Close = false
				}
			}
		}
	}
	if req.Proto == "HTTP/1.0" && req.Header.Has("transfer-encoding") {
		// RFC 9112 section 6.1: faulty framing; nginx and Envoy answer 400.
		return fmt.Errorf("%w: transfer-encoding in an HTTP/1.0 request", ErrMalformed)
	}
	f, err := bodyFraming(&req.Header, true)
	if err != nil {
		return err
	}
	switch {
	case f.chunked:
		req.ContentLength = -1
		req.Body = &chunkedReader{br: br}
	case f.length > 0:
		req.ContentLength = f.length
		req.Body = &lengthReader{r: br, n: f.length}
	default:
		req.ContentLength = 0
		req.Body = nil
	}
	return nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// Response is an upstream's response head.
type Response struct {
	Status int
	Proto  string
	Header Header
	// ContentLength is -1 when the body is chunked or close-delimited.
	ContentLength int64
	Body          io.Reader
	// Close is set when the connection cannot be reused after the body.
	Close bool
	// Trailer holds the trailers of a protocol that carries them (HTTP/2),
	// set once Body returned io.EOF; nil when there were none.
	Trailer *Header

	// length is Body when the body has a length: kept here, it is not
	// allocated per response.
	length lengthReader
}

// maxResponseHeaders bounds an upstream response's header fields: upstreams
// are trusted more than clients, but not without bound.
const maxResponseHeaders = 1000

// noBody reports whether a response to method with status has no body.
func noBody(method string, status int) bool {
	return method == "HEAD" || status/100 == 1 || status == 204 || status == 304
}

// ReadResponse parses a response head for a request with the given method.
func ReadResponse(br *bufio.Reader, method string, resp *Response, scratch []byte) error {
	for {
		block, err := readHeaderBlock(br, scratch, MaxHeaderBytes, maxResponseHeaders)
		if err != nil {
			return err
		}
		owned := make([]byte, len(block))
		copy(owned, block)
		nl := bytes.IndexByte(owned, '\n')
		line := trimCR(owned[:nl])
		if len(line) < 12 || line[8] != ' ' {
			return fmt.Errorf("%w: bad status line", ErrMalformed)
		}
		switch toString(line[:8]) {
		case "HTTP/1.1", "HTTP/1.0":
			resp.Proto = toString(line[:8])
		default:
			return fmt.Errorf("%w: bad status line", ErrMalformed)
		}
		code, err := strconv.Atoi(toString(line[9:12]))
		if err != nil || code < 100 || code > 999 || len(line) > 12 && line[12] != ' ' {
			return fmt.Errorf("%w: bad status code", ErrMalformed)
		}
		if code == 100 || code == 102 || code == 103 {
			continue // interim responses are not forwarded
		}
		resp.Status = code
		resp.Header.Reset()
		if err := parseFields(owned[nl+1:], &resp.Header, maxResponseHeaders); err != nil {
			return err
		}
		break
	}
	resp.Close = resp.Proto == "HTTP/1.0"
	if conn, ok := resp.Header.Lookup("connection"); ok {
		for _, tok := range strings.Split(conn, ",") {
			switch strings.ToLower(strings.TrimSpace(tok)) {
			case "close":
				resp.Close = true
			case "keep-alive":
				resp.Close = false
			}
		}
	}
	f, err := bodyFraming(&resp.Header, false)
	if err != nil {
		return err
	}
	switch {
	case noBody(method, resp.Status):
		resp.ContentLength, resp.Body = 0, nil
		if f.length > 0 && method == "HEAD" {
			resp.ContentLength = f.length // the length the GET would have
			resp.Body = nil
		}
	case f.chunked:
		resp.ContentLength, resp.Body = -1, &chunkedReader{br: br}
	case f.length >= 0:
		resp.ContentLength = f.length
		if f.length > 0 {
			resp.length = lengthReader{r: br, n: f.length}
			resp.Body = &resp.length
		} else {
			resp.Body = nil
		}
	default:
		// Delimited by connection close.
		resp.ContentLength, resp.Body, resp.Close = -1, &eofReader{r: br}, true
	}
	return nil
}

// lengthReader reads exactly n bytes.
type lengthReader struct {
	r io.Reader
	n int64
}

func (l *lengthReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if err == io.EOF && l.n > 0 {
		return n, io.ErrUnexpectedEOF
	}
	if l.n == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

// Remaining reports unread bytes.
func (l *lengthReader) Remaining() int64 { return l.n }

// eofReader reads until the connection closes.
type eofReader struct{ r io.Reader }

func (e *eofReader) Read(p []byte) (int, error) { return e.r.Read(p) }

// chunkedReader decodes chunked transfer coding.
type chunkedReader struct {
	br   *bufio.Reader
	left int64 // bytes left in the current chunk
	done bool
	err  error
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.done {
		return 0, io.EOF
	}
	if c.left == 0 {
		if err := c.nextChunk(); err != nil {
			c.err = err
			return 0, err
		}
		if c.done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && c.left == 0 {
		err = c.crlf()
	}
	if err != nil {
		c.err = err
	}
	return n, err
}

func (c *chunkedReader) crlf() error {
	b, err := c.br.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if !(len(b) == 1 || len(b) == 2 && b[0] == '\r') {
		return fmt.Errorf("%w: missing CRLF after chunk", ErrMalformed)
	}
	return nil
}

func (c *chunkedReader) nextChunk() error {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: chunk size line: %v", ErrMalformed, err)
	}
	line = trimCR(line[:len(line)-1])
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		// Chunk extensions are ignored, but must not hide control bytes.
		if !ValidFieldValue(toString(line[i:])) {
			return fmt.Errorf("%w: invalid chunk extension", ErrMalformed)
		}
		line = line[:i]
	}
	line = trimOWS(line) // BWS before an extension; nothing else
	if len(line) == 0 || len(line) > 16 {
		return fmt.Errorf("%w: invalid chunk size %q", ErrMalformed, line)
	}
	var n uint64
	for _, d := range line {
		var v byte
		switch {
		case d >= '0' && d <= '9':
			v = d - '0'
		case d >= 'a' && d <= 'f':
			v = d - 'a' + 10
		case d >= 'A' && d <= 'F':
			v = d - 'A' + 10
		default:
			return fmt.Errorf("%w: invalid chunk size %q", ErrMalformed, line)
		}
		n = n<<4 | uint64(v)
	}
	if n > 1<<62 {
		return fmt.Errorf("%w: chunk size overflow", ErrMalformed)
	}
	if n == 0 {
		// Trailers are read and dropped, within the header size limit.
		total := 0
		for {
			t, err := c.br.ReadSlice('\n')
			if err != nil {
				if err == io.EOF {
					return io.ErrUnexpectedEOF
				}
				return fmt.Errorf("%w: trailer line: %v", ErrMalformed, err)
			}
			if total += len(t); total > MaxHeaderBytes {
				return fmt.Errorf("%w: trailers too large", ErrHeaderTooLarge)
			}
			if len(trimCR(t[:len(t)-1])) == 0 {
				break
			}
		}
		c.done = true
		return nil
	}
	c.left = int64(n)
	return nil
}

// Drained reports whether a body reader was read to its end, so the
// connection can be reused.
func Drained(r io.Reader) bool {
	switch b := r.(type) {
	case nil:
		return true
	case *lengthReader:
		return b.n == 0
	case *chunkedReader:
		return b.done && b.err == nil
	}
	return false
}

// Discard reads and drops up to limit bytes of a body; it reports whether
// the body ended (so the connection is reusable).
func Discard(r io.Reader, limit int64) bool {
	if r == nil {
		return true
	}
	n, err := io.CopyN(io.Discard, r, limit+1)
	return n <= limit && (err == io.EOF || err == nil && Drained(r)) && Drained(r)
}
