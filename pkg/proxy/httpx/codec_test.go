package httpx

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
)

func parse(t *testing.T, raw string) (*Request, error) {
	t.Helper()
	req := &Request{}
	err := ReadRequest(bufio.NewReader(strings.NewReader(raw)), req, nil)
	return req, err
}

func TestReadRequest(t *testing.T) {
	req, err := parse(t, "GET /a/b?x=1 HTTP/1.1\r\nHost: Example.com\r\nX-Multi: a\r\nx-multi: b\r\nConnection: keep-alive\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if req.Method != "GET" || req.Target != "/a/b?x=1" || req.Path() != "/a/b" || req.Query() != "x=1" || req.Authority != "Example.com" {
		t.Errorf("request line: %+v", req)
	}
	if v, _ := req.Header.Lookup("X-MULTI"); v != "a,b" {
		t.Errorf("repeated header joined = %q", v)
	}
	if req.Header.Has("host") || req.Close || req.Body != nil {
		t.Errorf("host must move to Authority; keep-alive; no body: %+v", req)
	}

	req, err = parse(t, "POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil || string(body) != "hello world" || req.ContentLength != -1 || !Drained(req.Body) {
		t.Errorf("chunked body %q err %v", body, err)
	}

	req, err = parse(t, "GET http://proxy.example.com:8080/abs?q HTTP/1.0\r\n\r\n")
	if err != nil || req.Authority != "proxy.example.com:8080" || req.Target != "/abs?q" || !req.Close {
		t.Errorf("absolute form / HTTP/1.0: %+v %v", req, err)
	}
}

func TestReadRequestRejects(t *testing.T) {
	cases := map[string]string{
		"no host on 1.1":     "GET / HTTP/1.1\r\n\r\n",
		"two hosts":          "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"conflicting length": "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"negative length":    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
		"invalid coding":     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip x\r\n\r\n",
		"folding":            "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"space in name":      "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
		"bad protocol":       "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
		"bad target":         "GET foo HTTP/1.1\r\nHost: a\r\n\r\n",
		"bad method":         "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
	}
	for name, raw := range cases {
		if _, err := parse(t, raw); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	huge := "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", MaxHeaderBytes) + "\r\n\r\n"
	if _, err := parse(t, huge); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("huge header: %v", err)
	}
	if _, err := parse(t, "GET / HTTP/1.1\r\nHost: a\r\n"); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated head: %v", err)
	}
}

func TestReadResponseFraming(t *testing.T) {
	cases := []struct {
		method, raw string
		body        string
		close       bool
	}{
		{"GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT", "hello", false},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "", false},
		{"GET", "HTTP/1.1 204 No Content\r\n\r\n", "", false},
		{"GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", "", false},
		{"GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "abc", false},
		{"GET", "HTTP/1.1 200 OK\r\n\r\nuntil close", "until close", true},
		{"GET", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "ok", true},
		{"GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", "ok", true},
	}
	for _, c := range cases {
		resp := &Response{}
		if err := ReadResponse(bufio.NewReader(strings.NewReader(c.raw)), c.method, resp, nil); err != nil {
			t.Errorf("%q: %v", c.raw, err)
			continue
		}
		var body []byte
		if resp.Body != nil {
			body, _ = io.ReadAll(resp.Body)
		}
		if string(body) != c.body || resp.Close != c.close {
			t.Errorf("%q: body %q close %v", c.raw, body, resp.Close)
		}
	}
}

func TestWriteRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	var h Header
	h.Add("x-a", "1")
	WriteRequestHead(bw, "POST", "/p", "upstream:80", &h, -1)
	cw := ChunkedWriter{W: bw}
	cw.Write([]byte("hello "))
	cw.Write([]byte("world"))
	cw.Close()
	bw.Flush()
	req, err := parse(t, buf.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(req.Body)
	if req.Authority != "upstream:80" || req.Header.Get("x-a") != "1" || string(body) != "hello world" {
		t.Errorf("round trip: %+v %q", req, body)
	}
	buf.Reset()
	chunked := WriteResponseHead(bw, 200, &h, -1, "HTTP/1.0", false, false)
	bw.Flush()
	if chunked || !strings.Contains(buf.String(), "connection: close") {
		t.Errorf("an HTTP/1.0 client with an unknown length must get close-delimited: %q", buf.String())
	}
}

// TestFramingIsUnambiguous: every way a request's body framing can be read
// two ways by two HTTP implementations is refused (RFC 9112 sections 6
// and 7; the cases of issue #11 and of the smuggling literature).
func TestFramingIsUnambiguous(t *testing.T) {
	head := "POST / HTTP/1.1\r\nHost: a\r\n"
	cases := []struct {
		name, raw string
		want      error
	}{
		{"TE vertical tab", head + "Transfer-Encoding: \x0bchunked\r\n\r\n", ErrMalformed},
		{"TE form feed", head + "Transfer-Encoding: chunked\x0c\r\n\r\n", ErrMalformed},
		{"TE NBSP", head + "Transfer-Encoding: chunked\xa0\r\n\r\n", ErrMalformed},
		{"TE NEL", head + "Transfer-Encoding: \x85chunked\r\n\r\n", ErrMalformed},
		{"TE xchunked", head + "Transfer-Encoding: xchunked\r\n\r\n", ErrUnsupportedCoding},
		{"TE chunked twice", head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ErrUnsupportedCoding},
		{"TE identity", head + "Transfer-Encoding: chunked, identity\r\n\r\n", ErrUnsupportedCoding},
		{"TE empty", head + "Transfer-Encoding: \r\n\r\n", ErrMalformed},
		{"CL and TE", head + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", ErrMalformed},
		{"CL -0", head + "Content-Length: -0\r\n\r\n", ErrMalformed},
		{"CL +1", head + "Content-Length: +1\r\n\r\n", ErrMalformed},
		{"CL 0x1", head + "Content-Length: 0x1\r\n\r\n", ErrMalformed},
		{"CL 1_0", head + "Content-Length: 1_0\r\n\r\n", ErrMalformed},
		{"CL vertical tab", head + "Content-Length: \x0b1\r\n\r\n", ErrMalformed},
		{"CL inner space", head + "Content-Length: 1 0\r\n\r\n", ErrMalformed},
		{"CL empty", head + "Content-Length: \r\n\r\n", ErrMalformed},
		{"CL overflow", head + "Content-Length: 99999999999999999999\r\n\r\n", ErrMalformed},
		{"CL list differs", head + "Content-Length: 1, 2\r\n\r\n", ErrMalformed},
		{"HTTP/1.0 chunked", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", ErrMalformed},
		{"CR in target", "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", ErrMalformed},
		{"NUL in target", "GET /a\x00 HTTP/1.1\r\nHost: a\r\n\r\n", ErrMalformed},
		{"tab in target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", ErrMalformed},
		{"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", ErrMalformed},
		{"fragment", "GET /a#x HTTP/1.1\r\nHost: a\r\n\r\n", ErrMalformed},
		{"absolute form with CR", "GET http://a\rb/ HTTP/1.1\r\nHost: a\r\n\r\n", ErrMalformed},
		{"absolute form with userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", ErrMalformed},
		{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", ErrMalformed},
		{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", ErrMalformed},
		{"escape in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: \x1b[0m\r\n\r\n", ErrMalformed},
		{"bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", ErrMalformed},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", ErrMalformed},
		{"HTTP/0.9", "GET /\r\n\r\n", ErrMalformed},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", ErrMalformed},
		{"lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", ErrMalformed},
		{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", ErrMalformed},
	}
	for _, c := range cases {
		if _, err := parse(t, c.raw); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	// What stays accepted: OWS around values, identical repeated lengths,
	// case-insensitive chunked, obs-text in values.
	for _, raw := range []string{
		head + "Content-Length: \t3 \r\n\r\nabc",
		head + "Content-Length: 3, 3\r\n\r\nabc",
		head + "Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
		"GET /path?q=%20x&y=[1] HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
	} {
		req, err := parse(t, raw)
		if err != nil {
			t.Errorf("%q: %v", raw, err)
			continue
		}
		if req.Body != nil {
			if b, _ := io.ReadAll(req.Body); string(b) != "abc" {
				t.Errorf("%q: body %q", raw, b)
			}
		}
	}
}

func TestHeaderLimits(t *testing.T) {
	lim := Limits{MaxHeaderBytes: 1 << 10, MaxHeaders: 3}
	read := func(raw string) error {
		return lim.ReadRequest(bufio.NewReader(strings.NewReader(raw)), &Request{}, nil)
	}
	if err := read("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n"); err != nil {
		t.Errorf("3 headers: %v", err)
	}
	if err := read("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"); !errors.Is(err, ErrTooManyHeaders) {
		t.Errorf("4 headers: %v", err)
	}
	if err := read("GET / HTTP/1.1\r\nHost: a\r\nA: " + strings.Repeat("x", 1<<10) + "\r\n\r\n"); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("1 KiB value: %v", err)
	}
	// Trailers count against the head limit too.
	req := &Request{}
	raw := "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + strings.Repeat("T: x\r\n", MaxHeaderBytes/6+1) + "\r\n"
	if err := ReadRequest(bufio.NewReader(strings.NewReader(raw)), req, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(req.Body); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("endless trailers: %v", err)
	}
}

func TestRemoveHopByHop(t *testing.T) {
	var h Header
	for _, kv := range [][2]string{{"connection", "keep-alive, X-Secret ,x-other"}, {"connection", "upgrade"}, {"x-secret", "1"},
		{"x-other", "2"}, {"x-kept", "3"}, {"keep-alive", "timeout=5"}, {"te", "trailers"}, {"upgrade", "websocket"},
		{"transfer-encoding", "chunked"}, {"proxy-connection", "x"}, {"trailer", "x"}} {
		h.Add(kv[0], kv[1])
	}
	RemoveHopByHop(&h)
	if len(h.Fields) != 1 || h.Fields[0].Name != "x-kept" {
		t.Errorf("left %v", h.Fields)
	}
	// Route operations cannot nominate anything: only the fixed names go.
	h = Header{}
	h.Add("x-a", "1")
	h.Add("connection", "x-a")
	RemoveFixedHopByHop(&h)
	if len(h.Fields) != 1 || h.Fields[0].Name != "x-a" {
		t.Errorf("left %v", h.Fields)
	}
}

func TestLookupJoinsRepeatedFields(t *testing.T) {
	var h Header
	for i := 0; i < 5; i++ {
		h.Add("x-forwarded-for", strconv.Itoa(i))
		h.Add("other", "o")
	}
	if v, ok := h.Lookup("X-Forwarded-For"); !ok || v != "0,1,2,3,4" {
		t.Errorf("Lookup = %q %v", v, ok)
	}
	if _, ok := h.Lookup("absent"); ok {
		t.Error("absent header found")
	}
}

// BenchmarkRemoveHopByHop shows the cost is linear in the header size: a
// Connection header naming thousands of fields costs one pass, not one
// pass per name (the quadratic form took 0.6 CPU-seconds for 60 KB).
func BenchmarkRemoveHopByHop(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var names []string
			for i := 0; i < n; i++ {
				names = append(names, "x-"+strconv.Itoa(i))
			}
			conn := strings.Join(names, ",")
			fields := make([]Field, 0, n+1)
			for b.Loop() {
				h := Header{Fields: fields[:0]}
				h.Add("connection", conn)
				for i := 0; i < n; i++ {
					h.Add(names[i], "v")
				}
				RemoveHopByHop(&h)
			}
		})
	}
}

func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
		"GET http://h/ HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &Request{}
		err := ReadRequest(bufio.NewReader(bytes.NewReader(data)), req, nil)
		if err != nil {
			return
		}
		var body []byte
		if req.Body != nil {
			if body, err = io.ReadAll(io.LimitReader(req.Body, 1<<20)); err != nil {
				return // the head was fine, the body not: nothing forwarded past it
			}
		}
		for _, f := range req.Header.Fields {
			if f.Name != strings.ToLower(f.Name) || !ValidFieldName(f.Name) || !ValidFieldValue(f.Value) {
				t.Fatalf("header not normalised: %q: %q", f.Name, f.Value)
			}
		}
		if !ValidTarget(req.Target) || !ValidAuthority(req.Authority) {
			t.Fatalf("target %q authority %q", req.Target, req.Authority)
		}
		// What the proxy writes upstream reads back as the same request:
		// no byte of the request can change how the next hop frames it.
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		length := req.ContentLength
		WriteRequestHead(bw, req.Method, req.Target, req.Authority, &req.Header, length)
		if length < 0 {
			cw := ChunkedWriter{W: bw}
			cw.Write(body)
			cw.Close()
		} else {
			bw.Write(body)
		}
		bw.WriteString("GET /next HTTP/1.1\r\nHost: n\r\n\r\n")
		bw.Flush()
		br := bufio.NewReader(&buf)
		again := &Request{}
		if err := ReadRequest(br, again, nil); err != nil {
			t.Fatalf("re-reading what would be forwarded: %v\n%q", err, buf.String())
		}
		var body2 []byte
		if again.Body != nil {
			body2, _ = io.ReadAll(again.Body)
		}
		if again.Method != req.Method || again.Target != req.Target || again.Authority != req.Authority || !bytes.Equal(body, body2) {
			t.Fatalf("forwarded request reads differently: %+v vs %+v", again, req)
		}
		next := &Request{}
		if err := ReadRequest(br, next, nil); err != nil || next.Target != "/next" {
			t.Fatalf("the next request on the connection was disturbed: %v %q", err, next.Target)
		}
	})
}

// FuzzChunkedBody: the chunked decoder either fails or yields bytes that,
// encoded again, decode to the same bytes; and it never reads beyond the
// last chunk and its trailers (what follows is the next request).
func FuzzChunkedBody(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
		"ffffffffffffffffff\r\n",
		"5\r\nhelloXX0\r\n\r\n",
		"0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	const next = "NEXT"
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(append(append([]byte{}, data...), next...)), 16)
		cr := &chunkedReader{br: br}
		body, err := io.ReadAll(io.LimitReader(cr, 1<<20))
		if err != nil || !Drained(cr) {
			return
		}
		rest, _ := io.ReadAll(br)
		if !bytes.HasSuffix(rest, []byte(next)) {
			t.Fatalf("the decoder read past the body: rest %q", rest)
		}
		var enc bytes.Buffer
		bw := bufio.NewWriter(&enc)
		cw := ChunkedWriter{W: bw}
		cw.Write(body)
		cw.Close()
		bw.Flush()
		again, err := io.ReadAll(&chunkedReader{br: bufio.NewReader(&enc)})
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("re-encoded body decodes to %q (%v), want %q", again, err, body)
		}
	})
}
