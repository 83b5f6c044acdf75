package proxy_test

import (
	"crypto/tls"
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

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/internal/testpki"
)

// logCapture records log lines for assertions about what is logged, and
// how often.
type logCapture struct {
	mu    sync.Mutex
	lines []string
}

func (c *logCapture) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		c.mu.Lock()
		c.lines = append(c.lines, prefix+" "+args)
		c.mu.Unlock()
	}, funcr.Options{Verbosity: 0})
}

func (c *logCapture) count(subs ...string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range c.lines {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			n++
		}
	}
	return n
}

func adminGet(t *testing.T, p *testenv.Proxy, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(p.Admin.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// nacked returns what the control plane last heard as a NACK of a type
// from any proxy.
func nacked(cp *testenv.ControlPlane, typeURL string) string {
	for _, n := range cp.Server.Nodes() {
		if d := n.Nacked[typeURL]; d != "" {
			return d
		}
	}
	return ""
}

func mustStat(t *testing.T, p *testenv.Proxy, name string) int64 {
	t.Helper()
	v, ok := p.Stats.Lookup(name)
	if !ok {
		t.Fatalf("no stat %s", name)
	}
	return v
}

// A port held by another process rejects only the listener that wants
// it, as Envoy does: the others start and serve, the proxy is ready, the
// NACK names that listener (LDS, not another type), /ready and the stats
// say which listener fails and why, the failure is logged once, and the
// listener starts by itself once the port is free.
func TestBusyPortRejectsOnlyItsListener(t *testing.T) {
	for _, sotw := range []bool{false, true} {
		t.Run(map[bool]string{false: "delta", true: "sotw"}[sotw], func(t *testing.T) {
			testBusyPort(t, sotw)
		})
	}
}

func testBusyPort(t *testing.T, sotw bool) {
	v1 := testenv.StartBackend(t, "v1")
	echo := startEcho(t)
	cp := testenv.StartControlPlane(t, "")
	logs := &logCapture{}
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80, 81, 3306}, SOTW: sotw, Log: logs.logger()})
	// Another process holds the port listener 0.0.0.0_81 is mapped to.
	busy, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", p.Ports[81]))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cp.Publish(t, `
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
  - port: {number: 3306, name: tcp, protocol: TCP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: app}}]}]
  tcp: [{match: [{port: 3306}], route: [{destination: {host: echo}}]}]
`+testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", v1)+
		testenv.ServiceEntry("echo", "echo.default.svc.cluster.local", echo.Port, "TCP", echo))

	p.WaitReady(t) // the busy port does not hold readiness back
	if resp, e := get(t, http.DefaultClient, p.URL(80)+"/", "app.example.com", nil); resp.StatusCode != 200 || e.Backend != "v1" {
		t.Fatalf("listener 80 with 81 failing: %d %q", resp.StatusCode, e.Backend)
	}
	c, err := net.Dial("tcp", p.Addr(3306))
	if err != nil {
		t.Fatalf("TCP listener with 81 failing: %v", err)
	}
	c.SetDeadline(time.Now().Add(poll.Timeout)) // a socket nobody serves fails, not hangs
	fmt.Fprint(c, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("TCP echo through 3306: %q %v", buf, err)
	}
	c.Close()

	code, body := adminGet(t, p, "/ready")
	if code != 200 || !strings.HasPrefix(body, "LIVE\n") || !strings.Contains(body, "listener 0.0.0.0_81: cannot bind") ||
		!strings.Contains(body, "in use by another process") || !strings.Contains(body, "--port-map") || strings.Contains(body, "0.0.0.0_80:") {
		t.Errorf("/ready = %d %q; want 200 LIVE naming only 0.0.0.0_81, why and what to do", code, body)
	}
	poll.Until(t, "the LDS NACK naming the listener", func() bool {
		return strings.Contains(nacked(cp, resourcev3.ListenerType), "listener 0.0.0.0_81: cannot bind")
	})
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.RouteType, resourcev3.EndpointType} {
		if d := nacked(cp, typ); d != "" {
			t.Errorf("%s NACKed for a listener's port: %s", typ, d)
		}
	}
	if v := mustStat(t, p, "listener_manager.listener_create_failure"); v != 1 {
		t.Errorf("listener_create_failure = %d, want 1", v)
	}
	if v := mustStat(t, p, "listener_manager.listener.0.0.0.0_81.failed"); v != 1 {
		t.Errorf("listener 0.0.0.0_81 failed gauge = %d", v)
	}
	if v := mustStat(t, p, "listener_manager.total_listeners_active"); v != 2 {
		t.Errorf("total_listeners_active = %d, want 2", v)
	}
	// The bind is retried (with backoff), but the failure is logged once.
	poll.Until(t, "three bind attempts", func() bool { return p.Listeners.BindAttempts("0.0.0.0_81") >= 3 })
	if n := logs.count("listener not serving", "0.0.0.0_81"); n != 1 {
		t.Errorf("the busy port was logged %d times, want once", n)
	}

	// The other process goes away: the listener starts by itself and the
	// control plane hears that the configuration is now fully applied.
	busy.Close()
	poll.Until(t, "listener 81 to serve once its port is free", func() bool {
		resp, err := http.Get(p.URL(81) + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	poll.Until(t, "the LDS NACK to be withdrawn", func() bool { return nacked(cp, resourcev3.ListenerType) == "" })
	if code, body := adminGet(t, p, "/ready"); code != 200 || body != "LIVE\n" {
		t.Errorf("/ready after recovery = %d %q", code, body)
	}
	if v := mustStat(t, p, "listener_manager.listener.0.0.0.0_81.failed"); v != 0 {
		t.Errorf("failed gauge after recovery = %d", v)
	}
}

// A certificate file that does not exist rejects only what needs it: a
// filter chain when its listener has others, the listener when it has no
// other. The rest serves, readiness is not held back, the NACKs name the
// listener and the secret and never claim a previous certificate, and the
// certificate is served as soon as its files appear.
func TestMissingCertificateRejectsOnlyWhatNeedsIt(t *testing.T) {
	good := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key")
	missing := t.TempDir() // the files do not exist yet
	v1 := testenv.StartBackend(t, "v1")
	cp := testenv.StartControlPlane(t, "")
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80, 443, 8443}})
	cp.Publish(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 443, name: https-good, protocol: HTTPS}
    hosts: [good.example.com]
    tls: {mode: SIMPLE, serverCertificate: %[1]s/server.crt, privateKey: %[1]s/server.key}
  - port: {number: 443, name: https-bad, protocol: HTTPS}
    hosts: [bad.example.com]
    tls: {mode: SIMPLE, serverCertificate: %[2]s/tls.crt, privateKey: %[2]s/tls.key}
  - port: {number: 8443, name: https-only-bad, protocol: HTTPS}
    hosts: ['*.example.com']
    tls: {mode: SIMPLE, serverCertificate: %[2]s/tls.crt, privateKey: %[2]s/tls.key}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*.example.com']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: app}}]}]
`, good, missing)+testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", v1))

	p.WaitReady(t)
	if resp, _ := get(t, http.DefaultClient, p.URL(80)+"/", "good.example.com", nil); resp.StatusCode != 200 {
		t.Fatalf("plain HTTP with a certificate missing elsewhere: %d", resp.StatusCode)
	}
	if resp, e, err := httpsGet(p.Addr(443), &tls.Config{ServerName: "good.example.com", RootCAs: caPool()}, "good.example.com"); err != nil || resp.StatusCode != 200 || e.Backend != "v1" {
		t.Fatalf("the good certificate's chain on 443: %v", err)
	}
	if _, _, err := httpsGet(p.Addr(443), &tls.Config{ServerName: "bad.example.com", RootCAs: caPool()}, "bad.example.com"); err == nil {
		t.Fatal("a chain without its certificate served")
	}
	if c, err := net.Dial("tcp", p.Addr(8443)); err == nil {
		c.Close()
		t.Fatal("a listener none of whose chains has a certificate is bound")
	}

	code, body := adminGet(t, p, "/ready")
	for _, want := range []string{"listener 0.0.0.0_443: filter chain", "(bad.example.com) is not served", "the other filter chains serve",
		"listener 0.0.0.0_8443: no filter chain can serve", "no certificate loaded yet"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/ready = %d %q; want %q", code, body, want)
		}
	}
	if strings.Contains(body, "previous certificate") {
		t.Errorf("/ready claims a previous certificate that never existed: %q", body)
	}
	poll.Until(t, "NACKs naming the listeners and the secret", func() bool {
		lds, sds := nacked(cp, resourcev3.ListenerType), nacked(cp, resourcev3.SecretType)
		return strings.Contains(lds, "listener 0.0.0.0_8443:") && strings.Contains(lds, "listener 0.0.0.0_443:") &&
			strings.Contains(sds, "secret file-cert:"+missing+"/tls.crt~"+missing+"/tls.key") && strings.Contains(sds, "no certificate loaded yet") &&
			strings.Contains(sds, "used by listener 0.0.0.0_443, 0.0.0.0_8443")
	})
	if strings.Contains(nacked(cp, resourcev3.SecretType), "previous") {
		t.Errorf("SDS NACK claims a previous certificate: %s", nacked(cp, resourcev3.SecretType))
	}

	// The files appear (a Secret mounted late): both chains serve, with no
	// push from the control plane, and it hears the configuration is now
	// fully applied.
	for src, dst := range map[string]string{"server.key": "tls.key", "server.crt": "tls.crt"} {
		if err := os.WriteFile(filepath.Join(missing, dst), testpki.Read(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	poll.Until(t, "the late certificate to be served on both ports", func() bool {
		_, _, err1 := httpsGet(p.Addr(443), &tls.Config{ServerName: "bad.example.com", RootCAs: caPool()}, "bad.example.com")
		_, _, err2 := httpsGet(p.Addr(8443), &tls.Config{ServerName: "x.example.com", RootCAs: caPool()}, "x.example.com")
		return err1 == nil && err2 == nil
	})
	poll.Until(t, "the NACKs to be withdrawn", func() bool {
		return nacked(cp, resourcev3.ListenerType) == "" && nacked(cp, resourcev3.SecretType) == ""
	})
	if code, body := adminGet(t, p, "/ready"); code != 200 || body != "LIVE\n" {
		t.Errorf("/ready after the files appeared = %d %q", code, body)
	}
}
