// Package h2spec runs h2spec (github.com/summerwind/h2spec, the HTTP/2
// conformance suite) against the real edge proxy, over h2c and over TLS
// with ALPN h2. bench/h2spec/run.sh builds h2spec from the Go module
// proxy and runs this test with H2SPEC set to the binary.
package h2spec

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/testenv"
)

// The h2spec binary; the test is skipped without it (h2spec is not a
// dependency of the module: run.sh builds it).
var bin = os.Getenv("H2SPEC")

// allowedFailures are h2spec cases the proxy fails on purpose, with why.
var allowedFailures = map[string]string{
	// Port 80 serves HTTP/1.1 and h2c with prior knowledge side by side,
	// as Envoy's and Istio's gateways do: bytes that are not the HTTP/2
	// preface are an HTTP/1.1 request, and this one gets a 400 before the
	// connection closes. Over TLS (ALPN h2) the case passes.
	"h2c 3.5/2": "an invalid preface on a port that also serves HTTP/1.1 is answered as HTTP/1.1 (400, then close)",
}

func TestH2Spec(t *testing.T) {
	if bin == "" {
		t.Skip("H2SPEC is not set: run bench/h2spec/run.sh, which builds h2spec from the Go module proxy")
	}
	// A backend answering every request with a body larger than the
	// windows h2spec sets, so that flow-control cases see DATA.
	body := bytes.Repeat([]byte("h2spec "), 3000)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/plain")
		w.Write(body)
	}))
	defer backend.Close()
	port := backend.Listener.Addr().(*net.TCPAddr).Port
	dir := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key")
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, serverCertificate: %[1]s/server.crt, privateKey: %[1]s/server.key}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: backend.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: %[2]d}}]
`, dir, port))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80, 443}})
	p.WaitReady(t)
	testenv.WaitFor(t, "the HTTP listener to route to the backend", func() bool {
		resp, err := http.Get(p.URL(80) + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	for _, mode := range []struct {
		name string
		port uint32
		args []string
	}{{"h2c", 80, nil}, {"tls", 443, []string{"-t", "-k"}}} {
		t.Run(mode.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			args := append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(p.Ports[mode.port]), "-P", "/", "-o", "2", "--strict"}, mode.args...)
			out, _ := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			report(t, mode.name, string(out))
		})
	}
}

var (
	summary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)
	section = regexp.MustCompile(`^\s+(\d+(?:\.\d+)*)\. `)
	failure = regexp.MustCompile(`^\s+×\s+(\d+): (.*)$`)
)

// report logs h2spec's summary and fails for every failed case not
// allowed; a case is named by mode, section and number ("h2c 3.5/2").
func report(t *testing.T, mode, out string) {
	m := summary.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no h2spec summary in its output:\n%s", out)
	}
	t.Logf("h2spec %s: %s", mode, m[0])
	i := strings.Index(out, "Failures:")
	if m[4] == "0" || i < 0 {
		if m[4] != "0" {
			t.Errorf("%s failed cases, and no list of them:\n%s", m[4], out)
		}
		return
	}
	details := out[i:]
	sec := ""
	for _, line := range strings.Split(details, "\n") {
		if s := section.FindStringSubmatch(line); s != nil {
			sec = s[1]
			continue
		}
		f := failure.FindStringSubmatch(line)
		if f == nil {
			continue
		}
		name := fmt.Sprintf("%s %s/%s", mode, sec, f[1])
		if why, ok := allowedFailures[name]; ok {
			t.Logf("allowed failure %s (%s): %s", name, f[2], why)
			continue
		}
		t.Errorf("h2spec case failed: %s: %s", name, f[2])
	}
	if t.Failed() {
		t.Logf("%s", details)
	}
}
