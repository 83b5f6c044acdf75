package hostile

import (
	"fmt"
	"strings"

	"golang.org/x/net/http2"
)

// Outcomes of a malformed HTTP/2 request: RFC 9113 8.1.1 makes it a
// stream error of type PROTOCOL_ERROR; answering 400 is what nginx does
// and is as good (nothing is forwarded either way).
var (
	h2Malformed = []string{"RST(PROTOCOL_ERROR) keep", "400 keep"}
	h2OK        = []string{"200 keep, 1 fwd"}
)

// connErr: a connection error of the given code.
func connErr(code http2.ErrCode) []string {
	return []string{"- goaway(" + code.String() + ")"}
}

func h2Cases() []*Case {
	get := func(extra ...string) [][2]string { return req("GET", "/{T}", extra...) }
	cs := []*Case{
		{Name: "h2-get", Nginx: "200 keep, 1 fwd", What: "plain GET over h2c", Want: h2OK, Check: all(clean, methodIs("GET")),
			Run: h2one(get(), true)},
		{Name: "h2-post", Nginx: "200 keep, 1 fwd", What: "POST with content-length and DATA", Want: h2OK, Check: all(clean, bodyIs("hello")),
			Run: h2one(req("POST", "/{T}", "content-length", "5"), false, "hello")},
		{Name: "h2-post-no-length", Nginx: "200 keep, 1 fwd", What: "POST, DATA without content-length", Want: h2OK, Check: all(clean, bodyIs("hello world")),
			Run: h2one(req("POST", "/{T}"), false, "hello", " world")},

		// content-length that the frames contradict (RFC 9113 8.1.1).
		{Name: "h2-cl-endstream-headers", Nginx: "400 keep", What: "POST content-length: 5 and END_STREAM on HEADERS (no body)", Want: h2Malformed,
			Run: h2one(req("POST", "/{T}", "content-length", "5"), true)},
		{Name: "h2-cl-get-endstream", Nginx: "400 keep", What: "GET content-length: 40 and END_STREAM on HEADERS", Want: h2Malformed,
			Run: h2one(get("content-length", "40"), true)},
		{Name: "h2-cl-longer-than-data", Nginx: "400 keep", What: "content-length: 10, 5 bytes of DATA", Want: append(h2Malformed, "RST(PROTOCOL_ERROR) keep, 1 partial"),
			Run: h2one(req("POST", "/{T}", "content-length", "10"), false, "hello")},
		{Name: "h2-cl-shorter-than-data", Nginx: "400 keep", What: "content-length: 2, 5 bytes of DATA", Want: append(h2Malformed, "RST(PROTOCOL_ERROR) keep, 1 partial"),
			Run: h2one(req("POST", "/{T}", "content-length", "2"), false, "hello")},
		{Name: "h2-cl-invalid", Nginx: "400 keep", What: "content-length: abc", Want: h2Malformed,
			Run: h2one(req("POST", "/{T}", "content-length", "abc"), false, "hello")},
		{Name: "h2-cl-differ", Nginx: "400 keep", What: "content-length 5 and 6", Want: h2Malformed,
			Run: h2one(req("POST", "/{T}", "content-length", "5", "content-length", "6"), false, "hello")},

		// Pseudo-header fields (RFC 9113 8.3).
		{Name: "h2-pseudo-missing-method", Nginx: "400 keep", What: "no :method", Want: h2Malformed,
			Run: h2one(pairs(":scheme", "http", ":authority", "a.example.com", ":path", "/{T}"), true)},
		{Name: "h2-pseudo-missing-path", Nginx: "400 keep", What: "no :path", Want: h2Malformed,
			Run: h2one(pairs(":method", "GET", ":scheme", "http", ":authority", "a.example.com", "x-t", "{T}"), true)},
		{Name: "h2-pseudo-missing-scheme", Nginx: "400 keep", What: "no :scheme", Want: h2Malformed,
			Run: h2one(pairs(":method", "GET", ":authority", "a.example.com", ":path", "/{T}"), true)},
		{Name: "h2-pseudo-missing-authority", Nginx: "400 keep", What: "neither :authority nor host", Want: h2Malformed,
			Run: h2one(pairs(":method", "GET", ":scheme", "http", ":path", "/{T}"), true)},
		{Name: "h2-pseudo-duplicate-path", Nginx: "400 keep", What: "two :path fields", Want: h2Malformed,
			Run: h2one(append(get(), [2]string{":path", "/admin/{T}"}), true)},
		{Name: "h2-pseudo-duplicate-method", Nginx: "400 keep", What: "two :method fields", Want: h2Malformed,
			Run: h2one(append(get(), [2]string{":method", "POST"}), true)},
		{Name: "h2-pseudo-unknown", Nginx: "400 keep", What: ":foo pseudo-header", Want: h2Malformed,
			Run: h2one(append(get(), [2]string{":foo", "bar"}), true)},
		{Name: "h2-pseudo-status-in-request", Nginx: "400 keep", What: ":status in a request", Want: h2Malformed,
			Run: h2one(append(get(), [2]string{":status", "200"}), true)},
		{Name: "h2-pseudo-after-regular", Nginx: "200 keep, 1 fwd", What: "a regular field before :path", Want: h2Malformed,
			Run: h2one(pairs(":method", "GET", ":scheme", "http", ":authority", "a.example.com", "x-a", "b", ":path", "/{T}"), true)},
		{Name: "h2-path-empty", Nginx: "400 goaway(PROTOCOL_ERROR)", What: ":path empty", Want: h2Malformed,
			Run: h2one(pairs(":method", "GET", ":scheme", "http", ":authority", "a.example.com", ":path", "", "x-t", "{T}"), true)},
		{Name: "h2-path-relative", Nginx: "400 keep", What: ":path without a leading slash", Want: h2Malformed,
			Run: h2one(req("GET", "{T}"), true)},
		{Name: "h2-path-space", Nginx: "400 keep", What: ":path with a space", Want: h2Malformed,
			Run: h2one(req("GET", "/{T} HTTP/1.1"), true)},
		{Name: "h2-path-cr", Nginx: "RST(PROTOCOL_ERROR) keep", What: ":path with CR", Want: h2Malformed,
			Run: h2one(req("GET", "/{T}\rX-Injected: 1"), true)},
		{Name: "h2-path-lf", Nginx: "RST(PROTOCOL_ERROR) keep", What: ":path with LF", Want: h2Malformed,
			Run: h2one(req("GET", "/{T}\nX-Injected: 1"), true)},
		{Name: "h2-path-nul", Nginx: "RST(PROTOCOL_ERROR) keep", What: ":path with NUL", Want: h2Malformed,
			Run: h2one(req("GET", "/{T}\x00x"), true)},
		{Name: "h2-method-space", Nginx: "400 keep", What: ":method with a space", Want: h2Malformed,
			Run: h2one(req("GET /admin", "/{T}"), true)},
		{Name: "h2-authority-cr", Nginx: "RST(PROTOCOL_ERROR) keep", What: ":authority with CR", Want: h2Malformed,
			Run: h2one(pairs(":method", "GET", ":scheme", "http", ":authority", "a.example.com\rX-Injected: 1", ":path", "/{T}"), true)},
		{Name: "h2-authority-space", Nginx: "400 keep", What: ":authority with a space", Want: h2Malformed,
			Run: h2one(pairs(":method", "GET", ":scheme", "http", ":authority", "a.example.com evil", ":path", "/{T}"), true)},

		// Regular fields.
		{Name: "h2-header-uppercase", Nginx: "RST(PROTOCOL_ERROR) keep", What: "uppercase field name", Want: h2Malformed,
			Run: h2one(get("X-Upper", "1"), true)},
		{Name: "h2-header-name-space", Nginx: "RST(PROTOCOL_ERROR) keep", What: "field name with a space", Want: h2Malformed,
			Run: h2one(get("x a", "1"), true)},
		{Name: "h2-header-name-colon", Nginx: "RST(PROTOCOL_ERROR) keep", What: "field name with a colon inside", Want: h2Malformed,
			Run: h2one(get("x:a", "1"), true)},
		{Name: "h2-header-name-empty", Nginx: "- goaway(PROTOCOL_ERROR)", What: "empty field name", Want: h2Malformed,
			Run: h2one(get("", "1"), true)},
		{Name: "h2-header-value-crlf", Nginx: "RST(PROTOCOL_ERROR) keep", What: "field value with CRLF", Want: h2Malformed,
			Run: h2one(get("x-a", "a\r\nx-injected: 1"), true)},
		{Name: "h2-header-value-nul", Nginx: "RST(PROTOCOL_ERROR) keep", What: "field value with NUL", Want: h2Malformed,
			Run: h2one(get("x-a", "a\x00b"), true)},
		{Name: "h2-header-connection", Nginx: "200 keep, 1 fwd", What: "connection: keep-alive (connection-specific)", Want: h2Malformed,
			Run: h2one(get("connection", "keep-alive"), true)},
		{Name: "h2-header-keep-alive", Nginx: "200 keep, 1 fwd", What: "keep-alive field", Want: h2Malformed,
			Run: h2one(get("keep-alive", "timeout=5"), true)},
		{Name: "h2-header-proxy-connection", Nginx: "200 keep, 1 fwd", What: "proxy-connection field", Want: h2Malformed,
			Run: h2one(get("proxy-connection", "keep-alive"), true)},
		{Name: "h2-header-transfer-encoding", Nginx: "200 keep, 1 fwd", What: "transfer-encoding: chunked", Want: h2Malformed,
			Run: h2one(req("POST", "/{T}", "transfer-encoding", "chunked"), false, "5\r\nhello\r\n0\r\n\r\n")},
		{Name: "h2-header-upgrade", Nginx: "200 keep, 1 fwd", What: "upgrade: h2c", Want: h2Malformed,
			Run: h2one(get("upgrade", "h2c"), true)},
		{Name: "h2-header-te-gzip", Nginx: "200 keep, 1 fwd", What: "te: gzip", Want: h2Malformed,
			Run: h2one(get("te", "gzip"), true)},
		{Name: "h2-header-te-trailers", Nginx: "200 keep, 1 fwd", What: "te: trailers (the one allowed value)", Want: h2OK, Check: clean,
			Run: h2one(get("te", "trailers"), true)},
		{Name: "h2-host-differs", Nginx: "400 keep", What: "host differs from :authority (the authority wins)", Want: append(h2Malformed, "200 keep, 1 fwd"),
			Check: all(clean, headerIs("host", "a.example.com")),
			Run:   h2one(get("host", "b.example.com"), true)},
		{Name: "h2-cookie-crumbs", Nginx: "200 keep, 1 fwd", What: "cookie split over three fields", Want: h2OK,
			Check: all(clean, headerMatches("cookie", "\"a=1; b=2; c=3\"", func(v string) bool { return v == "a=1; b=2; c=3" })),
			Run:   h2one(get("cookie", "a=1", "cookie", "b=2", "cookie", "c=3"), true)},
		{Name: "h2-xenvoy-internal", Nginx: "200 keep, 1 fwd", What: "x-envoy-* from a loopback (internal) client are kept", Want: h2OK,
			Check: all(clean, headerIs("x-envoy-retry-on", "5xx")),
			Run:   h2one(get("x-envoy-retry-on", "5xx"), true)},

		// Trailers.
		{Name: "h2-trailers", Nginx: "- goaway(PROTOCOL_ERROR)", What: "POST with trailers", Want: h2OK, Check: all(clean, bodyIs("hello")),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				if err := c.headers(1, expandFields(req("POST", "/{T}"), env), false); err != nil {
					return 1, err
				}
				if err := c.data(1, "hello", false); err != nil {
					return 1, err
				}
				return 1, c.headers(1, pairs("x-trailer", "1"), true)
			}}.run},
		{Name: "h2-trailers-pseudo", Nginx: "- goaway(PROTOCOL_ERROR)", What: "trailers with a pseudo-header", Want: append(h2Malformed, "RST(PROTOCOL_ERROR) keep, 1 partial"),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				if err := c.headers(1, expandFields(req("POST", "/{T}"), env), false); err != nil {
					return 1, err
				}
				if err := c.data(1, "hello", false); err != nil {
					return 1, err
				}
				return 1, c.headers(1, pairs(":path", "/admin"), true)
			}}.run},

		// Frames on the wrong streams, bad windows and settings.
		{Name: "h2-data-on-closed-stream", Nginx: "200 keep, 1 fwd", What: "DATA after the stream was answered and ended", Want: []string{"200 RST(STREAM_CLOSED) keep, 1 fwd", "200 goaway(STREAM_CLOSED), 1 fwd"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 1, c.headers(1, expandFields(req("GET", "/{T}"), env), true)
			}, after: func(c *h2client, id uint32) error {
				c.waitEvent(id, "end", c.env.Wait) // the stream is closed on both sides
				return c.data(id, "late", true)
			}}.run},
		{Name: "h2-data-on-idle-stream", Nginx: "- keep", What: "DATA on a stream never opened", Want: connErr(http2.ErrCodeProtocol),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) { return 0, c.data(5, "hello", true) }}.run},
		{Name: "h2-headers-even-stream", Nginx: "- goaway(PROTOCOL_ERROR)", What: "HEADERS on stream 2 (server-initiated ids)", Want: connErr(http2.ErrCodeProtocol),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.headers(2, expandFields(req("GET", "/{T}"), env), true)
			}}.run},
		{Name: "h2-stream-id-decreasing", Nginx: "- goaway(PROTOCOL_ERROR), 1 fwd", What: "stream 5, then stream 3", Want: []string{"- goaway(PROTOCOL_ERROR), 1 fwd", "- goaway(PROTOCOL_ERROR)"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				if err := c.headers(5, expandFields(req("GET", "/{T}/5"), env), true); err != nil {
					return 0, err
				}
				c.streamOutcome(5, env.Wait)
				return 0, c.headers(3, expandFields(req("GET", "/{T}/3"), env), true)
			}}.run},
		{Name: "h2-rst-idle-stream", Nginx: "- keep", What: "RST_STREAM on an idle stream", Want: connErr(http2.ErrCodeProtocol),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.write(func() error { return c.fr.WriteRSTStream(7, http2.ErrCodeCancel) })
			}}.run},
		{Name: "h2-continuation-alone", Nginx: "- goaway(PROTOCOL_ERROR)", What: "CONTINUATION without HEADERS", Want: connErr(http2.ErrCodeProtocol),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.rawFrame(http2.FrameContinuation, http2.FlagContinuationEndHeaders, 1, c.block(expandFields(req("GET", "/{T}"), env)))
			}}.run},
		{Name: "h2-headers-interrupted", Nginx: "- goaway(PROTOCOL_ERROR)", What: "HEADERS without END_HEADERS, then DATA", Want: connErr(http2.ErrCodeProtocol),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				blk := c.block(expandFields(req("POST", "/{T}"), env))
				if err := c.write(func() error {
					return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:len(blk)/2]})
				}); err != nil {
					return 0, err
				}
				return 0, c.data(1, "hello", true)
			}}.run},
		{Name: "h2-window-overflow-connection", Nginx: "- goaway(FLOW_CONTROL_ERROR)", What: "connection WINDOW_UPDATE past 2^31-1", Want: connErr(http2.ErrCodeFlowControl),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.write(func() error {
					c.fr.WriteWindowUpdate(0, 1<<31-1)
					return c.fr.WriteWindowUpdate(0, 1<<31-1)
				})
			}}.run},
		{Name: "h2-window-overflow-stream", Nginx: "RST(FLOW_CONTROL_ERROR) keep", What: "stream WINDOW_UPDATE past 2^31-1", Want: []string{"RST(FLOW_CONTROL_ERROR) keep", "RST(FLOW_CONTROL_ERROR) keep, 1 partial"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				if err := c.headers(1, expandFields(req("POST", "/{T}"), env), false); err != nil {
					return 1, err
				}
				return 1, c.write(func() error {
					c.fr.WriteWindowUpdate(1, 1<<31-1)
					return c.fr.WriteWindowUpdate(1, 1<<31-1)
				})
			}}.run},
		{Name: "h2-window-zero-connection", Nginx: "- goaway(PROTOCOL_ERROR)", What: "connection WINDOW_UPDATE of 0", Want: connErr(http2.ErrCodeProtocol),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.rawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 0})
			}}.run},
		{Name: "h2-window-zero-stream", Nginx: "- goaway(PROTOCOL_ERROR)", What: "stream WINDOW_UPDATE of 0", Want: []string{"RST(PROTOCOL_ERROR) keep", "RST(PROTOCOL_ERROR) keep, 1 partial"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				if err := c.headers(1, expandFields(req("POST", "/{T}"), env), false); err != nil {
					return 1, err
				}
				return 1, c.rawFrame(http2.FrameWindowUpdate, 0, 1, []byte{0, 0, 0, 0})
			}}.run},
		{Name: "h2-settings-window-too-big", Nginx: "- goaway(FLOW_CONTROL_ERROR)", What: "SETTINGS_INITIAL_WINDOW_SIZE 2^31", Want: connErr(http2.ErrCodeFlowControl),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.rawFrame(http2.FrameSettings, 0, 0, []byte{0, 4, 0x80, 0, 0, 0})
			}}.run},
		{Name: "h2-settings-frame-size-too-small", Nginx: "- goaway(PROTOCOL_ERROR)", What: "SETTINGS_MAX_FRAME_SIZE 100", Want: connErr(http2.ErrCodeProtocol),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.rawFrame(http2.FrameSettings, 0, 0, []byte{0, 5, 0, 0, 0, 100})
			}}.run},
		{Name: "h2-settings-enable-push-2", Nginx: "- goaway(PROTOCOL_ERROR)", What: "SETTINGS_ENABLE_PUSH 2", Want: connErr(http2.ErrCodeProtocol),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.rawFrame(http2.FrameSettings, 0, 0, []byte{0, 2, 0, 0, 0, 2})
			}}.run},
		{Name: "h2-settings-bad-length", Nginx: "- goaway(FRAME_SIZE_ERROR)", What: "SETTINGS frame of 5 bytes", Want: connErr(http2.ErrCodeFrameSize),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.rawFrame(http2.FrameSettings, 0, 0, []byte{0, 4, 0, 0, 1})
			}}.run},
		{Name: "h2-priority-self", Nginx: "- goaway(PROTOCOL_ERROR)", What: "PRIORITY making a stream depend on itself", Want: []string{"RST(PROTOCOL_ERROR) keep", "- goaway(PROTOCOL_ERROR)"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 1, c.write(func() error { return c.fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 15}) })
			}}.run},
		{Name: "h2-hpack-bad-index", Nginx: "- goaway(COMPRESSION_ERROR)", What: "HPACK index past the tables", Want: connErr(http2.ErrCodeCompression),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				return 0, c.headerBlock(1, []byte{0x82, 0x86, 0xff, 0x7f}, true) // :method GET, :scheme http, index 254
			}}.run},
		{Name: "h2-hpack-table-size-too-big", Nginx: "- goaway(COMPRESSION_ERROR)", What: "HPACK table size update above SETTINGS_HEADER_TABLE_SIZE", Want: connErr(http2.ErrCodeCompression),
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				// Dynamic table size update to 1 MiB (5-bit prefix integer).
				upd := []byte{0x3f, 0xe1, 0xff, 0x3f}
				return 0, c.headerBlock(1, append(upd, c.block(expandFields(req("GET", "/{T}"), env))...), true)
			}}.run},
		{Name: "h2-bad-preface", Nginx: "400 close", What: "a corrupted client preface", Want: []string{badClose, "- close"},
			Run: h1{parts: []string{"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"}}.run},

		// Limits.
		{Name: "h2-header-list-too-large", Nginx: "- goaway(ENHANCE_YOUR_CALM)", What: "one 100 KiB field (HEADERS + CONTINUATIONs)",
			Want: []string{"431 keep", "RST(PROTOCOL_ERROR) keep", "- goaway(PROTOCOL_ERROR)", "- goaway(ENHANCE_YOUR_CALM)", "- goaway(COMPRESSION_ERROR)", "- close", "RST(REFUSED_STREAM) keep"},
			Run:  h2one(get("x-big", strings.Repeat("a", 100<<10)), true)},
		{Name: "h2-headers-too-many", Nginx: "200 keep, 1 fwd", What: "150 fields (the limit is 100)",
			Want: []string{"431 keep", "RST(PROTOCOL_ERROR) keep", "- goaway(PROTOCOL_ERROR)"},
			Run:  h2one(get(manyFields("x-f", 150)...), true)},
		{Name: "h2-xff-repeated", Nginx: "400 goaway(ENHANCE_YOUR_CALM)", What: "2,000 x-forwarded-for fields",
			Want: []string{"431 keep", "RST(PROTOCOL_ERROR) keep", "- goaway(PROTOCOL_ERROR)"},
			Run:  h2one(get(repeatField("x-forwarded-for", "10.0.0.1", 2000)...), true)},
		{Name: "h2-hpack-bomb", Nginx: "- goaway(ENHANCE_YOUR_CALM)", What: "a 4 KiB field in the HPACK table, referenced 4,000 times (16 MB decoded)",
			Want: []string{"431 keep", "RST(PROTOCOL_ERROR) keep", "- goaway(PROTOCOL_ERROR)", "- goaway(ENHANCE_YOUR_CALM)", "- goaway(COMPRESSION_ERROR)", "- close", "RST(REFUSED_STREAM) keep"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				// Literal with incremental indexing of "x-bomb: aaaa…", then
				// the dynamic index 62 repeated (one byte each).
				blk := c.block(expandFields(req("GET", "/{T}"), env))
				blk = append(blk, 0x40, 6)
				blk = append(blk, "x-bomb"...)
				blk = hpackInt(blk, 7, 0, 4000) // value length, not Huffman-coded
				blk = append(blk, strings.Repeat("a", 4000)...)
				for i := 0; i < 4000; i++ {
					blk = append(blk, 0x80|62)
				}
				return 1, c.headerBlock(1, blk, true)
			}}.run},
		{Name: "h2-streams-over-limit", Nginx: "- goaway(NO_ERROR)", What: "300 streams left open at once (limit 100 here, 128 in nginx)",
			Want: []string{"RST(REFUSED_STREAM) keep, *", "RST(PROTOCOL_ERROR) keep, *", "- goaway(PROTOCOL_ERROR), *"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				var id uint32
				for i := 0; i < 300; i++ {
					id = uint32(2*i + 1)
					if err := c.headers(id, expandFields(req("POST", fmt.Sprintf("/{T}/%d", i)), env), false); err != nil {
						return id, err
					}
				}
				return id, nil
			}}.run},
	}
	for _, c := range cs {
		c.Category = "h2"
	}
	return cs
}

// hpackInt appends an HPACK integer (RFC 7541 5.1) with an n-bit prefix;
// first holds the bits above the prefix.
func hpackInt(b []byte, n uint, first byte, v int) []byte {
	max := 1<<n - 1
	if v < max {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(max))
	for v -= max; v >= 128; v >>= 7 {
		b = append(b, byte(v%128)|0x80)
	}
	return append(b, byte(v))
}

// manyFields returns n distinct fields name-0 … name-(n-1).
func manyFields(name string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("%s-%d", name, i), "v")
	}
	return out
}

func repeatField(name, value string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, name, value)
	}
	return out
}
