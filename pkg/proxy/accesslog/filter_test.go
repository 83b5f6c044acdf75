package accesslog

import (
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestFilterMatch: the filters users write in Telemetry accessLogging,
// over Envoy's attribute names, on a 503 entry and a 200 one.
func TestFilterMatch(t *testing.T) {
	failed := sampleEntry() // 503, UF|URX, GET /a/b?c=d
	ok := sampleEntry()
	ok.Code, ok.Flags = 200, 0
	tcp := &Entry{TCP: true, UpstreamHost: "10.1.2.3:3306", BytesSent: 10}
	cases := []struct {
		expr            string
		failed, ok, tcp bool
	}{
		{"response.code >= 400", true, false, false},
		{"response.code >= 500 && response.code != 503", false, false, false},
		{"response.code == 200", false, true, false},
		{"request.method == 'GET'", true, true, false},
		{"request.url_path == '/a/b'", true, true, false},
		{"request.path.startsWith('/a/') && request.host == 'example.com'", true, true, false},
		{"request.headers['x-custom'] == 'abcdefghij'", true, true, false},
		{"'x-custom' in request.headers", true, true, false},
		{"'x-absent' in request.headers", false, false, false},
		{"request.headers['x-absent'] == 'y'", false, false, false}, // missing key: error, not logged
		{"response.flags != uint(0)", true, false, false},
		{"request.duration > duration('10ms')", true, true, false},
		{"upstream.port == 3306", false, false, true},
		{"source.address.startsWith('192.0.2.')", true, true, false},
		{"xds.cluster_name.contains('svc.ns')", true, true, false},
		{"response.size > 0", true, true, true},
		{"request.nosuchkey == 1", false, false, false},
		{"true", true, true, true},
	}
	for _, c := range cases {
		f, err := CompileFilter(c.expr)
		if err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		for _, x := range []struct {
			name string
			e    *Entry
			want bool
		}{{"503", failed, c.failed}, {"200", ok, c.ok}, {"tcp", tcp, c.tcp}} {
			if got := f.Match(x.e); got != x.want {
				t.Errorf("%s on the %s entry: %v, want %v", c.expr, x.name, got, x.want)
			}
		}
	}
}

// TestFilterHostile: what a hostile or careless Telemetry resource can put
// in a filter is refused at compile time (the listener is NACKed), or
// bounded at run time (not logged), never a hang or a crash.
func TestFilterHostile(t *testing.T) {
	for _, c := range []struct{ name, expr, want string }{
		{"empty", " ", "empty"},
		{"syntax", "response.code >=", "Syntax error"},
		{"not bool", "response.code", ""}, // dyn: allowed, non-bool results do not log
		{"int result", "1 + 2", "not bool"},
		{"unknown root", "req.code == 1", "undeclared reference"},
		{"too long", "true && " + strings.Repeat("true && ", MaxFilterLength/8) + "true", "bytes, more than"},
		{"deep", strings.Repeat("(", 200) + "true" + strings.Repeat(")", 200), "recursion"},
	} {
		_, err := CompileFilter(c.expr)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
	// A quadratic comprehension over a large list hits the cost limit at
	// run time: the entry is not logged, and evaluation stops early.
	f, err := CompileFilter("[" + strings.Repeat("1,", 200) + "1].all(x, [" + strings.Repeat("1,", 200) + "1].all(y, x == y))")
	if err != nil {
		t.Fatal(err)
	}
	if f.Match(sampleEntry()) {
		t.Error("a filter over its cost limit logged")
	}
	f, _ = CompileFilter("response.code")
	if f.Match(sampleEntry()) {
		t.Error("a non-bool result logged")
	}
}

func TestFilterFromEnvoy(t *testing.T) {
	cel, _ := anypb.New(&celv3.ExpressionFilter{Expression: "response.code >= 400"})
	bad, _ := anypb.New(&celv3.ExpressionFilter{Expression: "response.code >="})
	other, _ := anypb.New(wrapperspb.String("x"))
	stdout, _ := anypb.New(&streamv3.StdoutAccessLog{})
	mk := func(f *accesslogv3.AccessLogFilter) []*accesslogv3.AccessLog {
		return []*accesslogv3.AccessLog{{Name: StdoutLogger, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout}, Filter: f}}
	}
	ext := func(a *anypb.Any) *accesslogv3.AccessLogFilter {
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
			Name: CELFilterName, ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: a}}}}
	}
	ts, err := FromEnvoy(mk(ext(cel)))
	if err != nil || ts[0].Filter == nil || ts[0].Filter.Expr != "response.code >= 400" {
		t.Fatalf("cel filter: %+v, %v", ts, err)
	}
	for name, f := range map[string]*accesslogv3.AccessLogFilter{
		"bad expression":     ext(bad),
		"other type":         ext(other),
		"status_code_filter": {FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{}}},
	} {
		if _, err := FromEnvoy(mk(f)); err == nil {
			t.Errorf("%s: accepted; the proxy must NACK a filter it cannot honour", name)
		}
	}
}

// FuzzCompileFilter: any expression compiles or errors, and a compiled
// one evaluates on an entry without panicking, within the cost limit.
func FuzzCompileFilter(f *testing.F) {
	for _, s := range []string{"response.code >= 400", "request.headers['a'] == 'b'", "'a' in request.headers",
		"[1,2].all(x, x > 0)", "request.url_path.matches('^/api')", "upstream.port == 1 || source.address == ''"} {
		f.Add(s)
	}
	e := sampleEntry()
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := CompileFilter(expr)
		if err != nil {
			return
		}
		flt.Match(e)
	})
}

// BenchmarkFilter is the per-entry cost of the commonest filter.
func BenchmarkFilter(b *testing.B) {
	f, err := CompileFilter("response.code >= 400 || request.headers['x-debug'] == 'true'")
	if err != nil {
		b.Fatal(err)
	}
	e := sampleEntry()
	e.Code = 200
	b.ReportAllocs()
	for b.Loop() {
		f.Match(e)
	}
}
