package httpx

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
)

// isHopByHop reports whether a (lowercase) name describes one connection
// and is never forwarded (RFC 9110 section 7.6.1, and the legacy names).
func isHopByHop(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// RemoveHopByHop deletes hop-by-hop headers, including those a Connection
// header names, in one pass over the fields: deleting each nominated name
// by its own scan is quadratic, and a client controls the number of
// names. It must run on a message as received, before the proxy adds
// headers of its own, so that a client cannot nominate those away
// ("Connection: x-forwarded-for").
func RemoveHopByHop(h *Header) {
	var nominated map[string]struct{}
	for i := range h.Fields {
		if h.Fields[i].Name != "connection" {
			continue
		}
		for _, tok := range splitComma(h.Fields[i].Value) {
			if nominated == nil {
				nominated = map[string]struct{}{}
			}
			nominated[lower(tok)] = struct{}{}
		}
	}
	out := h.Fields[:0]
	for _, f := range h.Fields {
		if isHopByHop(f.Name) {
			continue
		}
		if _, ok := nominated[f.Name]; ok {
			continue
		}
		out = append(out, f)
	}
	clear(h.Fields[len(out):])
	h.Fields = out
}

// RemoveFixedHopByHop deletes the hop-by-hop headers by name only: for
// headers the proxy itself assembled (route header operations), where no
// Connection header can nominate anything.
func RemoveFixedHopByHop(h *Header) {
	out := h.Fields[:0]
	for _, f := range h.Fields {
		if !isHopByHop(f.Name) {
			out = append(out, f)
		}
	}
	clear(h.Fields[len(out):])
	h.Fields = out
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			tok := s[start:i]
			for len(tok) > 0 && (tok[0] == ' ' || tok[0] == '\t') {
				tok = tok[1:]
			}
			for len(tok) > 0 && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
				tok = tok[:len(tok)-1]
			}
			if tok != "" {
				out = append(out, tok)
			}
			start = i + 1
		}
	}
	return out
}

func writeFields(bw *bufio.Writer, h *Header) {
	for _, f := range h.Fields {
		bw.WriteString(f.Name)
		bw.WriteString(": ")
		bw.WriteString(f.Value)
		bw.WriteString("\r\n")
	}
}

// WriteRequestHead writes a request line and headers. bodyLen is the
// body length, -1 for chunked, 0 for none.
func WriteRequestHead(bw *bufio.Writer, method, target, authority string, h *Header, bodyLen int64) {
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(target)
	bw.WriteString(" HTTP/1.1\r\nhost: ")
	bw.WriteString(authority)
	bw.WriteString("\r\n")
	writeFields(bw, h)
	switch {
	case bodyLen > 0:
		bw.WriteString("content-length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), bodyLen, 10))
		bw.WriteString("\r\n")
	case bodyLen < 0:
		bw.WriteString("transfer-encoding: chunked\r\n")
	case method == "POST" || method == "PUT" || method == "PATCH":
		bw.WriteString("content-length: 0\r\n")
	}
	bw.WriteString("\r\n")
}

var statusLines = func() map[int]string {
	m := map[int]string{}
	for code := 100; code < 600; code++ {
		if t := http.StatusText(code); t != "" {
			m[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + t + "\r\n"
		}
	}
	return m
}()

// WriteResponseHead writes a status line and headers. bodyLen is the body
// length or -1 when unknown: then the body is chunked if the client speaks
// HTTP/1.1, else delimited by closing the connection. It returns whether
// the body must be chunked.
func WriteResponseHead(bw *bufio.Writer, status int, h *Header, bodyLen int64, clientProto string, close, noBody bool) (chunked bool) {
	if line, ok := statusLines[status]; ok {
		bw.WriteString(line)
	} else {
		bw.WriteString("HTTP/1.1 ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(status), 10))
		bw.WriteString(" \r\n")
	}
	writeFields(bw, h)
	switch {
	case bodyLen >= 0:
		if !(noBody && bodyLen == 0 && (status == 204 || status == 304 || status/100 == 1)) {
			bw.WriteString("content-length: ")
			// Formatted in the buffer's free space: a local array would
			// escape through Write.
			bw.Write(strconv.AppendInt(bw.AvailableBuffer(), bodyLen, 10))
			bw.WriteString("\r\n")
		}
	case noBody:
	case clientProto == "HTTP/1.1":
		bw.WriteString("transfer-encoding: chunked\r\n")
		chunked = true
	default:
		close = true
	}
	if close {
		bw.WriteString("connection: close\r\n")
	}
	bw.WriteString("\r\n")
	return chunked
}

// ChunkedWriter encodes chunked transfer coding onto a buffered writer.
type ChunkedWriter struct {
	W *bufio.Writer
}

func (c ChunkedWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.W.Write(strconv.AppendInt(c.W.AvailableBuffer(), int64(len(p)), 16))
	c.W.WriteString("\r\n")
	n, err := c.W.Write(p)
	if err != nil {
		return n, err
	}
	_, err = c.W.WriteString("\r\n")
	return n, err
}

// Close writes the last chunk.
func (c ChunkedWriter) Close() error {
	_, err := c.W.WriteString("0\r\n\r\n")
	return err
}

// CopyBody copies a body to w, flushing fl when the source has nothing
// buffered so streamed responses are not held back.
func CopyBody(w io.Writer, r io.Reader, buf []byte, fl interface{ Flush() error }) (int64, error) {
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, &WriteError{werr}
			}
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// WriteError marks a failure writing to the destination (as opposed to
// reading from the source).
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "write: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }
