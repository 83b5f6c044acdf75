package hcm

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"

	"github.com/portico-gateway/portico/pkg/proxy/h2"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

// h2Request builds what the HTTP/2 server hands the handler: fields are
// "name: value" lines, bodyOpen says whether END_STREAM was not on the
// HEADERS frame. The server sets ContentLength from the first
// content-length when the body is open, 0 when it is not.
func h2Request(method, path, authority string, bodyOpen bool, fields ...string) (*h2.Request, io.Reader) {
	r := &h2.Request{Method: method, Path: path, Authority: authority, Scheme: "http"}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, ": ")
		r.Fields = append(r.Fields, hpack.HeaderField{Name: strings.ToLower(k), Value: v})
	}
	if !bodyOpen {
		return r, nil
	}
	r.ContentLength = -1
	for _, f := range r.Fields {
		if f.Name == "content-length" {
			if n, ok := httpxParse(f.Value); ok {
				r.ContentLength = n
			} else {
				r.ContentLength = 0
			}
			break
		}
	}
	return r, strings.NewReader("body")
}

func httpxParse(v string) (int64, bool) {
	h := httpx.Header{}
	h.Add("content-length", v)
	n, err := httpx.ParseContentLength(&h)
	return n, err == nil && n >= 0
}

func TestConvertH2Request(t *testing.T) {
	type in struct {
		r    *h2.Request
		body io.Reader
	}
	mk := func(r *h2.Request, body io.Reader) in { return in{r, body} }
	cases := []struct {
		name   string
		req    in
		status int
	}{
		{"plain GET", mk(h2Request("GET", "/a?b", "example.com", false)), 0},
		{"content-length with END_STREAM", mk(h2Request("POST", "/", "a", false, "Content-Length: 40")), 400},
		{"content-length 0 with END_STREAM", mk(h2Request("POST", "/", "a", false, "Content-Length: 0")), 0},
		{"content-length with a body", mk(h2Request("POST", "/", "a", true, "Content-Length: 4")), 0},
		{"differing content-lengths", mk(h2Request("POST", "/", "a", true, "Content-Length: 4", "Content-Length: 5")), 400},
		{"signed content-length", mk(h2Request("POST", "/", "a", true, "Content-Length: +4")), 400},
		{"space in :path", mk(h2Request("GET", "/a b", "a", false)), 400},
		{"CR in :path", mk(h2Request("GET", "/a\rb", "a", false)), 400},
		{"relative :path", mk(h2Request("GET", "a", "a", false)), 400},
		{"* for GET", mk(h2Request("GET", "*", "a", false)), 400},
		{"* for OPTIONS", mk(h2Request("OPTIONS", "*", "a", false)), 0},
		{"userinfo in :authority", mk(h2Request("GET", "/", "u@a", false)), 400},
		{"no :authority nor host", mk(h2Request("GET", "/", "", false)), 400},
		{"CONNECT", mk(h2Request("CONNECT", "", "a:443", false)), 400},
		{"control character in a value", mk(h2Request("GET", "/", "a", false, "X: a\x01b")), 400},
		{"connection field", mk(h2Request("GET", "/", "a", false, "Connection: keep-alive")), 400},
		{"transfer-encoding field", mk(h2Request("POST", "/", "a", true, "Transfer-Encoding: chunked")), 400},
		{"upgrade field", mk(h2Request("GET", "/", "a", false, "Upgrade: h2c")), 400},
		{"te: gzip", mk(h2Request("GET", "/", "a", false, "TE: gzip")), 400},
		{"te: trailers", mk(h2Request("GET", "/", "a", false, "TE: trailers")), 0},
		{"two te fields", mk(h2Request("GET", "/", "a", false, "TE: trailers", "TE: trailers")), 400},
		{"host instead of :authority", mk(h2Request("GET", "/", "", false, "Host: a.example.com")), 0},
		{"host equal to :authority", mk(h2Request("GET", "/", "a.example.com", false, "Host: A.example.com")), 0},
		{"host differing from :authority", mk(h2Request("GET", "/", "a.example.com", false, "Host: b.example.com")), 400},
		{"host with a space instead of :authority", mk(h2Request("GET", "/", "", false, "Host: a b")), 400},
	}
	for _, c := range cases {
		_, status, err := ConvertH2Request(c.req.r, c.req.body, nil, httpx.DefaultLimits)
		if status != c.status || (err == nil) != (c.status == 0) {
			t.Errorf("%s: status %d err %v, want %d", c.name, status, err, c.status)
		}
	}
	var many []string
	for i := 0; i < 101; i++ {
		many = append(many, "X-H: v")
	}
	r, body := h2Request("GET", "/", "a", false, many...)
	if _, status, _ := ConvertH2Request(r, body, nil, httpx.DefaultLimits); status != 431 {
		t.Errorf("101 fields: %d", status)
	}
	r, body = h2Request("POST", "/", "a", true, "Content-Length: 4", "Cookie: a=1", "Cookie: b=2", "X-Y: z")
	req, _, err := ConvertH2Request(r, body, nil, httpx.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if req.Header.Has("content-length") || req.ContentLength != 4 || req.Body == nil {
		t.Errorf("framing: %+v", req)
	}
	if v, _ := req.Header.Lookup("cookie"); v != "a=1; b=2" {
		t.Errorf("cookies = %q, want them joined with '; ' (RFC 9113 8.2.3)", v)
	}
}

// FuzzH2Request: whatever an HTTP/2 client sends, a request the conversion
// accepts is one the proxy can write as HTTP/1.1 without changing its
// meaning for the upstream: the same request line, headers and body
// length read back, and the next request on the connection is untouched.
func FuzzH2Request(f *testing.F) {
	f.Add("POST", "/a?b=c", "example.com:80", true, "content-length: 4\ncookie: a\ncookie: b")
	f.Add("GET", "/", "a", false, "content-length: 10")
	f.Add("GET", "/a b", "a\rb", false, "x: y")
	f.Fuzz(func(t *testing.T, method, path, authority string, bodyOpen bool, fields string) {
		var lines []string
		for _, l := range strings.Split(fields, "\n") {
			k, v, ok := strings.Cut(l, ": ")
			if !ok || !httpx.ValidFieldName(k) {
				continue // the HTTP/2 server refuses invalid names itself
			}
			lines = append(lines, strings.ToLower(k)+": "+v)
		}
		r, rbody := h2Request(method, path, authority, bodyOpen, lines...)
		req, status, err := ConvertH2Request(r, rbody, nil, httpx.DefaultLimits)
		if err != nil {
			if status != 400 && status != 431 {
				t.Fatalf("refused with %d", status)
			}
			return
		}
		if req.Header.Has("content-length") {
			t.Fatal("content-length survived conversion")
		}
		length := req.ContentLength
		if req.Body == nil {
			length = 0
		}
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		httpx.RemoveHopByHop(&req.Header)
		httpx.WriteRequestHead(bw, req.Method, req.Target, req.Authority, &req.Header, length)
		body := ""
		if length > 0 {
			body = strings.Repeat("b", int(min(length, 1<<16)))
			length = int64(len(body))
			buf.Reset()
			bw.Reset(&buf)
			httpx.WriteRequestHead(bw, req.Method, req.Target, req.Authority, &req.Header, length)
		}
		if length < 0 {
			cw := httpx.ChunkedWriter{W: bw}
			cw.Write([]byte("body"))
			cw.Close()
			body = "body"
		} else {
			bw.WriteString(body)
		}
		bw.WriteString("GET /next HTTP/1.1\r\nhost: n\r\n\r\n")
		bw.Flush()
		br := bufio.NewReader(&buf)
		up := &httpx.Request{}
		if err := httpx.ReadRequest(br, up, nil); err != nil {
			t.Fatalf("upstream cannot read the forwarded request: %v\n%q", err, buf.String())
		}
		got := ""
		if up.Body != nil {
			b, _ := io.ReadAll(up.Body)
			got = string(b)
		}
		if up.Method != req.Method || up.Target != req.Target || up.Authority != req.Authority || got != body {
			t.Fatalf("upstream reads %s %s %s %q, want %s %s %s %q", up.Method, up.Target, up.Authority, got, req.Method, req.Target, req.Authority, body)
		}
		next := &httpx.Request{}
		if err := httpx.ReadRequest(br, next, nil); err != nil || next.Target != "/next" {
			t.Fatalf("the next request was disturbed: %v %q", err, next.Target)
		}
	})
}

func TestProcessPath(t *testing.T) {
	base := Config{NormalizePath: true}
	merge := Config{NormalizePath: true, MergeSlashes: true}
	decodeMerge := Config{NormalizePath: true, MergeSlashes: true, EscapedSlashes: EscapedSlashesUnescapeAndForward}
	reject := Config{NormalizePath: true, EscapedSlashes: EscapedSlashesReject}
	redirect := Config{NormalizePath: true, EscapedSlashes: EscapedSlashesUnescapeAndRedirect}
	none := Config{}
	cases := []struct {
		cfg     Config
		in, out string
		verdict pathVerdict
	}{
		{base, "/a/./b/../c?x=/../", "/a/c?x=/../", pathForward},
		{base, "/a//b", "/a//b", pathForward},
		{base, "/%61%2fb", "/a%2Fb", pathForward},
		{base, "/a\\..\\admin", "/admin", pathForward},
		{base, "/a/%zz", "", pathReject},
		{merge, "//a///b", "/a/b", pathForward},
		{decodeMerge, "/a%2F%2fb%5cc", "/a/b/c", pathForward},
		{reject, "/a%2Fb", "", pathReject},
		{redirect, "/a%2Fb?q", "/a/b?q", pathRedirect},
		{redirect, "/a/b", "/a/b", pathForward},
		{none, "/a/../b", "/a/../b", pathForward},
		{base, "*", "*", pathForward},
	}
	for _, c := range cases {
		out, v := c.cfg.processPath(c.in)
		if v != c.verdict || v != pathReject && out != c.out {
			t.Errorf("%+v %q: got %q %v, want %q %v", c.cfg, c.in, out, v, c.out, c.verdict)
		}
	}
}
