package proxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/testenv"
)

// startGRPCBackend runs net/http's HTTP/2 server without TLS (prior
// knowledge, as gRPC backends speak it) answering like a gRPC service:
// the request body echoed and the status in the trailers. /slow waits for
// the request's context to end and counts cancellations.
func startGRPCBackend(t testing.TB, cancelled *atomic.Int64) *testenv.Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Protocols: new(http.Protocols), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2", http.StatusHTTPVersionNotSupported)
			return
		}
		if r.URL.Path == "/slow" {
			w.WriteHeader(200)
			io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			cancelled.Add(1)
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
		w.Header().Set("Grpc-Status", "5")
		w.Header().Set("Grpc-Message", "not found")
	})}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port, _ := strconv.Atoi(ln.Addr().(*net.TCPAddr).AddrPort().String()[strings.LastIndex(ln.Addr().String(), ":")+1:])
	return &testenv.Backend{Name: "grpc", Addr: ln.Addr().String(), Port: uint32(port)}
}

func startGRPCProxy(t testing.TB, be *testenv.Backend) *testenv.Proxy {
	t.Helper()
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, gateway80+`---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc}
spec:
  hosts: [grpc.example.com]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: grpc.default.svc.cluster.local}}]
    timeout: 10s
`+testenv.ServiceEntry("grpc", "grpc.default.svc.cluster.local", 80, "GRPC", be))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	return p
}

func newH2CClient() *http.Client {
	c := &http.Client{Transport: &http.Transport{Protocols: new(http.Protocols)}, Timeout: 10 * time.Second}
	c.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	return c
}

func TestGRPCUpstreamOverOwnH2Client(t *testing.T) {
	var cancelled atomic.Int64
	be := startGRPCBackend(t, &cancelled)
	p := startGRPCProxy(t, be)
	h2c := newH2CClient()
	h1 := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name     string
		c        *http.Client
		trailers bool // HTTP/1.1 carries them only in chunked responses
	}{{"h2c downstream", h2c, true}, {"HTTP/1.1 downstream", h1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 20 {
				body := strings.Repeat("m", 1+i*7919)
				req, _ := http.NewRequest("POST", p.URL(80)+"/pkg.Svc/Get", strings.NewReader(body))
				req.Host = "grpc.example.com"
				req.Header.Set("Content-Type", "application/grpc")
				req.Header.Set("Te", "trailers")
				resp, err := tc.c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != body || resp.StatusCode != 200 {
					t.Fatalf("status %d, %d bytes (want %d), err %v", resp.StatusCode, len(got), len(body), err)
				}
				if tc.trailers && resp.Trailer.Get("Grpc-Status") != "5" || resp.Trailer.Get("Grpc-Message") != "not found" && tc.trailers {
					t.Fatalf("trailers %v (headers %v)", resp.Trailer, resp.Header)
				}
			}
		})
	}
	const cl = "cluster.outbound|80||grpc.default.svc.cluster.local."
	if n := stat(p, cl+"upstream_cx_total"); n < 1 || n > 4 {
		t.Errorf("upstream_cx_total %d: want the requests multiplexed on few connections", n)
	}
	if n := stat(p, cl+"upstream_rq_total"); n != 40 {
		t.Errorf("upstream_rq_total %d, want 40", n)
	}

	// The downstream client going away resets the upstream stream.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", p.URL(80)+"/slow", nil)
	req.Host = "grpc.example.com"
	resp, err := h2c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for cancelled.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if cancelled.Load() == 0 {
		t.Error("the upstream stream outlived its downstream request")
	}
	if _, err := io.ReadAll(resp.Body); err == nil || !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "closed") {
		t.Logf("body after cancel: %v", err)
	}
}

// BenchmarkH2CUnaryProxied: gRPC-style unary requests (100-byte body,
// echoed, status in trailers) from an h2c client, 16 streams at a time on
// one downstream connection, through the proxy to an h2c backend.
// cpu-µs/req and allocs are the whole process (client, proxy, backend):
// the client's and backend's share does not change with the proxy's
// upstream HTTP/2 client, so differences between versions are the proxy's.
func BenchmarkH2CUnaryProxied(b *testing.B) {
	var cancelled atomic.Int64
	p := startGRPCProxy(b, startGRPCBackend(b, &cancelled))
	client := newH2CClient()
	defer client.CloseIdleConnections()
	url := p.URL(80) + "/pkg.Svc/Get"
	body := strings.Repeat("m", 100)
	one := func() error {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Host = "grpc.example.com"
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(len(body)) || resp.Trailer.Get("Grpc-Status") != "5" {
			return errors.New("bad response: " + resp.Status)
		}
		return nil
	}
	for range 200 {
		if err := one(); err != nil {
			b.Fatal(err)
		}
	}
	const streams = 16
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	var failed sync.Once
	var ferr error
	per := b.N/streams + 1
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if err := one(); err != nil {
					failed.Do(func() { ferr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if ferr != nil {
		b.Fatal(ferr)
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(per*streams), "cpu-µs/req")
}
