package hcm

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

// internal reports whether an address is "internal" in Envoy's sense
// (RFC 1918, RFC 4193 unique local, loopback): such clients are trusted
// with their x-request-id and x-envoy-* headers.
func internal(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate()
}

// edgeHeaders applies Envoy's edge behaviour (use_remote_address): append
// the peer to x-forwarded-for, set x-forwarded-proto, decide whether the
// request is external, sanitise x-envoy-* headers from external clients,
// and make sure there is an x-request-id. It returns false for requests
// that must be rejected.
func (x *exchange) edgeHeaders() bool {
	h, req := x.h, x.req
	remote := req.RemoteAddr.Addr().Unmap()
	xff, hasXFF := req.Header.Lookup("x-forwarded-for")
	if h.cfg.UseRemoteAddress {
		x.external = !internal(remote)
		if remote.IsValid() {
			if hasXFF {
				xff += "," + remoteHost(req, remote)
			} else {
				xff = remoteHost(req, remote)
			}
			req.Header.Set("x-forwarded-for", xff)
		}
		req.Header.Set("x-forwarded-proto", req.Scheme)
	} else {
		// Trust the last hop in x-forwarded-for.
		if hasXFF {
			parts := strings.Split(xff, ",")
			idx := len(parts) - 1 - h.cfg.XFFTrustedHops
			if idx >= 0 {
				if a, err := netip.ParseAddr(strings.TrimSpace(parts[idx])); err == nil {
					x.external = !internal(a)
				}
			}
		}
		if !req.Header.Has("x-forwarded-proto") {
			req.Header.Set("x-forwarded-proto", req.Scheme)
		}
	}
	x.xff = xff
	if x.external {
		for i := 0; i < len(req.Header.Fields); i++ {
			if strings.HasPrefix(req.Header.Fields[i].Name, "x-envoy-") {
				req.Header.Del(req.Header.Fields[i].Name)
				i--
			}
		}
		if remote.IsValid() {
			req.Header.Set("x-envoy-external-address", remoteHost(req, remote))
		}
	} else if h.cfg.UseRemoteAddress {
		req.Header.Set("x-envoy-internal", "true")
	}
	rid := req.Header.Get("x-request-id")
	if h.cfg.GenerateRequestID && (rid == "" || x.external) {
		rid = newRequestIDIn(&x.rid)
		req.Header.Set("x-request-id", rid)
	}
	x.requestID = rid
	x.ua = req.Header.Get("user-agent")
	x.clientCert()
	return true
}

// remoteHost is remote (the request's unmapped peer address) as text.
func remoteHost(req *httpx.Request, remote netip.Addr) string {
	if req.RemoteHost != "" {
		return req.RemoteHost
	}
	return remote.String()
}

// clientCert applies forward_client_cert_details: drop what the client
// sent, and (SANITIZE_SET) describe the verified client certificate.
func (x *exchange) clientCert() {
	h, req := x.h, x.req
	switch h.cfg.ForwardClientCert {
	case XFCCForwardOnly, XFCCAlwaysForwardOnly:
		return
	case XFCCAppendForward:
	default:
		req.Header.Del("x-forwarded-client-cert")
	}
	if h.cfg.ForwardClientCert != XFCCSanitizeSet && h.cfg.ForwardClientCert != XFCCAppendForward {
		return
	}
	if req.TLS == nil || len(req.TLS.PeerCertificates) == 0 {
		return
	}
	cert := req.TLS.PeerCertificates[0]
	sum := sha256.Sum256(cert.Raw)
	var b strings.Builder
	b.WriteString("Hash=")
	b.WriteString(hex.EncodeToString(sum[:]))
	if h.cfg.CertSubject {
		b.WriteString(`;Subject="`)
		b.WriteString(strings.ReplaceAll(cert.Subject.String(), `"`, `\"`))
		b.WriteByte('"')
	}
	if h.cfg.CertURI {
		for _, u := range cert.URIs {
			b.WriteString(";URI=" + u.String())
		}
	}
	if h.cfg.CertDNS {
		for _, d := range cert.DNSNames {
			b.WriteString(";DNS=" + d)
		}
	}
	if h.cfg.ForwardClientCert == XFCCAppendForward && req.Header.Has("x-forwarded-client-cert") {
		req.Header.Set("x-forwarded-client-cert", req.Header.Get("x-forwarded-client-cert")+","+b.String())
		return
	}
	req.Header.Set("x-forwarded-client-cert", b.String())
}

const hexDigits = "0123456789abcdef"

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var out [36]byte
	return string(formatRequestID(&out))
}

// newRequestIDIn is newRequestID writing into out, which its owner never
// writes again: the string shares out's memory instead of allocating.
func newRequestIDIn(out *[36]byte) string {
	return unsafe.String(&formatRequestID(out)[0], len(out))
}

func formatRequestID(out *[36]byte) []byte {
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i], b[8+i] = byte(a>>(8*i)), byte(c>>(8*i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	j := 0
	for i, v := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexDigits[v>>4], hexDigits[v&0xf]
		j += 2
	}
	return out[:]
}

// underscores applies headers_with_underscores_action. Header names with
// underscores are how "X_Auth_User" reaches an application (CGI, WSGI and
// PHP map '-' and '_' alike) next to the "X-Auth-User" the gateway checked.
func (x *exchange) underscores() bool {
	if x.h.cfg.Underscores == UnderscoresAllow {
		return true
	}
	hdr := &x.req.Header
	for i := 0; i < len(hdr.Fields); i++ {
		if strings.IndexByte(hdr.Fields[i].Name, '_') < 0 {
			continue
		}
		if x.h.cfg.Underscores == UnderscoresReject {
			x.h.st.underscoresRejected.Inc()
			return false
		}
		x.h.st.underscoresDropped.Inc()
		hdr.Fields = append(hdr.Fields[:i], hdr.Fields[i+1:]...)
		i--
	}
	return true
}

type pathVerdict int

const (
	pathForward pathVerdict = iota
	pathReject
	pathRedirect
)

// processPath applies path_with_escaped_slashes_action, normalize_path
// and merge_slashes, in Envoy's order, to a request target. With
// pathRedirect, the string is the location to redirect to.
func (cfg *Config) processPath(target string) (string, pathVerdict) {
	if target == "*" {
		return target, pathForward
	}
	path, query := target, ""
	if i := strings.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	unescaped := false
	if cfg.EscapedSlashes != EscapedSlashesKeep && hasEscapedSlash(path) {
		if cfg.EscapedSlashes == EscapedSlashesReject {
			return "", pathReject
		}
		path, unescaped = unescapeSlashes(path), true
	}
	if cfg.NormalizePath {
		p, ok := normalizePath(path)
		if !ok {
			return "", pathReject
		}
		path = p
	}
	if cfg.MergeSlashes {
		path = mergeSlashes(path)
	}
	if unescaped && cfg.EscapedSlashes == EscapedSlashesUnescapeAndRedirect {
		return path + query, pathRedirect
	}
	return path + query, pathForward
}

func hasEscapedSlash(p string) bool {
	for i := 0; i+2 < len(p); i++ {
		if p[i] == '%' && (p[i+1] == '2' && (p[i+2] == 'f' || p[i+2] == 'F') || p[i+1] == '5' && (p[i+2] == 'c' || p[i+2] == 'C')) {
			return true
		}
	}
	return false
}

func unescapeSlashes(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			switch {
			case p[i+1] == '2' && (p[i+2] == 'f' || p[i+2] == 'F'):
				b.WriteByte('/')
				i += 2
				continue
			case p[i+1] == '5' && (p[i+2] == 'c' || p[i+2] == 'C'):
				b.WriteByte('\\')
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// mergeSlashes collapses runs of '/' into one.
func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// normalizePath applies RFC 3986 normalisation to a path, as Envoy's
// normalize_path does (with Chromium's URL canonicalizer): decode
// percent-encoded unreserved characters, uppercase other escapes, turn
// backslashes into slashes, and remove dot segments. It rejects paths that
// do not start with '/' and broken escapes.
func normalizePath(path string) (string, bool) {
	if !strings.HasPrefix(path, "/") {
		return "", false
	}
	if !strings.ContainsAny(path, "%\\") && !strings.Contains(path, "/.") {
		return path, true // the common case: nothing to do
	}
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch c {
		case '%':
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return "", false
			}
			v := unhex(path[i+1])<<4 | unhex(path[i+2])
			if isUnreserved(v) {
				b.WriteByte(v)
			} else {
				b.WriteByte('%')
				b.WriteByte(upper(path[i+1]))
				b.WriteByte(upper(path[i+2]))
			}
			i += 2
		case '\\':
			b.WriteByte('/')
		default:
			b.WriteByte(c)
		}
	}
	return removeDotSegments(b.String()), true
}

func removeDotSegments(p string) string {
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		switch s {
		case ".":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	r := strings.Join(out, "/")
	if !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	return r
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'f' {
		return c - 32
	}
	return c
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

type dateCache struct {
	sec int64
	s   string
}

var cachedDate atomic.Pointer[dateCache]

// httpDate returns the current time in HTTP format, formatted at most once
// per second.
func httpDate() string { return httpDateAt(time.Now()) }

// httpDateAt is httpDate for a clock reading the caller has.
func httpDateAt(now time.Time) string {
	if d := cachedDate.Load(); d != nil && d.sec == now.Unix() {
		return d.s
	}
	d := &dateCache{sec: now.Unix(), s: now.UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT")}
	cachedDate.Store(d)
	return d.s
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
