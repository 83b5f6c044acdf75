package httpx

import (
	"bufio"
	"bytes"
	"errors"
	"io"
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
		"unknown coding":     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
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

func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
		"GET http://h/ HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &Request{}
		err := ReadRequest(bufio.NewReader(bytes.NewReader(data)), req, nil)
		if err != nil {
			return
		}
		if req.Body != nil {
			io.Copy(io.Discard, io.LimitReader(req.Body, 1<<20))
		}
		for _, f := range req.Header.Fields {
			if f.Name != strings.ToLower(f.Name) || strings.ContainsAny(f.Value, "\r\n") {
				t.Fatalf("header not normalised: %q: %q", f.Name, f.Value)
			}
		}
		if req.Proto != "HTTP/1.1" && req.Proto != "HTTP/1.0" {
			t.Fatalf("proto %q", req.Proto)
		}
	})
}
