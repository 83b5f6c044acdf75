package hostile

import (
	"strings"
	"time"
)

// Outcomes used often.
const (
	okKeep   = "200 keep, 1 fwd"
	badClose = "400 close"
	// A request the gateway itself answers 403 (route /admin): a bypass
	// would reach the backend.
	forbidden = "403 keep"
)

const host = "Host: a.example.com\r\n"

// post is a request head with the given framing lines.
func post(framing string) string {
	return "POST /{T} HTTP/1.1\r\n" + host + framing
}

func http1Cases() []*Case {
	cs := []*Case{
		// Baselines: the harness itself works.
		{Name: "h1-get", Nginx: "200 keep, 1 fwd", What: "plain GET", Want: []string{okKeep}, Check: all(clean, methodIs("GET"), targetIs("/{T}")),
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-post-length", Nginx: "200 keep, 1 fwd", What: "POST with Content-Length", Want: []string{okKeep}, Check: all(clean, bodyIs("hello")),
			Run: raw(post("Content-Length: 5\r\n\r\nhello"))},
		{Name: "h1-post-chunked", Nginx: "200 keep, 1 fwd", What: "POST chunked, with extensions", Want: []string{okKeep}, Check: all(clean, bodyIs("hello world")),
			Run: raw(post("Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6;a;b=\"c\"\r\n world\r\n0\r\n\r\n"))},

		// Framing: Transfer-Encoding and Content-Length together, and
		// Transfer-Encoding values other parsers read differently.
		{Name: "h1-cl-te", Nginx: "400 close", What: "Content-Length and Transfer-Encoding: chunked",
			Want:  []string{badClose, "200 close, 1 fwd"},
			Check: all(clean, bodyIs("")),
			Run:   raw(post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))},
		{Name: "h1-cl-te-smuggle", Nginx: "400 close", What: "CL.TE smuggling: chunked body ends early, request hidden after it",
			Want:  []string{badClose, "200 close, 1 fwd"},
			Check: all(clean, bodyIs("")),
			Run: h1{parts: []string{post("Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
				"GET /admin/{T}/smuggled HTTP/1.1\r\nX: y")}}.run},
		{Name: "h1-te-cl-smuggle", Nginx: "400 close", What: "TE.CL smuggling: chunk holds a request, Content-Length says 4",
			Want:  []string{badClose, "200 close, 1 fwd"},
			Check: all(clean, bodyIs("GET /admin/{T}/smuggled HTTP/1.1\r\nHost: a\r\n\r\n")),
			Run: raw(post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" +
				"2e\r\nGET /admin/{T}/smuggled HTTP/1.1\r\nHost: a\r\n\r\n\r\n0\r\n\r\n"))},
		{Name: "h1-te-vtab", Nginx: "501 close", What: "Transfer-Encoding: \\x0bchunked (vertical tab)", Want: []string{badClose, "501 close"},
			Run: raw(post("Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n"))},
		{Name: "h1-te-formfeed", Nginx: "501 close", What: "Transfer-Encoding: chunked\\x0c (form feed)", Want: []string{badClose, "501 close"},
			Run: raw(post("Transfer-Encoding: chunked\x0c\r\n\r\n0\r\n\r\n"))},
		{Name: "h1-te-nbsp", Nginx: "501 close", What: "Transfer-Encoding: \\xa0chunked (NBSP)", Want: []string{badClose, "501 close"},
			Run: raw(post("Transfer-Encoding: \xa0chunked\r\n\r\n0\r\n\r\n"))},
		{Name: "h1-te-nel", Nginx: "501 close", What: "Transfer-Encoding: chunked\\x85 (NEL)", Want: []string{badClose, "501 close"},
			Run: raw(post("Transfer-Encoding: chunked\x85\r\n\r\n0\r\n\r\n"))},
		{Name: "h1-te-chunked-identity", Nginx: "501 close", What: "Transfer-Encoding: chunked, identity", Want: []string{badClose, "501 close"},
			Run: raw(post("Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"))},
		{Name: "h1-te-identity", Nginx: "501 close", What: "Transfer-Encoding: identity", Want: []string{badClose, "501 close"},
			Run: raw(post("Transfer-Encoding: identity\r\n\r\nhello"))},
		{Name: "h1-te-xchunked", Nginx: "501 close", What: "Transfer-Encoding: xchunked", Want: []string{badClose, "501 close"},
			Run: raw(post("Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"))},
		{Name: "h1-te-duplicate", Nginx: "400 close", What: "two Transfer-Encoding: chunked fields (chunked applied twice)", Want: []string{badClose, "501 close"},
			Run: raw(post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))},
		{Name: "h1-te-case", Nginx: "200 keep, 1 fwd", What: "Transfer-Encoding: CHUNKED (coding names are case-insensitive)", Want: []string{okKeep}, Check: all(clean, bodyIs("hello")),
			Run: raw(post("Transfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))},
		{Name: "h1-te-http10", Nginx: "400 close", What: "HTTP/1.0 request with Transfer-Encoding: chunked", Want: []string{badClose},
			Run: raw("POST /{T} HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")},

		// Content-Length values.
		{Name: "h1-cl-differ", Nginx: "400 close", What: "two Content-Length fields, 5 and 6", Want: []string{badClose},
			Run: raw(post("Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"))},
		{Name: "h1-cl-list-differ", Nginx: "400 close", What: "Content-Length: 5, 6", Want: []string{badClose},
			Run: raw(post("Content-Length: 5, 6\r\n\r\nhello!"))},
		{Name: "h1-cl-same", Nginx: "400 close", What: "two Content-Length: 5 fields (RFC 9110 allows collapsing)", Want: []string{badClose, okKeep},
			Check: all(clean, bodyIs("hello")),
			Run:   raw(post("Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"))},
		{Name: "h1-cl-minus-zero", Nginx: "400 close", What: "Content-Length: -0", Want: []string{badClose},
			Run: raw(post("Content-Length: -0\r\n\r\n"))},
		{Name: "h1-cl-plus", Nginx: "400 close", What: "Content-Length: +5", Want: []string{badClose},
			Run: raw(post("Content-Length: +5\r\n\r\nhello"))},
		{Name: "h1-cl-vtab", Nginx: "400 close", What: "Content-Length: \\x0b5", Want: []string{badClose},
			Run: raw(post("Content-Length: \x0b5\r\n\r\nhello"))},
		{Name: "h1-cl-hex", Nginx: "400 close", What: "Content-Length: 0x5", Want: []string{badClose},
			Run: raw(post("Content-Length: 0x5\r\n\r\nhello"))},
		{Name: "h1-cl-space-inside", Nginx: "400 close", What: "Content-Length: 1 0", Want: []string{badClose},
			Run: raw(post("Content-Length: 1 0\r\n\r\nhellohello"))},
		{Name: "h1-cl-empty", Nginx: "400 close", What: "empty Content-Length", Want: []string{badClose},
			Run: raw(post("Content-Length: \r\n\r\n"))},
		{Name: "h1-cl-overflow", Nginx: "400 close", What: "Content-Length: 2^64+1", Want: []string{badClose, "413 close"},
			Run: raw(post("Content-Length: 18446744073709551617\r\n\r\nhello"))},
		{Name: "h1-cl-short-body", Nginx: "- close", What: "Content-Length: 10 with 5 bytes, then nothing", Want: []string{"408 close", "- close", "408 close, 1 partial", "- close, 1 partial"},
			Slow: true,
			Run:  h1{parts: []string{post("Content-Length: 10\r\n\r\nhello")}, wait: slowWait, noProbe: true}.run},

		// Chunked coding.
		{Name: "h1-chunk-overflow", Nginx: "400 close", What: "chunk size of 2^68", Want: []string{badClose},
			Run: raw(post("Transfer-Encoding: chunked\r\n\r\n100000000000000000\r\nhello\r\n0\r\n\r\n"))},
		{Name: "h1-chunk-negative", Nginx: "400 close", What: "chunk size -5", Want: []string{badClose},
			Run: raw(post("Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"))},
		{Name: "h1-chunk-0x", Nginx: "400 close", What: "chunk size 0x5", Want: []string{badClose},
			Run: raw(post("Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"))},
		{Name: "h1-chunk-no-crlf", Nginx: "400 close", What: "chunk data not followed by CRLF", Want: []string{badClose, "400 close, 1 partial", "502 close, 1 partial"},
			Run: raw(post("Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"))},
		{Name: "h1-chunk-lf-only", Nginx: "200 keep, 1 fwd", What: "chunked framing lines ended by bare LF", Want: []string{badClose, okKeep},
			Check: all(clean, bodyIs("hello")),
			Run:   raw(post("Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"))},
		{Name: "h1-chunk-ext-huge", Nginx: "200 keep, 1 fwd", What: "one chunk extension of 64 KiB", Want: []string{badClose, "400 close, 1 partial", "413 close"},
			Run: raw(post("Transfer-Encoding: chunked\r\n\r\n5;x=" + strings.Repeat("a", 64<<10) + "\r\nhello\r\n0\r\n\r\n"))},
		{Name: "h1-chunk-ext-bad", Nginx: "400 close", What: "chunk extension with a bare CR", Want: []string{badClose, "400 close, 1 partial"},
			Run: raw(post("Transfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n"))},
		{Name: "h1-chunk-trailer-smuggle", Nginx: "200 keep, 1 fwd", What: "trailer section carrying Content-Length and a second request", Want: []string{okKeep, badClose, "200 close, 1 fwd"},
			Check: all(clean, bodyIs("hello")),
			Run: raw(post("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 44\r\n\r\n" +
				"GET /admin/{T}/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"))},

		// Header syntax.
		{Name: "h1-obs-fold", Nginx: "400 close", What: "obsolete line folding", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "X-A: a\r\n  b\r\n\r\n")},
		{Name: "h1-header-bare-cr", Nginx: "400 close", What: "bare CR inside a field value", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "X-A: a\rX-Injected: 1\r\n\r\n")},
		{Name: "h1-header-nul", Nginx: "400 close", What: "NUL inside a field value", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n")},
		{Name: "h1-header-bare-lf", Nginx: "200 keep, 1 fwd", What: "header lines ended by bare LF", Want: []string{badClose, okKeep}, Check: clean,
			Run: raw("GET /{T} HTTP/1.1\n" + "Host: a.example.com\nX-A: b\n\n")},
		{Name: "h1-space-before-colon", Nginx: "400 close", What: "\"X-A : b\" (space between name and colon)", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "X-A : b\r\n\r\n")},
		{Name: "h1-host-space-before-colon", Nginx: "400 close", What: "\"Host : evil\" next to a Host field", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "Host : evil.example.com\r\n\r\n")},
		{Name: "h1-header-name-ctl", Nginx: "400 close", What: "control byte in a field name", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "X\x01A: b\r\n\r\n")},
		{Name: "h1-header-empty-name", Nginx: "400 close", What: "field line \": b\"", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + ": b\r\n\r\n")},
		{Name: "h1-header-no-colon", Nginx: "400 close", What: "field line without a colon", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "X-A b\r\n\r\n")},
		{Name: "h1-header-utf8-value", Nginx: "200 keep, 1 fwd", What: "UTF-8 and obs-text in a value (allowed)", Want: []string{okKeep},
			Check: all(clean, headerIs("x-a", "caf\xc3\xa9 \xff")),
			Run:   raw("GET /{T} HTTP/1.1\r\n" + host + "X-A: caf\xc3\xa9 \xff\r\n\r\n")},

		// Host.
		{Name: "h1-host-twice", Nginx: "400 close", What: "two Host fields", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "Host: b.example.com\r\n\r\n")},
		{Name: "h1-host-missing", Nginx: "400 close", What: "HTTP/1.1 without Host", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\nX-A: b\r\n\r\n")},
		{Name: "h1-host-empty-http10", Nginx: "200 close, 1 fwd [check: backend got \"GET /{T} HTTP/1.1\": 0 host fields]", What: "HTTP/1.0 without Host", Want: []string{"200 close, 1 fwd", badClose},
			Check: clean,
			Run:   raw("GET /{T} HTTP/1.0\r\n\r\n")},
		{Name: "h1-host-bad-chars", Nginx: "400 close", What: "Host: a b (space in the authority)", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1\r\nHost: a b\r\n\r\n")},
		{Name: "h1-absolute-form", Nginx: "200 keep, 1 fwd", What: "absolute-form target overrides Host", Want: []string{okKeep},
			Check: all(clean, headerIs("host", "a.example.com"), targetIs("/{T}")),
			Run:   raw("GET http://a.example.com/{T} HTTP/1.1\r\nHost: b.example.com\r\n\r\n")},
		{Name: "h1-absolute-form-cr", Nginx: "400 close", What: "CR inside an absolute-form authority", Want: []string{badClose},
			Run: raw("GET http://a.example.com\rX-Injected:1/{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-absolute-form-nul", Nginx: "400 close", What: "NUL inside an absolute-form authority", Want: []string{badClose},
			Run: raw("GET http://a.example.com\x00.evil/{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-absolute-form-userinfo", Nginx: "400 close", What: "userinfo in an absolute-form authority", Want: []string{badClose, okKeep},
			Check: all(clean, headerAbsent("x-injected")),
			Run:   raw("GET http://user:pass@a.example.com/{T} HTTP/1.1\r\n" + host + "\r\n")},

		// Request line.
		{Name: "h1-target-bare-cr", Nginx: "400 close", What: "bare CR in the request target", Want: []string{badClose},
			Run: raw("GET /{T}\rX-Injected: 1 HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-target-nul", Nginx: "400 close", What: "NUL in the request target", Want: []string{badClose},
			Run: raw("GET /{T}\x00x HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-target-space", Nginx: "400 close", What: "space inside the request target", Want: []string{badClose},
			Run: raw("GET /{T} x HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-target-tab", Nginx: "400 close", What: "tab inside the request target", Want: []string{badClose},
			Run: raw("GET /{T}\tx HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-target-del", Nginx: "400 close", What: "DEL byte in the request target", Want: []string{badClose},
			Run: raw("GET /{T}\x7f HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-target-high-bytes", Nginx: "200 keep, 1 fwd", What: "raw bytes >= 0x80 in the request target", Want: []string{badClose, okKeep},
			Check: clean,
			Run:   raw("GET /{T}\xc3\xa9 HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-line-double-space", Nginx: "200 keep, 1 fwd", What: "two spaces after the method", Want: []string{badClose},
			Run: raw("GET  /{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-line-trailing-space", Nginx: "200 keep, 1 fwd", What: "space after the version", Want: []string{badClose},
			Run: raw("GET /{T} HTTP/1.1 \r\n" + host + "\r\n")},
		{Name: "h1-line-tab-separator", Nginx: "400 close", What: "tab between method and target", Want: []string{badClose},
			Run: raw("GET\t/{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-http09", Nginx: "- junk, 1 fwd", What: "HTTP/0.9 request line", Want: []string{badClose, "- close"},
			Run: raw("GET /{T}\r\n\r\n")},
		{Name: "h1-version-1.2", Nginx: "200 keep, 1 fwd", What: "HTTP/1.2", Want: []string{badClose, "505 close", okKeep},
			Check: clean,
			Run:   raw("GET /{T} HTTP/1.2\r\n" + host + "\r\n")},
		{Name: "h1-version-2.0", Nginx: "505 close", What: "HTTP/2.0 in an HTTP/1 request line", Want: []string{badClose, "505 close"},
			Run: raw("GET /{T} HTTP/2.0\r\n" + host + "\r\n")},
		{Name: "h1-version-lowercase", Nginx: "400 close", What: "http/1.1", Want: []string{badClose},
			Run: raw("GET /{T} http/1.1\r\n" + host + "\r\n")},
		{Name: "h1-version-leading-zero", Nginx: "400 close", What: "HTTP/01.1", Want: []string{badClose, "505 close"},
			Run: raw("GET /{T} HTTP/01.1\r\n" + host + "\r\n")},
		{Name: "h1-method-bad-char", Nginx: "400 close", What: "method G@T", Want: []string{badClose},
			Run: raw("G@T /{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-method-connect", Nginx: "400 close", What: "CONNECT (not enabled at the gateway)", Want: []string{badClose, "403 close", "404 close", "405 close", "403 keep", "404 keep"},
			Run: raw("CONNECT {T}.example.com:443 HTTP/1.1\r\nHost: {T}.example.com:443\r\n\r\n")},
		{Name: "h1-leading-crlf", Nginx: "200 keep, 1 fwd", What: "empty lines before the request line (tolerated, RFC 9112 2.2)", Want: []string{okKeep},
			Check: clean,
			Run:   raw("\r\n\r\nGET /{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-long-target", Nginx: "414 close", What: "70 KiB request target", Want: []string{"414 close", "431 close", badClose},
			Run: raw("GET /{T}/" + strings.Repeat("a", 70<<10) + " HTTP/1.1\r\n" + host + "\r\n")},

		// Pipelining, Expect, Upgrade.
		{Name: "h1-pipeline", Nginx: "200 200 keep, 2 fwd", What: "two GETs in one write", Want: []string{"200 200 keep, 2 fwd"},
			Check: all(clean, methodIs("GET")),
			Run: h1{reads: 2, parts: []string{"GET /{T}/1 HTTP/1.1\r\n" + host + "\r\n" +
				"GET /{T}/2 HTTP/1.1\r\n" + host + "\r\n"}}.run},
		{Name: "h1-pipeline-post", Nginx: "200 200 keep, 2 fwd", What: "POST with a body and a GET in one write", Want: []string{"200 200 keep, 2 fwd"},
			Check: clean,
			Run:   h1{reads: 2, parts: []string{post("Content-Length: 5\r\n\r\nhello") + "GET /{T}/2 HTTP/1.1\r\n" + host + "\r\n"}}.run},
		{Name: "h1-pipeline-after-error", Nginx: "400 close", What: "a bad request followed by a good one in one write", Want: []string{badClose},
			Run: h1{reads: 2, parts: []string{"GET /{T} HTTP/1.1\r\n\r\nGET /{T}/2 HTTP/1.1\r\n" + host + "\r\n"}}.run},
		{Name: "h1-expect-100", Nginx: "100 200 keep, 1 fwd", What: "Expect: 100-continue, body sent after the interim response",
			Want: []string{"100 200 keep, 1 fwd"}, Check: all(clean, bodyIs("hello")),
			Run: h1{parts: []string{post("Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")}, afterFirst: "hello"}.run},
		{Name: "h1-expect-unknown", Nginx: "200 keep, 1 fwd", What: "Expect: something-else", Want: []string{"417 close", "417 keep", okKeep}, Check: clean,
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "Expect: something-else\r\n\r\n")},
		{Name: "h1-upgrade-websocket", Nginx: "200 keep, 1 fwd", What: "WebSocket upgrade the backend declines", Want: []string{okKeep, "200 close, 1 fwd"}, Check: clean,
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "Connection: Upgrade\r\nUpgrade: websocket\r\n" +
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")},
		{Name: "h1-upgrade-h2c", Nginx: "200 keep, 1 fwd [check: backend got HTTP2-Settings: \"AAMAAABkAARAAAAAAAIAAAAA\"]", What: "Upgrade: h2c (must not switch protocols, nor pass the upgrade on)", Want: []string{okKeep},
			Check: all(clean, headerAbsent("upgrade", "http2-settings")),
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" +
				"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")},

		// Hop-by-hop and the gateway's own headers.
		{Name: "h1-connection-strips-gateway-headers", Nginx: "200 keep, 1 fwd", What: "Connection: keep-alive, x-forwarded-for, x-request-id, x-forwarded-proto",
			Want: []string{okKeep},
			Check: all(clean,
				headerMatches("x-forwarded-for", "ending with the client address", func(v string) bool { return strings.HasSuffix(v, "127.0.0.1") }),
				headerIs("x-forwarded-proto", "http"),
				headerMatches("x-request-id", "set", func(v string) bool { return v != "" })),
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "Connection: keep-alive, x-forwarded-for, x-request-id, x-forwarded-proto\r\n\r\n")},
		{Name: "h1-connection-hop-by-hop", Nginx: "200 keep, 1 fwd [check: backend got X-Secret: \"1\"]", What: "Connection: x-secret names a hop-by-hop field", Want: []string{okKeep},
			Check: all(clean, headerAbsent("x-secret", "connection", "keep-alive", "proxy-connection")),
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "Connection: x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n" +
				"Proxy-Connection: keep-alive\r\n\r\n")},
		{Name: "h1-connection-close", Nginx: "200 close, 1 fwd", What: "Connection: close", Want: []string{"200 close, 1 fwd"}, Check: clean,
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "Connection: close\r\n\r\n")},
		{Name: "h1-xff-appended", Nginx: "200 keep, 1 fwd", What: "client-supplied X-Forwarded-For is appended to", Want: []string{okKeep},
			Check: all(clean, headerMatches("x-forwarded-for", "\"203.0.113.9,127.0.0.1\"", func(v string) bool {
				return strings.ReplaceAll(v, " ", "") == "203.0.113.9,127.0.0.1"
			})),
			Run: raw("GET /{T} HTTP/1.1\r\n" + host + "X-Forwarded-For: 203.0.113.9\r\n\r\n")},
		{Name: "h1-xenvoy-spoof-external", Nginx: "200 keep, 1 fwd [check: backend got X-Envoy-Internal: \"true\"]", What: "external client sends x-envoy-* and x-request-id", Want: []string{okKeep}, External: true,
			Check: all(clean, headerAbsent("x-envoy-internal", "x-envoy-original-path", "x-envoy-retry-on", "x-envoy-upstream-rq-timeout-ms",
				"x-envoy-decorator-operation"),
				headerMatches("x-request-id", "replaced", func(v string) bool { return v != "attacker-chosen" })),
			Run: h1{external: true, parts: []string{"GET /{T} HTTP/1.1\r\n" + host + "X-Envoy-Internal: true\r\n" +
				"X-Envoy-Original-Path: /admin\r\nX-Envoy-Retry-On: 5xx\r\nX-Envoy-Upstream-Rq-Timeout-Ms: 1\r\n" +
				"X-Envoy-Decorator-Operation: x\r\nX-Request-Id: attacker-chosen\r\n\r\n"}}.run},

		// The gateway's own rule (prefix /admin answers 403) must not be
		// bypassed by spelling the path differently.
		{Name: "h1-admin-direct", Nginx: "403 keep", What: "GET /admin/… (the gateway answers 403)", Want: []string{forbidden},
			Run: raw("GET /admin/{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-admin-dot-segment", Nginx: "403 keep", What: "GET /x/../admin/…", Want: []string{forbidden},
			Run: raw("GET /x/../admin/{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-admin-dot", Nginx: "403 keep", What: "GET /./admin/…", Want: []string{forbidden},
			Run: raw("GET /./admin/{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-admin-encoded", Nginx: "403 keep", What: "GET /%61dmin/… (percent-encoded unreserved)", Want: []string{forbidden},
			Run: raw("GET /%61dmin/{T} HTTP/1.1\r\n" + host + "\r\n")},
		{Name: "h1-admin-encoded-dots", Nginx: "403 keep", What: "GET /x/%2e%2e/admin/…", Want: []string{forbidden},
			Run: raw("GET /x/%2e%2e/admin/{T} HTTP/1.1\r\n" + host + "\r\n")},
	}
	for _, c := range cs {
		c.Category = "http1"
	}
	return cs
}

// slowWait waits a little beyond the server's timeout.
func slowWait(env *Env) time.Duration { return env.Timeout + 3*time.Second }
