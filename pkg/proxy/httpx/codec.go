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
)

// MaxHeaderBytes bounds a header section (Envoy's default is 60 KiB).
const MaxHeaderBytes = 60 << 10

// readHeaderBlock reads up to and including the blank line ending a header
// section, returning one owned copy of it: every string of the message is
// a slice of this one allocation.
func readHeaderBlock(br *bufio.Reader, scratch []byte) ([]byte, error) {
	buf := scratch[:0]
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				if len(buf)+len(line) > MaxHeaderBytes {
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
		if len(buf) > MaxHeaderBytes {
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

// parseFields parses header lines, lowercasing names in place.
func parseFields(block []byte, h *Header) error {
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
		value := bytes.TrimSpace(line[colon+1:])
		for _, c := range value {
			if c == 0 || c == '\r' || c == '\n' {
				return fmt.Errorf("%w: invalid character in header %q", ErrMalformed, name)
			}
		}
		h.Fields = append(h.Fields, Field{Name: toString(name), Value: toString(value)})
	}
	return nil
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
// framing headers the proxy regenerates.
func bodyFraming(h *Header) (framing, error) {
	f := framing{length: -1}
	te, hasTE := h.Lookup("transfer-encoding")
	if hasTE {
		encs := strings.Split(te, ",")
		last := strings.ToLower(strings.TrimSpace(encs[len(encs)-1]))
		if last != "chunked" || len(encs) > 1 {
			return f, fmt.Errorf("%w: unsupported transfer-encoding %q", ErrMalformed, te)
		}
		f.chunked = true
		h.Del("transfer-encoding")
		h.Del("content-length") // a message with both is chunked
		return f, nil
	}
	cl, hasCL := h.Lookup("content-length")
	if hasCL {
		// Repeated identical values are allowed; differing ones are not.
		parts := strings.Split(cl, ",")
		first := strings.TrimSpace(parts[0])
		for _, p := range parts[1:] {
			if strings.TrimSpace(p) != first {
				return f, fmt.Errorf("%w: conflicting content-length %q", ErrMalformed, cl)
			}
		}
		n, err := strconv.ParseInt(first, 10, 64)
		if err != nil || n < 0 || first == "" || first[0] == '+' {
			return f, fmt.Errorf("%w: invalid content-length %q", ErrMalformed, cl)
		}
		f.length = n
		h.Del("content-length")
	}
	return f, nil
}

// ReadRequest parses a request head. Its body reader reads from br.
func ReadRequest(br *bufio.Reader, req *Request, scratch []byte) error {
	block, err := readHeaderBlock(br, scratch)
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
	for _, c := range line[:sp1] {
		if c < 'A' || c > 'Z' {
			if c < 'a' || c > 'z' {
				if c != '-' && c != '_' {
					return fmt.Errorf("%w: invalid method", ErrMalformed)
				}
			}
		}
	}
	req.Header.Reset()
	if err := parseFields(owned[nl+1:], &req.Header); err != nil {
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
		case strings.HasPrefix(req.Target, "http://") || strings.HasPrefix(req.Target, "https://"):
			// Absolute form: the authority is in the target.
			u := req.Target[strings.Index(req.Target, "//")+2:]
			slash := strings.IndexByte(u, '/')
			if slash < 0 {
				req.Authority, req.Target = u, "/"
			} else {
				req.Authority, req.Target = u[:slash], u[slash:]
			}
		default:
			return fmt.Errorf("%w: invalid request target %q", ErrMalformed, req.Target)
		}
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
	f, err := bodyFraming(&req.Header)
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
}

// noBody reports whether a response to method with status has no body.
func noBody(method string, status int) bool {
	return method == "HEAD" || status/100 == 1 || status == 204 || status == 304
}

// ReadResponse parses a response head for a request with the given method.
func ReadResponse(br *bufio.Reader, method string, resp *Response, scratch []byte) error {
	for {
		block, err := readHeaderBlock(br, scratch)
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
		if err := parseFields(owned[nl+1:], &resp.Header); err != nil {
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
	f, err := bodyFraming(&resp.Header)
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
			resp.Body = &lengthReader{r: br, n: f.length}
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
		line = line[:i] // chunk extensions are ignored
	}
	line = bytes.TrimSpace(line)
	n, err := strconv.ParseUint(toString(line), 16, 63)
	if err != nil || len(line) == 0 {
		return fmt.Errorf("%w: invalid chunk size %q", ErrMalformed, line)
	}
	if n == 0 {
		// Trailers are read and dropped.
		for {
			t, err := c.br.ReadSlice('\n')
			if err != nil {
				if err == io.EOF {
					return io.ErrUnexpectedEOF
				}
				return err
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
