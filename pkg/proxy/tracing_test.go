package proxy_test

// Tracing configured the Istio way, through the real translator, xDS
// stream and proxy, to an in-process OTLP/gRPC collector and a Zipkin
// HTTP receiver on real sockets.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/proxy/tracing"
	"github.com/portico-gateway/portico/pkg/translate"
)

// gotSpan is a received span in one shape for both receivers.
type gotSpan struct {
	TraceID, SpanID, ParentID, Name, Kind string
	Tags                                  map[string]string
}

type spanSink struct {
	mu    sync.Mutex
	spans []gotSpan
}

func (s *spanSink) add(g gotSpan) {
	s.mu.Lock()
	s.spans = append(s.spans, g)
	s.mu.Unlock()
}

func (s *spanSink) all() []gotSpan {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]gotSpan(nil), s.spans...)
}

func (s *spanSink) trace(id string) []gotSpan {
	var out []gotSpan
	for _, g := range s.all() {
		if g.TraceID == id {
			out = append(out, g)
		}
	}
	return out
}

// otlpCollector is an OTLP/gRPC trace service on a real socket.
type otlpCollector struct {
	coltrace.UnimplementedTraceServiceServer
	sink spanSink
	port uint32
}

func (c *otlpCollector) Export(_ context.Context, r *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	for _, rs := range r.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				g := gotSpan{TraceID: hex.EncodeToString(s.TraceId), SpanID: hex.EncodeToString(s.SpanId),
					ParentID: hex.EncodeToString(s.ParentSpanId), Name: s.Name, Kind: "SERVER", Tags: map[string]string{}}
				if s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
					g.Kind = "CLIENT"
				}
				for _, a := range s.Attributes {
					g.Tags[a.Key] = a.Value.GetStringValue()
				}
				c.sink.add(g)
			}
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

func startOTLP(t testing.TB) *otlpCollector {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &otlpCollector{port: uint32(ln.Addr().(*net.TCPAddr).Port)}
	s := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(s, c)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return c
}

// zipkinReceiver takes Zipkin v2 JSON on /api/v2/spans.
type zipkinReceiver struct {
	sink spanSink
	port uint32
}

func startZipkin(t *testing.T) *zipkinReceiver {
	z := &zipkinReceiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z.port = uint32(ln.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/spans" || r.Method != http.MethodPost {
			http.Error(w, "no", 404)
			return
		}
		var spans []tracing.ZipkinSpan
		if err := json.NewDecoder(r.Body).Decode(&spans); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for _, s := range spans {
			z.sink.add(gotSpan{TraceID: s.TraceID, SpanID: s.ID, ParentID: s.ParentID, Name: s.Name, Kind: s.Kind, Tags: s.Tags})
		}
		w.WriteHeader(202)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return z
}

// traceBackend records the propagation headers of each request and
// answers 503 to the first request of a path ending in /flaky.
type traceBackend struct {
	port uint32
	// keep: record headers (benchmarks turn it off).
	keep  bool
	mu    sync.Mutex
	seen  []http.Header
	flaky atomic.Int32
}

func (b *traceBackend) headers() []http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]http.Header(nil), b.seen...)
}

func startTraceBackend(t testing.TB) *traceBackend {
	b := &traceBackend{keep: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.port = uint32(ln.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.keep {
			b.mu.Lock()
			b.seen = append(b.seen, r.Header.Clone())
			b.mu.Unlock()
		}
		io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "/flaky") && b.flaky.Add(1) == 1 {
			w.WriteHeader(503)
			return
		}
		fmt.Fprint(w, "ok")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

func tracingConfig(backendPort uint32) string {
	return gateway80 + fmt.Sprintf(`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /x/}}]
    route: [{destination: {host: app}}]
    retries: {attempts: 2, retryOn: 5xx}
  - route: [{destination: {host: app}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app}
spec:
  hosts: [app.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: %d}}]
`, backendPort)
}

type tracedEdge struct {
	p  *testenv.Proxy
	cp *testenv.ControlPlane
	b  *traceBackend
}

func startTraced(t testing.TB, tr *translate.Tracing) *tracedEdge {
	t.Helper()
	b := startTraceBackend(t)
	cp := testenv.StartControlPlane(t, "")
	cp.PublishWith(t, tracingConfig(b.port), translate.Options{Edge: translate.DefaultEdge(), Tracing: tr})
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}, TracingFlushInterval: 20 * time.Millisecond})
	p.WaitReady(t)
	return &tracedEdge{p: p, cp: cp, b: b}
}

func (e *tracedEdge) get(t *testing.T, path string, hdr map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+e.p.Addr(80)+path, nil)
	req.Host = "app.example.com"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func waitSpans(t *testing.T, s *spanSink, trace string, n int) []gotSpan {
	t.Helper()
	var got []gotSpan
	testenv.WaitFor(t, fmt.Sprintf("%d spans of trace %s", n, trace), func() bool {
		got = s.trace(trace)
		return len(got) >= n
	})
	return got
}

func serverSpan(t *testing.T, spans []gotSpan) gotSpan {
	t.Helper()
	for _, s := range spans {
		if s.Kind == "SERVER" {
			return s
		}
	}
	t.Fatalf("no server span in %+v", spans)
	return gotSpan{}
}

const (
	inTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	inParent = "00f067aa0ba902b7"
)

func TestTracingOTLPW3CParentAndAttributes(t *testing.T) {
	col := startOTLP(t)
	e := startTraced(t, &translate.Tracing{SamplingPercent: 0, ServiceName: "istio-ingressgateway.istio-system",
		Provider: &translate.TracingProvider{Name: "otel", Kind: "opentelemetry", Service: "127.0.0.1", Port: col.port},
		Tags:     []translate.TracingTag{{Name: "team", Literal: "edge"}, {Name: "tenant", Header: "x-tenant", Default: "none"}}})
	// Sampling is 0%: only the incoming sampled flag makes this exported.
	if c := e.get(t, "/a?q=1", map[string]string{"traceparent": "00-" + inTrace + "-" + inParent + "-01",
		"tracestate": "vendor=x", "x-request-id": "rid-1", "x-tenant": "acme"}); c != 200 {
		t.Fatalf("status %d", c)
	}
	spans := waitSpans(t, &col.sink, inTrace, 2)
	srv := serverSpan(t, spans)
	if srv.ParentID != inParent {
		t.Errorf("server span parent %q, want the incoming span %s", srv.ParentID, inParent)
	}
	want := map[string]string{"http.method": "GET", "http.url": "http://app.example.com/a?q=1", "http.protocol": "HTTP/1.1",
		"http.status_code": "200", "guid:x-request-id": "rid-1", "component": "proxy", "response_flags": "-",
		"upstream_cluster": "outbound|80||app.default.svc.cluster.local", "node_id": e.p.Proxy.Node().Id,
		"upstream_cluster.name":   "outbound|80||app.default.svc.cluster.local",
		"istio.canonical_service": "istio-ingressgateway", "istio.namespace": "istio-system",
		"team": "edge", "tenant": "acme"}
	for k, v := range want {
		if srv.Tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, srv.Tags[k], v)
		}
	}
	var client gotSpan
	for _, s := range spans {
		if s.Kind == "CLIENT" {
			client = s
		}
	}
	if client.ParentID != srv.SpanID {
		t.Errorf("upstream span parent %q, want the server span %s", client.ParentID, srv.SpanID)
	}
	h := e.b.headers()[0]
	if got, want := h.Get("traceparent"), "00-"+inTrace+"-"+client.SpanID+"-01"; got != want {
		t.Errorf("upstream traceparent %q, want %q", got, want)
	}
	if h.Get("tracestate") != "vendor=x" {
		t.Errorf("tracestate %q not passed on", h.Get("tracestate"))
	}
	if h.Get("x-b3-traceid") != inTrace || h.Get("x-b3-spanid") != client.SpanID || h.Get("x-b3-parentspanid") != srv.SpanID || h.Get("x-b3-sampled") != "1" {
		t.Errorf("upstream B3 headers %v", h)
	}
}

func TestTracingZipkinB3(t *testing.T) {
	z := startZipkin(t)
	e := startTraced(t, &translate.Tracing{SamplingPercent: 0,
		Provider: &translate.TracingProvider{Name: "zipkin", Kind: "zipkin", Service: "127.0.0.1", Port: z.port}})
	cases := []struct {
		name    string
		hdr     map[string]string
		trace   string
		parent  string
		sampled bool
	}{
		{"b3 multi", map[string]string{"x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124", "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "1"},
			"463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312", true},
		{"b3 single 64-bit", map[string]string{"b3": "48485a3953bb6124-e457b5a2e4d86bd1-1"},
			"000000000000000048485a3953bb6124", "e457b5a2e4d86bd1", true},
		// Not sampled upstream: sampling 0% agrees, and nothing may be exported.
		{"b3 single not sampled", map[string]string{"b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"},
			"80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", false},
		{"w3c not sampled", map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
			"0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", false},
	}
	// Unsampled ones first; the last sampled trace arriving proves the
	// exporter had its chance to send them (one FIFO queue).
	order := []int{2, 3, 0, 1}
	for _, i := range order {
		c := cases[i]
		n := len(e.b.headers())
		if code := e.get(t, "/z", c.hdr); code != 200 {
			t.Fatalf("%s: status %d", c.name, code)
		}
		h := e.b.headers()[n]
		if h.Get("x-b3-traceid") != c.trace || !strings.HasPrefix(h.Get("traceparent"), "00-"+c.trace+"-") {
			t.Errorf("%s: upstream trace headers %v", c.name, h)
		}
		if h.Get("b3") != "" {
			t.Errorf("%s: the single b3 header went upstream unchanged: %q", c.name, h.Get("b3"))
		}
		wantS := "0"
		if c.sampled {
			wantS = "1"
		}
		if h.Get("x-b3-sampled") != wantS {
			t.Errorf("%s: x-b3-sampled %q, want %s", c.name, h.Get("x-b3-sampled"), wantS)
		}
		if c.sampled {
			srv := serverSpan(t, waitSpans(t, &z.sink, c.trace, 2))
			if srv.ParentID != c.parent {
				t.Errorf("%s: parent %q, want %s", c.name, srv.ParentID, c.parent)
			}
		}
	}
	for _, c := range cases {
		if !c.sampled && len(z.sink.trace(c.trace)) > 0 {
			t.Errorf("%s: an unsampled trace was exported", c.name)
		}
	}
}

func TestTracingRetriesGiveChildSpans(t *testing.T) {
	col := startOTLP(t)
	e := startTraced(t, &translate.Tracing{SamplingPercent: 100,
		Provider: &translate.TracingProvider{Name: "otel", Kind: "opentelemetry", Service: "127.0.0.1", Port: col.port}})
	if c := e.get(t, "/x/flaky", map[string]string{"traceparent": "00-" + inTrace + "-" + inParent + "-01"}); c != 200 {
		t.Fatalf("status %d (want the retry to succeed)", c)
	}
	spans := waitSpans(t, &col.sink, inTrace, 3)
	srv := serverSpan(t, spans)
	var codes []string
	ids := map[string]bool{}
	for _, s := range spans {
		if s.Kind == "CLIENT" {
			if s.ParentID != srv.SpanID {
				t.Errorf("attempt span parent %q, want %s", s.ParentID, srv.SpanID)
			}
			codes = append(codes, s.Tags["http.status_code"])
			ids[s.SpanID] = true
		}
	}
	if len(codes) != 2 || codes[0] != "503" || codes[1] != "200" {
		t.Errorf("attempt spans' status codes %v, want [503 200]", codes)
	}
	hs := e.b.headers()
	if len(hs) != 2 {
		t.Fatalf("%d upstream requests, want 2", len(hs))
	}
	for i, h := range hs {
		if id := h.Get("x-b3-spanid"); !ids[id] {
			t.Errorf("attempt %d: upstream saw span %q, not one of the attempt spans %v", i, id, ids)
		}
	}
	if hs[0].Get("x-b3-spanid") == hs[1].Get("x-b3-spanid") {
		t.Errorf("both attempts carried the same span ID")
	}
}

// TestTracingSamplingLive: a new trace is sampled by percentage, decided
// by x-request-id; republishing with another percentage changes it
// without a restart.
func TestTracingSamplingLive(t *testing.T) {
	col := startOTLP(t)
	prov := &translate.TracingProvider{Name: "otel", Kind: "opentelemetry", Service: "127.0.0.1", Port: col.port}
	e := startTraced(t, &translate.Tracing{SamplingPercent: 0, Provider: prov})
	for i := 0; i < 20; i++ {
		e.get(t, "/s", map[string]string{"x-request-id": fmt.Sprintf("off-%d", i)})
	}
	e.cp.PublishWith(t, tracingConfig(e.b.port), translate.Options{Edge: translate.DefaultEdge(),
		Tracing: &translate.Tracing{SamplingPercent: 100, Provider: prov}})
	var ok bool
	testenv.WaitFor(t, "sampling 100% applied", func() bool {
		e.get(t, "/s", map[string]string{"x-request-id": "on"})
		for _, s := range col.sink.all() {
			if s.Tags["guid:x-request-id"] == "on" {
				ok = true
			}
		}
		return ok
	})
	for _, s := range col.sink.all() {
		if strings.HasPrefix(s.Tags["guid:x-request-id"], "off-") {
			t.Fatalf("a request at 0%% sampling was exported: %+v", s)
		}
	}
}

func TestTracingHostileHeadersStartNewTrace(t *testing.T) {
	col := startOTLP(t)
	e := startTraced(t, &translate.Tracing{SamplingPercent: 100,
		Provider: &translate.TracingProvider{Name: "otel", Kind: "opentelemetry", Service: "127.0.0.1", Port: col.port}})
	bad := []map[string]string{
		{"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{"traceparent": "zz-" + inTrace + "-" + inParent + "-01"},
		{"traceparent": strings.Repeat("a", 8000)},
		{"b3": "not-a-b3-header-at-all"},
		{"x-b3-traceid": "xyz", "x-b3-spanid": inParent},
	}
	for i, h := range bad {
		n := len(e.b.headers())
		if c := e.get(t, "/h", h); c != 200 {
			t.Fatalf("case %d: status %d", i, c)
		}
		tp := e.b.headers()[n].Get("traceparent")
		sc, ok := tracing.ParseTraceparent(tp)
		if !ok || sc.Sampled != tracing.SampledYes {
			t.Errorf("case %d: upstream traceparent %q is not a fresh sampled trace", i, tp)
		}
	}
}
