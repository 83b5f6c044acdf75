package accesslog

import (
	"encoding/json"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/portico-gateway/portico/pkg/translate"
)

type hdr map[string]string

func (h hdr) Get(n string) string { return h[strings.ToLower(n)] }

func sampleEntry() *Entry {
	return &Entry{
		Start:  time.Date(2026, 11, 28, 15, 4, 5, 123456789, time.UTC),
		Method: "GET", Path: "/a/b?c=d", Protocol: "HTTP/1.1", Code: 503, Flags: UpstreamConnectionFailure | UpstreamRetryLimitExceeded,
		BytesReceived: 12, BytesSent: 345, Duration: 67 * time.Millisecond, UpstreamServiceTime: 8 * time.Millisecond,
		ForwardedFor: "10.0.0.1", UserAgent: "curl/8", RequestID: "rid-1", Authority: "example.com", UpstreamHost: "10.1.2.3:8080",
		Scheme: "https", Cluster: "outbound|80||svc.ns.svc.cluster.local", RouteName: "r1", SNI: "example.com",
		DownstreamRemote: "192.0.2.7:51234", DownstreamLocal: "[::1]:8443", ResponseCodeDetails: "upstream_reset_before_response_started",
		ReqHeaders:  hdr{"x-custom": "abcdefghij", "x-envoy-original-path": ""},
		RespHeaders: hdr{"server": "envoy", "content-type": "text/plain"},
	}
}

func TestCompileText(t *testing.T) {
	e := sampleEntry()
	tcp := &Entry{Start: e.Start, TCP: true, UpstreamServiceTime: -1, BytesSent: 5, Cluster: "c"}
	cases := []struct {
		name, format, want string
		e                  *Entry
	}{
		{"literal only", "hello world", "hello world", e},
		{"percent escape", "100%% %RESPONSE_CODE%", "100% 503", e},
		{"start time default", "%START_TIME%", "2026-11-28T15:04:05.123Z", e},
		{"start time custom", "%START_TIME(%Y/%m/%d %H:%M:%S %z)%", "2026/11/28 15:04:05 +0000", e},
		{"start time E6S", "%START_TIME(%E6S)%", "05.123456", e},
		{"start time 3f", "%START_TIME(%s.%3f)%", "1795878245.123", e},
		{"req pseudo", "%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(:SCHEME)%", "GET /a/b?c=d example.com https", e},
		{"req header", "%REQ(X-Custom)%", "abcdefghij", e},
		{"req truncated", "%REQ(X-CUSTOM):4%", "abcd", e},
		{"req alternate used", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/a/b?c=d", e},
		{"req alternate first wins", "%REQ(X-CUSTOM?:PATH)%", "abcdefghij", e},
		{"req missing", "%REQ(X-NOPE)%", "-", e},
		{"req missing alternate missing", "%REQ(X-NOPE?X-NOPE2)%", "-", e},
		{"resp", "%RESP(SERVER)% %RESP(CONTENT-TYPE):4%", "envoy text", e},
		{"resp missing", "%RESP(X-NOPE)%", "-", e},
		{"upstream service time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "8", e},
		{"codes and flags", "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%", "503 UF,URX upstream_reset_before_response_started", e},
		{"sizes and times", "%BYTES_RECEIVED% %BYTES_SENT% %DURATION%", "12 345 67", e},
		{"upstream", "%UPSTREAM_HOST% %UPSTREAM_CLUSTER%", "10.1.2.3:8080 outbound|80||svc.ns.svc.cluster.local", e},
		{"downstream", "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%",
			"192.0.2.7:51234 192.0.2.7 [::1]:8443 ::1", e},
		{"misc", "%PROTOCOL% %REQUESTED_SERVER_NAME% %ROUTE_NAME%", "HTTP/1.1 example.com r1", e},
		{"not known", "%UPSTREAM_TRANSPORT_FAILURE_REASON% %CONNECTION_TERMINATION_DETAILS% %UPSTREAM_LOCAL_ADDRESS%", "- - -", e},
		{"number truncated", "%BYTES_SENT:2%", "34", e},
		{"tcp", "%REQ(:METHOD)% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %PROTOCOL% %BYTES_SENT% %UPSTREAM_CLUSTER% %RESPONSE_FLAGS%", "- - - 5 c -", tcp},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := CompileText(c.format)
			if err != nil {
				t.Fatalf("CompileText(%q): %v", c.format, err)
			}
			got, _ := f.Append(nil, c.e, nil)
			if string(got) != c.want {
				t.Errorf("CompileText(%q) rendered %q, want %q", c.format, got, c.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct{ format, wantErr string }{
		{"%DOWNSTREAM_PEER_CERT%", "unsupported command operator %DOWNSTREAM_PEER_CERT%"},
		{"%FILTER_STATE(x)%", "unsupported command operator %FILTER_STATE%"},
		{"%REQ()%", "needs a header name"},
		{"%REQ%", "needs a header name"},
		{"%REQ(X", "missing ')'"},
		{"%RESPONSE_CODE", "missing closing '%'"},
		{"%REQ(X):0%", "bad length"},
		{"%REQ(X):x%", "bad length"},
		{"50% off", "does not start a command operator"},
		{"%START_TIME(%Q)%", "unsupported directive %Q"},
		{"%RESPONSE_CODE(x)%", "takes no argument"},
	}
	for _, c := range cases {
		_, err := CompileText(c.format)
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("CompileText(%q) error %v, want one containing %q", c.format, err, c.wantErr)
		}
	}
	if _, err := CompileJSONObject(`{"a":{"nested":"%REQ(X)%"}}`); err == nil {
		t.Error("nested JSON format accepted")
	}
	if _, err := CompileJSONObject(`{"a":"%BOGUS%"}`); err == nil || !strings.Contains(err.Error(), `key "a"`) {
		t.Errorf("bad JSON operator error %v, want one naming the key", err)
	}
}

// The compiled default format must render exactly what the hand-written
// default writer renders, so switching a listener to a configured format
// changes nothing unless the format does.
func TestDefaultFormatMatchesWriter(t *testing.T) {
	f, err := CompileText(EnvoyDefaultFormat)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	strs := []string{"", "a", "ä\x00\"\\\r\n", "GET", "/x y", "\x1b[31m"}
	pick := func() string { return strs[rng.Intn(len(strs))] }
	for i := 0; i < 2000; i++ {
		e := &Entry{Start: time.Unix(rng.Int63n(2e9), rng.Int63n(1e9)), Method: pick(), Path: pick(), Protocol: pick(),
			Code: rng.Intn(600), Flags: Flags(rng.Intn(1 << 20)), BytesReceived: rng.Int63n(1e6), BytesSent: rng.Int63n(1e6),
			Duration: time.Duration(rng.Int63n(1e10)), UpstreamServiceTime: time.Duration(rng.Int63n(1e9) - 5e8),
			ForwardedFor: pick(), UserAgent: pick(), RequestID: pick(), Authority: pick(), UpstreamHost: pick(), TCP: rng.Intn(4) == 0}
		if e.TCP { // the TCP proxy sets no HTTP fields
			e.ForwardedFor, e.UserAgent, e.RequestID, e.Authority = "", "", "", ""
		}
		want := Format(nil, e)
		got, _ := f.Append(nil, e, nil)
		if string(got) != string(want) {
			t.Fatalf("entry %+v:\ncompiled %q\nwriter   %q", e, got, want)
		}
	}
}

// Hostile headers must not forge lines or inject terminal sequences.
func TestNoLogForging(t *testing.T) {
	e := sampleEntry()
	evil := "ok\r\n[2026-01-01T00:00:00.000Z] \"GET /admin HTTP/1.1\" 200\x1b[2J\x00\x7f\"\\"
	e.UserAgent = evil
	e.ReqHeaders = hdr{"x-evil": evil}
	e.RespHeaders = hdr{"x-evil": evil}
	text, err := CompileText(`"%REQ(USER-AGENT)%" "%REQ(X-EVIL)%" "%RESP(X-EVIL)%"` + "\n")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := text.Append(nil, e, nil)
	if strings.Count(string(got), "\n") != 1 || !strings.HasSuffix(string(got), "\n") {
		t.Fatalf("text line split: %q", got)
	}
	for _, c := range got[:len(got)-1] {
		if c < 0x20 || c == 0x7f {
			t.Fatalf("control byte %#x in text line %q", c, got)
		}
	}
	// Only the format's own 6 quotes are bare; the value's are escaped.
	if n := strings.Count(strings.ReplaceAll(string(got), `\x22`, ""), `"`); n != 6 {
		t.Fatalf("%d bare quotes in %q", n, got)
	}

	js, err := CompileJSON(map[string]string{"ua": "%REQ(USER-AGENT)%", "mixed": "x=%REQ(X-EVIL)%;", "resp": "%RESP(X-EVIL)%", evil: "k"})
	if err != nil {
		t.Fatal(err)
	}
	e.ReqHeaders = hdr{"x-evil": evil + "\xff\u2028"}
	got, _ = js.Append(nil, e, nil)
	if strings.Count(string(got), "\n") != 1 {
		t.Fatalf("JSON line split: %q", got)
	}
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatalf("JSON line %q does not parse: %v", got, err)
	}
	if m["ua"] != evil || m["resp"] != evil || m[evil] != "k" {
		t.Fatalf("JSON values not round-tripped: %#v", m)
	}
	if m["mixed"] != "x="+evil+"\ufffd\u2028;" {
		t.Fatalf("mixed value %q", m["mixed"])
	}
}

func TestIstioJSON(t *testing.T) {
	f, err := CompileJSON(translate.IstioJSONFormat)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := f.Append(nil, sampleEntry(), nil)
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatalf("%q: %v", got, err)
	}
	want := map[string]any{
		"start_time": "2026-11-28T15:04:05.123Z", "method": "GET", "path": "/a/b?c=d", "protocol": "HTTP/1.1",
		"response_code": 503.0, "response_flags": "UF,URX", "bytes_received": 12.0, "bytes_sent": 345.0, "duration": 67.0,
		"upstream_service_time": 8.0, "x_forwarded_for": "10.0.0.1", "user_agent": "curl/8", "request_id": "rid-1",
		"authority": "example.com", "upstream_host": "10.1.2.3:8080", "upstream_cluster": "outbound|80||svc.ns.svc.cluster.local",
		"route_name": "r1", "requested_server_name": "example.com", "downstream_remote_address": "192.0.2.7:51234",
		"downstream_local_address": "[::1]:8443", "response_code_details": "upstream_reset_before_response_started",
		"upstream_local_address": nil, "connection_termination_details": nil, "upstream_transport_failure_reason": nil,
	}
	if len(m) != len(want) {
		t.Errorf("got %d keys, want %d: %v", len(m), len(want), m)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
}

func TestLoggerAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers at random, so allocations are not measurable")
	}
	f, err := CompileText(EnvoyDefaultFormat)
	if err != nil {
		t.Fatal(err)
	}
	l := NewWithFormat(discard{}, f)
	e := sampleEntry()
	l.Log(e)
	if a := testing.AllocsPerRun(200, func() { l.Log(e) }); a > 0 {
		t.Errorf("compiled format: %.1f allocs per entry, want 0", a)
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

func BenchmarkLog(b *testing.B) {
	e := sampleEntry()
	def, _ := CompileText(EnvoyDefaultFormat)
	js, _ := CompileJSON(translate.IstioJSONFormat)
	for _, c := range []struct {
		name string
		l    *Logger
	}{
		{"writer-default", New(discard{})},
		{"compiled-default", NewWithFormat(discard{}, def)},
		{"compiled-istio-json", NewWithFormat(discard{}, js)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				c.l.Log(e)
			}
		})
	}
}

// A START_TIME format rendered by one Go layout must equal the piecewise
// rendering at random times, and literals that look like Go layout tokens
// must not be misread.
func TestStartTimeSingleLayout(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for _, f := range []string{"%Y-%m-%dT%H:%M:%E3SZ", "%d/%b/%Y:%H:%M:%S %z", "Jan %Y 01 Mon", "%s", "%E9S PM MST", "%Y%m%d%H%M%S.%6f"} {
		pieces, err := compileTime(f)
		if err != nil {
			t.Fatalf("%q: %v", f, err)
		}
		layout := singleLayout(pieces)
		for i := 0; i < 500; i++ {
			tm := time.Unix(rng.Int63n(4e9), rng.Int63n(1e9))
			want := string(appendTime(nil, tm, pieces))
			if layout != "" {
				if got := tm.UTC().Format(layout); got != want {
					t.Fatalf("%q at %v: layout %q renders %q, pieces %q", f, tm, layout, got, want)
				}
			}
		}
		if f == "Jan %Y 01 Mon" && layout != "" {
			t.Errorf("literal Go layout tokens in %q read as a layout %q", f, layout)
		}
	}
	if singleLayout(mustTime(t, "%Y-%m-%dT%H:%M:%E3SZ")) != "2006-01-02T15:04:05.000Z" {
		t.Error("Envoy's default START_TIME does not compile to one layout")
	}
}

func mustTime(t *testing.T, f string) []timePiece {
	p, err := compileTime(f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
