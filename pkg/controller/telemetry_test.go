package controller_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/telemetry"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

type collector struct {
	coltrace.UnimplementedTraceServiceServer
	mu   sync.Mutex
	rids map[string]bool
}

func (c *collector) Export(_ context.Context, r *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range r.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				for _, a := range s.Attributes {
					if a.Key == "guid:x-request-id" {
						c.rids[a.Value.GetStringValue()] = true
					}
				}
			}
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) has(rid string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rids[rid]
}

// TestTelemetryChangesTracingLive: a Telemetry resource turns tracing on
// (provider, 100%), then its sampling to 0%, through the controller, with
// the proxy running throughout.
func TestTelemetryChangesTracingLive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{rids: map[string]bool{}}
	gs := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(gs, col)
	go gs.Serve(ln)
	defer gs.Stop()
	var mu sync.Mutex
	var lastTP string
	port := serveBackend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastTP = r.Header.Get("traceparent")
		mu.Unlock()
		fmt.Fprint(w, "ok")
	})

	mesh := &telemetry.Mesh{Providers: map[string]*translate.TracingProvider{"otel": {Name: "otel", Kind: "opentelemetry",
		Service: "127.0.0.1", Port: uint32(ln.Addr().(*net.TCPAddr).Port)}}}
	rc := startControllerWith(t, logr.Discard(), controller.Options{Mesh: mesh})

	base := appBehindGateway(port)
	telem := func(pct int) string {
		return fmt.Sprintf(`---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{providers: [{name: otel}], randomSamplingPercentage: %d}]
`, pct)
	}
	rc.update(t, base)
	p := testenv.StartProxy(t, rc.addr, testenv.ProxyOptions{Ports: []uint32{80}, TracingFlushInterval: 20 * time.Millisecond})
	p.WaitReady(t)
	get := func(rid string) string {
		req, _ := http.NewRequest("GET", p.URL(80)+"/", nil)
		req.Host = "app.example.com"
		req.Header.Set("x-request-id", rid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		return lastTP
	}
	if tp := get("before"); tp != "" {
		t.Fatalf("tracing without any provider: upstream got traceparent %q", tp)
	}
	rc.update(t, base+telem(100))
	// Spans are exported a flush interval after their request, so each
	// poll asks whether any request sent so far has arrived (asking only
	// for the latest one races the flush and can miss forever).
	n := 0
	testenv.WaitFor(t, "a Telemetry-selected provider receiving spans", func() bool {
		n++
		get(fmt.Sprintf("on-%d", n))
		for i := 1; i <= n; i++ {
			if col.has(fmt.Sprintf("on-%d", i)) {
				return true
			}
		}
		return false
	})
	rc.update(t, base+telem(0))
	testenv.WaitFor(t, "randomSamplingPercentage 0 applied", func() bool {
		return strings.HasSuffix(get("off-probe"), "-00")
	})
	for i := 0; i < 10; i++ {
		if tp := get(fmt.Sprintf("off-%d", i)); !strings.HasSuffix(tp, "-00") {
			t.Fatalf("after 0%%: upstream traceparent %q", tp)
		}
	}
	// One sampled request (incoming decision) flushes the queue behind
	// the unsampled ones.
	req, _ := http.NewRequest("GET", p.URL(80)+"/", nil)
	req.Host = "app.example.com"
	req.Header.Set("x-request-id", "forced")
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testenv.WaitFor(t, "the forced span", func() bool { return col.has("forced") })
	for i := 0; i < 10; i++ {
		if col.has(fmt.Sprintf("off-%d", i)) {
			t.Fatalf("request off-%d exported at 0%%", i)
		}
	}
}

// TestTelemetryChangesAccessLoggingLive: Telemetry accessLogging selects
// file providers, filters with CEL and disables a provider, through the
// controller, with the proxy running throughout; removing the resource
// brings meshConfig's access log back.
func TestTelemetryChangesAccessLoggingLive(t *testing.T) {
	port := serveBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "ok")
	})

	dir := t.TempDir()
	fileA, fileB, fileMesh := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log"), filepath.Join(dir, "mesh.log")
	format := "%REQ(X-REQUEST-ID)% %RESPONSE_CODE%"
	mesh := &telemetry.Mesh{AccessLogProviders: map[string]*translate.AccessLog{
		"a": {File: fileA, Format: format}, "b": {File: fileB, Format: format}}}
	rc := startControllerWith(t, testenv.Logger(t), controller.Options{Mesh: mesh,
		Translate: translate.Options{AccessLog: &translate.AccessLog{File: fileMesh, Format: format}}})

	base := appBehindGateway(port)
	telem := func(spec string) string {
		return "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n" + spec
	}
	rc.update(t, base)
	p := testenv.StartProxy(t, rc.addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	get := func(path, rid string) {
		req, _ := http.NewRequest("GET", p.URL(80)+path, nil)
		req.Host = "app.example.com"
		req.Header.Set("x-request-id", rid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	logged := func(file, rid string) bool {
		b, _ := os.ReadFile(file)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, rid+" ") {
				return true
			}
		}
		return false
	}
	// sendUntil sends requests named prefix-N until one shows in file, then
	// one more (prefix-final) that must show too: from then on the new
	// configuration serves every request.
	sendUntil := func(what, path, prefix, file string) {
		n := 0
		testenv.WaitFor(t, what, func() bool {
			n++
			get(path, fmt.Sprintf("%s-%d", prefix, n))
			for i := 1; i <= n; i++ {
				if logged(file, fmt.Sprintf("%s-%d", prefix, i)) {
					return true
				}
			}
			return false
		})
		get(path, prefix+"-final")
		testenv.WaitFor(t, what+" (final)", func() bool { return logged(file, prefix+"-final") })
	}

	sendUntil("meshConfig's access log", "/", "mesh", fileMesh)

	// Provider a, errors only.
	rc.update(t, base+telem(`  accessLogging: [{providers: [{name: a}], filter: {expression: "response.code >= 400"}}]`))
	sendUntil("provider a logging errors", "/missing", "err", fileA)
	get("/", "ok-after-filter")
	get("/missing", "err-after-ok")
	testenv.WaitFor(t, "the error after the 200", func() bool { return logged(fileA, "err-after-ok") })

	// Provider a disabled, b on.
	rc.update(t, base+telem(`  accessLogging: [{providers: [{name: a}], disabled: true}, {providers: [{name: b}]}]`))
	sendUntil("provider b logging", "/", "b", fileB)

	// Telemetry removed: meshConfig's access log again.
	rc.update(t, base)
	sendUntil("meshConfig's access log back", "/", "back", fileMesh)

	p.Stop() // flushes every logger
	a, _ := os.ReadFile(fileA)
	for _, l := range strings.Split(strings.TrimSpace(string(a)), "\n") {
		if !strings.HasSuffix(l, " 404") {
			t.Errorf("provider a logged %q; its filter passes only errors", l)
		}
	}
	for _, c := range []struct{ file, rid string }{
		{fileA, "ok-after-filter"}, {fileA, "b-final"}, {fileA, "back-final"},
		{fileB, "back-final"}, {fileB, "err-final"}, {fileMesh, "err-final"}, {fileMesh, "b-final"},
	} {
		if logged(c.file, c.rid) {
			t.Errorf("%s logged %s, which its configuration at the time excluded", filepath.Base(c.file), c.rid)
		}
	}
}

// TestTelemetryProblemsInStatus: what a Telemetry asks that cannot be
// honoured is written to its status, naming the field, with Istio's codes;
// a valid one is Accepted with no messages.
func TestTelemetryProblemsInStatus(t *testing.T) {
	mesh := &telemetry.Mesh{
		Providers:          map[string]*translate.TracingProvider{"otel": {Name: "otel", Kind: "opentelemetry", Service: "otel.example", Port: 4317}},
		AccessLogProviders: map[string]*translate.AccessLog{"file": {File: "/dev/stdout"}},
	}
	server := xds.NewServer(logr.Discard(), gateway.ClassName)
	st := &sink{}
	ctrl := controller.New(logr.Discard(), server, st, controller.Options{Mesh: mesh})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ctrl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rc := &running{ctrl: ctrl, xds: server}
	rc.update(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: bad, namespace: istio-system}
spec:
  tracing: [{providers: [{name: jaeger}], randomSamplingPercentage: 101}]
  accessLogging:
  - providers: [{name: file}]
    filter: {expression: "response.code >="}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: good, namespace: default}
spec:
  accessLogging: [{providers: [{name: file}], filter: {expression: "response.code >= 500"}}]
`)
	waitFor(t, "the Telemetry statuses", func() bool { return st.find("Telemetry", "bad") != nil && st.find("Telemetry", "good") != nil })
	bad := st.find("Telemetry", "bad")
	want := []struct{ code, field, sub string }{
		{"IST0106", "spec.tracing[0].randomSamplingPercentage", "must be within 0..100"},
		{"IST0101", "spec.tracing[0].providers[0]", `tracing provider "jaeger" is not a meshConfig extensionProviders entry`},
		{"IST0106", "spec.accessLogging[0].filter.expression", `CEL filter "response.code >="`},
	}
	for _, w := range want {
		m := message(bad, w.field, w.sub)
		if m == nil {
			t.Errorf("no message on %s containing %q; messages: %+v", w.field, w.sub, bad.Messages)
			continue
		}
		if m.Code.ID != w.code {
			t.Errorf("%s: code %s, want %s", w.field, m.Code.ID, w.code)
		}
	}
	if c := bad.Condition(status.Accepted); c == nil || c.Reason != status.ReasonPartiallyInvalid {
		t.Errorf("bad: Accepted %+v, want reason %s", c, status.ReasonPartiallyInvalid)
	}
	if c := bad.Condition(status.ResolvedRefs); c == nil || c.Status != "False" {
		t.Errorf("bad: ResolvedRefs %+v, want False (the provider is missing)", c)
	}
	good := st.find("Telemetry", "good")
	if c := good.Condition(status.Accepted); len(good.Messages) != 0 || c == nil || c.Status != "True" || c.Reason != status.ReasonAccepted {
		t.Errorf("good: %+v", good)
	}
}

// TestTelemetryChangesMetricsLive: Telemetry metrics overrides remove a
// label and disable a metric on the proxy's Prometheus endpoint, through
// the controller, with the proxy running throughout; removing the
// resource brings them back.
func TestTelemetryChangesMetricsLive(t *testing.T) {
	port := serveBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "ok")
	})
	rc := startControllerWith(t, logr.Discard(), controller.Options{Mesh: &telemetry.Mesh{}})
	base := appBehindGateway(port)
	rc.update(t, base)
	p := testenv.StartProxy(t, rc.addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	for _, path := range []string{"/", "/missing"} {
		req, _ := http.NewRequest("GET", p.URL(80)+path, nil)
		req.Host = "app.example.com"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// series returns the istio_* lines of family name.
	series := func(name string) []string {
		resp, err := http.Get(p.Admin.URL + "/stats/prometheus")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, name+"{") {
				out = append(out, l)
			}
		}
		return out
	}
	withCode := func(lines []string) bool {
		for _, l := range lines {
			if !strings.Contains(l, `response_code="`) {
				return false
			}
		}
		return len(lines) > 0
	}
	if s := series("istio_requests_total"); len(s) != 2 || !withCode(s) {
		t.Fatalf("before any Telemetry: %q, want two series with response_code", s)
	}
	rc.update(t, base+`---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT_AND_SERVER}
      tagOverrides: {response_code: {operation: REMOVE}}
    - match: {metric: REQUEST_SIZE}
      disabled: true
`)
	testenv.WaitFor(t, "response_code removed from istio_requests_total", func() bool {
		s := series("istio_requests_total")
		return len(s) == 1 && !strings.Contains(s[0], "response_code") && strings.HasSuffix(s[0], " 2")
	})
	if s := series("istio_request_bytes_count"); len(s) != 0 {
		t.Errorf("REQUEST_SIZE disabled, but the proxy serves %q", s)
	}
	if s := series("istio_response_bytes_count"); len(s) != 2 || !withCode(s) {
		t.Errorf("RESPONSE_SIZE untouched: %q", s)
	}
	rc.update(t, base)
	testenv.WaitFor(t, "the labels back once the Telemetry is gone", func() bool {
		s := series("istio_requests_total")
		return len(s) == 2 && withCode(s) && len(series("istio_request_bytes_count")) == 2
	})
}
