package controller_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	sotw "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/xds"
)

// running is a controller and its xDS server on a real socket.
type running struct {
	ctrl *controller.Controller
	xds  *xds.Server
	addr string
	sink *sink
}

func startController(t *testing.T, log logr.Logger) *running {
	t.Helper()
	return startControllerWith(t, log, controller.Options{})
}

// startControllerWith runs a controller with opts, and its xDS server,
// until the test ends.
func startControllerWith(t *testing.T, log logr.Logger, opts controller.Options) *running {
	t.Helper()
	server := xds.NewServer(logr.Discard(), gateway.ClassName)
	st := &sink{}
	ctrl := controller.New(log, server, st, opts)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); server.Serve(ctx, lis) }()
	go func() { defer wg.Done(); ctrl.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &running{ctrl: ctrl, xds: server, addr: lis.Addr().String(), sink: st}
}

func (r *running) update(t *testing.T, yaml string) {
	t.Helper()
	r.ctrl.Update(testenv.Resources(t, yaml))
}

func message(s *status.Status, field, sub string) *status.Message {
	if s == nil {
		return nil
	}
	for i, m := range s.Messages {
		if m.Field == field && strings.Contains(m.Message, sub) {
			return &s.Messages[i]
		}
	}
	return nil
}

// What a proxy cannot serve reaches the Gateway's status, on the server
// concerned: a port held by another process on the proxy's machine, a
// certificate file the proxy cannot read. When the proxy recovers, the
// message goes.
func TestGatewayStatusReportsWhatTheProxyCannotServe(t *testing.T) {
	rc := startController(t, logr.Discard())
	backend := testenv.StartBackend(t, "v1")
	missing := t.TempDir()
	p := testenv.StartProxy(t, rc.addr, testenv.ProxyOptions{Ports: []uint32{80, 81, 443}, NodeID: "edge-1"})
	busy, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", p.Ports[81]))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	rc.update(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 81, name: http-81, protocol: HTTP}
    hosts: ['*']
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*.example.com']
    tls: {mode: SIMPLE, serverCertificate: %[1]s/tls.crt, privateKey: %[1]s/tls.key}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: app}}]}]
`, missing)+testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", backend))

	p.WaitReady(t)
	var gw *status.Status
	poll.Until(t, "both problems on the Gateway's status", func() bool {
		gw = rc.sink.find("Gateway", "gw")
		return message(gw, "spec.servers[1].port", "0.0.0.0_81") != nil && message(gw, "spec.servers[2].tls", "tls.crt") != nil
	})
	port := message(gw, "spec.servers[1].port", "0.0.0.0_81")
	if port.Code != status.GatewayNotServed || port.Reason != status.ReasonPortUnavailable || port.Level != status.Error ||
		!strings.Contains(port.Message, "proxy edge-1 cannot serve port 81") || !strings.Contains(port.Message, "in use by another process") {
		t.Errorf("port message: %+v", port)
	}
	cert := message(gw, "spec.servers[2].tls", "tls.crt")
	if cert.Code != status.InvalidGatewayCredential || cert.Reason != status.ReasonInvalidCertificate ||
		!strings.Contains(cert.Message, "no certificate loaded yet") || strings.Contains(cert.Message, "previous") {
		t.Errorf("certificate message: %+v", cert)
	}
	if m := message(gw, "spec.servers[0].port", ""); m != nil {
		t.Errorf("the served port 80 got a message: %+v", m)
	}
	if c := gw.Condition(status.Accepted); c.Status != "True" || c.Reason != status.ReasonPartiallyInvalid {
		t.Errorf("Accepted = %+v, want True/PartiallyInvalid (port 80 serves)", c)
	}
	if st := rc.ctrl.State(); st == nil || message(findIn(st.Result.Statuses, "Gateway", "gw"), "spec.servers[1].port", "0.0.0.0_81") == nil {
		t.Error("/debug/status (the controller's state) lacks the proxy's report")
	}

	busy.Close()
	poll.Until(t, "the port message to go once the port is free", func() bool {
		return message(rc.sink.find("Gateway", "gw"), "spec.servers[1].port", "0.0.0.0_81") == nil
	})
	if message(rc.sink.find("Gateway", "gw"), "spec.servers[2].tls", "tls.crt") == nil {
		t.Error("the certificate message went although the file is still missing")
	}
}

func findIn(list []*status.Status, kind, name string) *status.Status {
	for _, s := range list {
		if s.Key.Kind == kind && s.Key.Name == name {
			return s
		}
	}
	return nil
}

// lines collects log lines.
type lines struct {
	mu  sync.Mutex
	all []string
}

func (l *lines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		l.all = append(l.all, prefix+" "+args)
		l.mu.Unlock()
	}, funcr.Options{})
}

func (l *lines) matching(subs ...string) []string {
	return l.matchingSince(0, subs...)
}

// matchingSince is matching over the lines from the from'th on.
func (l *lines) matchingSince(from int, subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.all[from:] {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(s, sub)
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// A connected proxy that no Gateway selects serves nothing: the
// controller warns, once, in its log and on /debug/status.
func TestWarnsWhenNoGatewaySelectsAConnectedProxy(t *testing.T) {
	logs := &lines{}
	rc := startController(t, logs.logger())
	rc.update(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
`)
	conn, err := grpc.NewClient(rc.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	md, _ := structpb.NewStruct(map[string]any{"LABELS": map[string]any{"istio": "egressgateway"}})
	c := sotw.NewADSClient(ctx, &corev3.Node{Id: "egress-1", Metadata: md}, resourcev3.ListenerType)
	if err := c.InitConnect(conn); err != nil {
		t.Fatal(err)
	}
	go c.Fetch() // the stream stays open; its response is not needed
	poll.Until(t, "the warning in the log", func() bool { return len(logs.matching("no Gateway selects", "istio=egressgateway", "egress-1")) > 0 })

	srv := httptest.NewServer(rc.ctrl.DebugHandler(nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/debug/status")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "warnings:") || !strings.Contains(string(b), "class: istio=egressgateway") || !strings.Contains(string(b), "egress-1") {
		t.Errorf("/debug/status lacks the warning:\n%s", b)
	}
	if strings.Contains(string(b), "class: istio=ingressgateway") {
		t.Errorf("a selected class is warned about:\n%s", b)
	}
	// Another build with nothing changed logs nothing again.
	rc.update(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}]
`)
	poll.Until(t, "the second build", func() bool {
		st := rc.ctrl.State()
		if st == nil {
			return false
		}
		p := st.Result.Proxy(map[string]string{"istio": "ingressgateway"})
		return p != nil && len(p.Listeners) == 1 && p.Listeners[0].Port == 81
	})
	if n := len(logs.matching("no Gateway selects")); n != 1 {
		t.Errorf("warned %d times, want once", n)
	}
}

// Statuses are logged at their level: errors as errors.
func TestLogSinkLogsErrorsAsErrors(t *testing.T) {
	logs := &lines{}
	s := controller.NewLogSink(logs.logger())
	key := func(n string) resource.Key {
		return resource.Key{Kind: "VirtualService", Namespace: "default", Name: n}
	}
	r := status.NewReport()
	r.Add(key("bad"), status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: "spec.http", Message: "broken regex"})
	r.Add(key("meh"), status.Message{Code: status.ReferencedResourceNotFound, Level: status.Warning, Reason: status.ReasonSubsetNotFound, Message: "subset v3 not found"})
	r.Track(key("ok"), 1)
	s.Update(context.Background(), &gateway.Result{Statuses: r.Finalize()})
	if l := logs.matching("broken regex"); len(l) != 1 || !strings.Contains(l[0], `"error"=`) {
		t.Errorf("an error-level status is not logged as an error: %q", l)
	}
	if l := logs.matching("subset v3 not found"); len(l) != 1 || strings.Contains(l[0], `"error"=`) || !strings.Contains(l[0], `"severity"="Warning"`) {
		t.Errorf("a warning: %q", l)
	}
	if l := logs.matching("default/ok"); len(l) != 1 || strings.Contains(l[0], `"error"=`) {
		t.Errorf("an accepted resource: %q", l)
	}
}

// A status is logged once per change: not again while it stays the same,
// again when it changes, and again when its resource comes back after
// an update without it.
func TestLogSinkLogsOncePerChange(t *testing.T) {
	logs := &lines{}
	s := controller.NewLogSink(logs.logger())
	key := resource.Key{Kind: "VirtualService", Namespace: "default", Name: "vs"}
	update := func(msg string, present bool) {
		r := status.NewReport()
		r.Track(resource.Key{Kind: "Gateway", Namespace: "default", Name: "gw"}, 1)
		if present {
			r.Track(key, 1)
			if msg != "" {
				r.Add(key, status.Message{Code: status.ReferencedResourceNotFound, Level: status.Warning, Reason: status.ReasonSubsetNotFound, Message: msg})
			}
		}
		s.Update(context.Background(), &gateway.Result{Statuses: r.Finalize()})
	}
	steps := []struct {
		msg     string
		present bool
		want    int // lines about default/vs so far
	}{
		{"", true, 1},
		{"", true, 1},          // unchanged
		{"subset v2", true, 2}, // changed
		{"subset v2", true, 2},
		{"", false, 2}, // gone: nothing to log
		{"subset v2", true, 3},
	}
	for i, step := range steps {
		update(step.msg, step.present)
		if n := len(logs.matching("default/vs")); n != step.want {
			t.Fatalf("step %d: %d lines about default/vs, want %d", i, n, step.want)
		}
	}
	if n := len(logs.matching("default/gw")); n != 1 {
		t.Errorf("the unchanged Gateway was logged %d times, want once", n)
	}
}

// serveBackend runs an HTTP backend on loopback until the test ends and
// returns its port.
func serveBackend(t *testing.T, h http.HandlerFunc) int {
	t.Helper()
	be := &http.Server{Handler: h}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go be.Serve(bl)
	t.Cleanup(func() { be.Close() })
	return bl.Addr().(*net.TCPAddr).Port
}

// appBehindGateway is a Gateway on port 80 routing every host to a
// backend on 127.0.0.1:port.
func appBehindGateway(port int) string {
	return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: istio-system}
spec:
  hosts: ['*']
  gateways: [gw]
  http: [{route: [{destination: {host: app.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app, namespace: istio-system}
spec:
  hosts: [app.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: %d}}]
`, port)
}
