package hostile

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/internal/testpki"
)

var (
	results = flag.String("hostile.results", "", "write the results table (Markdown) to this file")
	failing = flag.String("hostile.failing", "", "write the table of failing cases (Markdown) to this file")
)

// serverTimeout is what the suite configures as the proxy's request
// headers, stream idle and connection idle timeouts, so that slow clients
// are cut off within the test's time budget.
const serverTimeout = time.Second

// TestHostileInputs plays every hostile client of the table against the
// real edge proxy, configured over xDS by the real control plane, in
// front of a backend that records exactly what it receives; each case
// asserts what the client got and what reached the backend, and that the
// proxy still serves an ordinary request afterwards.
func TestHostileInputs(t *testing.T) {
	env := startPortico(t)
	cases := All()
	var mu sync.Mutex
	got := map[string]Result{}
	record := func(c *Case, r Result) {
		mu.Lock()
		got[c.Name] = r
		mu.Unlock()
	}
	nonce := Nonce()
	play := func(t *testing.T, i int, c *Case) {
		if c.External && env.External == "" {
			t.Skip("needs a local IPv4 address that is neither loopback nor private, to be an external client; this machine has none")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e := env.For(i, nonce)
		r := Play(ctx, c, e)
		record(c, r)
		t.Logf("%s in %v", r, r.Took.Round(time.Millisecond))
		if !c.Accepts(r) {
			t.Errorf("%s (%s):\n  got  %s\n  want %s\n  nginx %s", c.Name, c.What, r, strings.Join(c.Want, " | "), c.Nginx)
			for _, q := range e.Backend.Matching(e.Token) {
				t.Logf("backend received on connection %d: %q (body %d bytes)", q.Conn, clip(string(q.Head), 300), q.BodyLen)
			}
		}
	}
	// Slow cases wait for server timeouts: run them side by side, and
	// alongside the others.
	t.Run("cases", func(t *testing.T) {
		for i, c := range cases {
			if !c.Slow {
				continue
			}
			t.Run(c.Name, func(t *testing.T) {
				t.Parallel()
				play(t, i, c)
			})
		}
		t.Run("fast", func(t *testing.T) {
			t.Parallel()
			for i, c := range cases {
				if c.Slow {
					continue
				}
				t.Run(c.Name, func(t *testing.T) { play(t, i, c) })
			}
		})
	})
	for path, render := range map[string]func([]*Case, map[string]Result) string{*results: Table, *failing: Failing} {
		if path != "" {
			if err := os.WriteFile(path, []byte(render(cases, got)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestTableIsSound checks the table itself: unique names, a reference
// measured on nginx for every case, something wanted.
func TestTableIsSound(t *testing.T) {
	seen := map[string]bool{}
	cases := All()
	if len(cases) < 80 {
		t.Errorf("%d cases; the suite promises at least 80", len(cases))
	}
	for _, c := range cases {
		if seen[c.Name] {
			t.Errorf("duplicate case %s", c.Name)
		}
		seen[c.Name] = true
		if c.Nginx == "" {
			t.Errorf("%s: no nginx reference (run bench/hostile/nginx-reference.sh)", c.Name)
		}
		if len(c.Want) == 0 || c.Run == nil || c.Category == "" || c.What == "" {
			t.Errorf("%s: incomplete row", c.Name)
		}
	}
}

// startPortico runs the control plane, the edge proxy and the recording
// backend: a Gateway with HTTP on 80 (h2c too) and HTTPS on 443, routes
// /admin to a 403 the gateway answers itself and everything else to the
// backend, with Istio's default retry policy (so request bodies are
// buffered for retries).
func startPortico(t *testing.T) *Env {
	t.Helper()
	backend := testenv.StartRecorder(t)
	dir := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key")
	cp := testenv.StartControlPlane(t, "")
	publish(t, cp, fmt.Sprintf(`
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
  http:
  - match: [{uri: {prefix: /admin}}]
    directResponse: {status: 403, body: {string: "forbidden\n"}}
  - route: [{destination: {host: backend.default.svc.cluster.local}}]
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
`, dir, backend.Port))
	p := testenv.StartProxy(t, cp.Addr, proxyOptions())
	p.WaitReady(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(testpki.Read("ca.crt"))
	env := &Env{HTTP: p.Addr(80), H2C: p.Addr(80), TLS: p.Addr(443), External: ExternalAddress(), CA: pool,
		Backend: backend, Wait: 5 * time.Second, Timeout: serverTimeout, HandshakeTimeout: handshakeTimeout,
		Heap: func() uint64 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc
		}}
	// Ready means configured; wait until both listeners serve.
	testenv.WaitFor(t, "the HTTP listener to route to the backend", func() bool {
		resp, err := http.Get("http://" + env.HTTP + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	testenv.WaitFor(t, "the HTTPS listener", func() bool {
		c, err := tls.Dial("tcp", env.TLS, &tls.Config{ServerName: "a.example.com", RootCAs: pool})
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	t.Cleanup(func() {
		if t.Failed() && testing.Verbose() {
			p.Stop()
			t.Logf("access log:\n%s", clip(p.Log.String(), 20000))
		}
	})
	return env
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
