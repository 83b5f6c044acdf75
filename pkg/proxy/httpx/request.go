// Package httpx holds the proxy's own HTTP message types and its HTTP/1.1
// codec. The proxy does not use net/http for HTTP/1.1: a request crosses it
// with a handful of allocations, headers stay in wire order with lowercase
// names (as Envoy sends them), and bodies stream without copies through
// intermediate buffers.
package httpx

import (
	"crypto/tls"
	"io"
	"net/netip"
	"strings"
	"time"
)

// Field is one header.
type Field struct {
	Name  string // lowercase
	Value string
}

// Header is an ordered list of fields with lowercase names. Lookups are
// linear: requests carry a dozen headers, and a slice beats a map at that
// size.
type Header struct {
	Fields []Field
}

// lower returns s lowercased, without allocating when it already is.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// Get returns the first value of name; a nil header has none.
func (h *Header) Get(name string) string {
	if h == nil {
		return ""
	}
	name = lower(name)
	for i := range h.Fields {
		if h.Fields[i].Name == name {
			return h.Fields[i].Value
		}
	}
	return ""
}

// Lookup returns the value of name, joining repeated fields with "," as
// Envoy does when matching, and whether it is present. The join is built
// once: appending field by field is quadratic in the number of repeats.
func (h *Header) Lookup(name string) (string, bool) {
	name = lower(name)
	first, count, size := -1, 0, 0
	for i := range h.Fields {
		if h.Fields[i].Name == name {
			if first < 0 {
				first = i
			}
			count++
			size += len(h.Fields[i].Value) + 1
		}
	}
	switch count {
	case 0:
		return "", false
	case 1:
		return h.Fields[first].Value, true
	}
	var b strings.Builder
	b.Grow(size)
	for i := first; i < len(h.Fields); i++ {
		if h.Fields[i].Name == name {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(h.Fields[i].Value)
		}
	}
	return b.String(), true
}

// Has reports whether name is present.
func (h *Header) Has(name string) bool {
	name = lower(name)
	for i := range h.Fields {
		if h.Fields[i].Name == name {
			return true
		}
	}
	return false
}

// Add appends a field.
func (h *Header) Add(name, value string) {
	h.Fields = append(h.Fields, Field{Name: lower(name), Value: value})
}

// Set replaces every field of name with one.
func (h *Header) Set(name, value string) {
	name = lower(name)
	for i := range h.Fields {
		if h.Fields[i].Name == name {
			h.Fields[i].Value = value
			h.delFrom(name, i+1)
			return
		}
	}
	h.Fields = append(h.Fields, Field{Name: name, Value: value})
}

// Del removes every field of name.
func (h *Header) Del(name string) {
	h.delFrom(lower(name), 0)
}

func (h *Header) delFrom(name string, from int) {
	out := h.Fields[:from]
	for _, f := range h.Fields[from:] {
		if f.Name != name {
			out = append(out, f)
		}
	}
	clear(h.Fields[len(out):])
	h.Fields = out
}

// Reset empties the header keeping its storage.
func (h *Header) Reset() {
	clear(h.Fields)
	h.Fields = h.Fields[:0]
}

// Clone returns a deep copy.
func (h *Header) Clone() Header {
	return Header{Fields: append([]Field(nil), h.Fields...)}
}

// Request is a request as the proxy handles it, whatever the protocol.
type Request struct {
	Method string
	// Target is the path and query as received ("/a/b?x=1").
	Target    string
	Authority string
	Scheme    string // "http" or "https"
	Proto     string // "HTTP/1.0", "HTTP/1.1", "HTTP/2"
	Header    Header
	// ContentLength is the body length, or -1 when unknown (chunked, h2).
	ContentLength int64
	Body          io.Reader
	RemoteAddr    netip.AddrPort
	// RemoteHost is RemoteAddr's address as text (an IPv4-mapped address
	// unmapped), when the connection has it once for all its requests;
	// empty: formatted when needed.
	RemoteHost string
	LocalAddr  netip.AddrPort
	TLS        *tls.ConnectionState
	// Close is set when the client asked to close the connection.
	Close bool
	// AbortBody, when set, makes a Body read that is blocked (or any later
	// one) fail at once, from any goroutine. The proxy uses it when
	// something it does not control (an HTTP/2 transport writing the body
	// upstream) may still be reading the body as the response completes.
	AbortBody func()
	// Received is when the request's first bytes were read, where its
	// duration starts (zero: when the connection manager took it).
	Received time.Time
}

// Path returns the target without its query.
func (r *Request) Path() string {
	if i := strings.IndexByte(r.Target, '?'); i >= 0 {
		return r.Target[:i]
	}
	return r.Target
}

// Query returns the raw query (without '?').
func (r *Request) Query() string {
	if i := strings.IndexByte(r.Target, '?'); i >= 0 {
		return r.Target[i+1:]
	}
	return ""
}

// HasBody reports whether the request carries a body.
func (r *Request) HasBody() bool { return r.Body != nil && r.ContentLength != 0 }

// Pseudo returns Envoy's pseudo-header values (":method", ":path",
// ":authority", ":scheme"), or a regular header.
func (r *Request) Pseudo(name string) (string, bool) {
	switch name {
	case ":method":
		return r.Method, true
	case ":path":
		return r.Target, true
	case ":authority", "host":
		return r.Authority, r.Authority != ""
	case ":scheme":
		return r.Scheme, true
	}
	return r.Header.Lookup(name)
}
