// Package testenv runs real parts for integration tests: Portico's xDS
// server fed by the real binder and translator, the real edge proxy
// connected to it over gRPC, and real backends on loopback sockets.
package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"

	"github.com/portico-gateway/portico/internal/freeport"
	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/internal/testpki"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/proxy"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

// Ingress is the default proxy class.
var Ingress = map[string]string{"istio": "ingressgateway"}

// Logger returns a logger for tests: quiet unless PORTICO_TEST_LOG is set.
func Logger(t testing.TB) logr.Logger {
	if os.Getenv("PORTICO_TEST_LOG") != "" {
		return testr.New(t.(*testing.T))
	}
	return logr.Discard()
}

// ControlPlane is a running xDS server.
type ControlPlane struct {
	Server *xds.Server
	Addr   string
	cancel context.CancelFunc
	done   chan error
}

// StartControlPlane serves xDS on addr ("" picks a free port).
func StartControlPlane(t testing.TB, addr string) *ControlPlane {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ { // a restarted control plane may wait for its port
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cp := &ControlPlane{Server: xds.NewServer(Logger(t), gateway.ClassName), Addr: lis.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { cp.done <- cp.Server.Serve(ctx, lis) }()
	t.Cleanup(cp.Stop)
	return cp
}

// Stop stops the control plane (idempotent).
func (cp *ControlPlane) Stop() {
	if cp.cancel == nil {
		return
	}
	cp.cancel()
	<-cp.done
	cp.cancel = nil
}

// Build binds and translates YAML (with ${PEM:file} substitutions) for a
// proxy class.
func Build(t testing.TB, yamlText string, class map[string]string) (*translate.Resources, *gateway.Result) {
	t.Helper()
	return BuildWith(t, yamlText, class, translate.Options{})
}

// BuildWith is Build with translation options (edge timeouts and limits).
func BuildWith(t testing.TB, yamlText string, class map[string]string, opts translate.Options) (*translate.Resources, *gateway.Result) {
	t.Helper()
	res := Resources(t, yamlText)
	result := gateway.Build(res, gateway.Options{Classes: []map[string]string{class}})
	p := result.Proxy(class)
	if p == nil {
		t.Fatalf("no configuration for class %v", class)
	}
	tr, err := translate.Translate(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tr, result
}

// Resources decodes YAML (with ${PEM:file} substitutions) into a sorted
// snapshot, failing the test on any document it cannot decode or add.
func Resources(t testing.TB, yamlText string) *resource.Resources {
	t.Helper()
	objs, errs := resource.Decode(golden.ExpandPEM([]byte(yamlText)), "test")
	for _, e := range errs {
		t.Fatalf("test YAML: %v", e)
	}
	res, err := resource.FromObjects(objs)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Publish binds, translates and publishes YAML for the ingress class and
// returns the statuses.
func (cp *ControlPlane) Publish(t testing.TB, yamlText string) []*status.Status {
	t.Helper()
	tr, result := Build(t, yamlText, Ingress)
	cp.PublishResources(t, tr)
	return result.Statuses
}

// PublishWith is Publish with translation options.
func (cp *ControlPlane) PublishWith(t testing.TB, yamlText string, opts translate.Options) []*status.Status {
	t.Helper()
	tr, result := BuildWith(t, yamlText, Ingress, opts)
	cp.PublishResources(t, tr)
	return result.Statuses
}

// PublishResources publishes already translated resources.
func (cp *ControlPlane) PublishResources(t testing.TB, tr *translate.Resources) {
	t.Helper()
	if _, err := cp.Server.Publish(context.Background(), gateway.ClassName(Ingress), tr); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a loopback port that is the test process's own (see
// package freeport: no other test process is handed it, and the kernel
// does not give it out by itself).
func FreePort(t testing.TB) uint32 {
	t.Helper()
	p, err := freeport.Get()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Proxy is a running edge proxy.
type Proxy struct {
	*proxy.Proxy
	// Ports maps configured listener ports to the loopback ports bound.
	Ports  map[uint32]uint32
	Admin  *httptest.Server
	Log    *SyncBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with err set
	err    error
}

// SyncBuffer is a goroutine-safe buffer for access logs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ProxyOptions tune StartProxy.
type ProxyOptions struct {
	Ports     []uint32 // listener ports to remap to free loopback ports
	SOTW      bool
	DrainTime time.Duration
	NodeID    string
	// TerminationDrain and StatusAddress: see proxy.Options.
	TerminationDrain time.Duration
	StatusAddress    string
	// MaxDownstreamConnections and MaxBufferedRequestBytes: see proxy.Options.
	MaxDownstreamConnections int64
	MaxBufferedRequestBytes  int64
	// Log receives the proxy's log (default: Logger(t)).
	Log logr.Logger
	// TracingFlushInterval: see proxy.Options (tests use a short one).
	TracingFlushInterval time.Duration
}

// StartProxy runs an edge proxy connected to addr.
func StartProxy(t testing.TB, addr string, o ProxyOptions) *Proxy {
	t.Helper()
	pm := map[uint32]uint32{}
	for _, p := range o.Ports {
		pm[p] = FreePort(t)
	}
	if o.DrainTime == 0 {
		o.DrainTime = 2 * time.Second
	}
	if o.NodeID == "" {
		o.NodeID = "test-proxy-" + strings.ReplaceAll(t.Name(), "/", "-")
	}
	logBuf := &SyncBuffer{}
	log := o.Log
	if log.GetSink() == nil {
		log = Logger(t)
	}
	p := proxy.New(proxy.Options{
		NodeID: o.NodeID, Cluster: "istio-ingressgateway", Namespace: "istio-system", Labels: Ingress,
		XDSAddress: addr, SOTW: o.SOTW, DrainTime: o.DrainTime, PortMap: pm, AccessLog: logBuf,
		WarmingTimeout: 5 * time.Second, TerminationDrain: o.TerminationDrain, StatusAddress: o.StatusAddress,
		MaxDownstreamConnections: o.MaxDownstreamConnections, MaxBufferedRequestBytes: o.MaxBufferedRequestBytes,
		TracingFlushInterval: o.TracingFlushInterval,
	}, log)
	ctx, cancel := context.WithCancel(context.Background())
	tp := &Proxy{Proxy: p, Ports: pm, Log: logBuf, cancel: cancel, done: make(chan struct{})}
	go func() {
		tp.err = p.Run(ctx)
		close(tp.done)
	}()
	tp.Admin = httptest.NewServer(p.AdminHandler())
	t.Cleanup(func() {
		tp.Admin.Close()
		tp.Stop()
	})
	return tp
}

// Stop stops the proxy and waits for it (idempotent).
func (p *Proxy) Stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.cancel = nil
}

// Terminate tells the proxy to stop (as SIGTERM does) and returns a
// channel closed when it has; Err then holds Run's result.
func (p *Proxy) Terminate() <-chan struct{} {
	p.cancel()
	return p.done
}

// Err is what Run returned, once the channel from Terminate is closed.
func (p *Proxy) Err() error { return p.err }

// URL returns http://127.0.0.1:<bound port of configured port>.
func (p *Proxy) URL(port uint32) string { return fmt.Sprintf("http://127.0.0.1:%d", p.Ports[port]) }

// Addr returns 127.0.0.1:<bound port>.
func (p *Proxy) Addr(port uint32) string { return fmt.Sprintf("127.0.0.1:%d", p.Ports[port]) }

// WaitReady waits until the proxy applied its first configuration.
func (p *Proxy) WaitReady(t testing.TB) {
	t.Helper()
	WaitFor(t, "the proxy to be ready", p.Ready)
}

// WaitFor polls cond until it holds or poll.Timeout passes.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, cond)
}

// Backend is an HTTP backend that says who it is.
type Backend struct {
	Name string
	Addr string
	Port uint32
	Hits atomic.Int64
	// Status, when set, is returned instead of 200.
	Status atomic.Int32
	// Delay, in milliseconds, is waited before answering.
	Delay atomic.Int64
	srv   *httptest.Server
}

// Echo is what a backend answers.
type Echo struct {
	Backend string            `json:"backend"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Host    string            `json:"host"`
	Headers map[string]string `json:"headers"`
	Proto   string            `json:"proto"`
	// TransferEncoding and ContentLength describe the request body framing
	// the backend received.
	TransferEncoding []string `json:"transferEncoding,omitempty"`
	ContentLength    int64    `json:"contentLength"`
}

func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.Hits.Add(1)
	if d := b.Delay.Load(); d > 0 {
		select {
		case <-time.After(time.Duration(d) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}
	if s := b.Status.Load(); s != 0 {
		w.WriteHeader(int(s))
		fmt.Fprintf(w, "%s says %d\n", b.Name, s)
		return
	}
	hdr := map[string]string{}
	for k, v := range r.Header {
		hdr[strings.ToLower(k)] = strings.Join(v, ",")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("x-backend", b.Name)
	json.NewEncoder(w).Encode(Echo{Backend: b.Name, Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Headers: hdr, Proto: r.Proto,
		TransferEncoding: r.TransferEncoding, ContentLength: r.ContentLength})
}

// StartBackend runs an HTTP backend on loopback.
func StartBackend(t testing.TB, name string) *Backend {
	t.Helper()
	b := &Backend{Name: name}
	b.srv = httptest.NewServer(b)
	t.Cleanup(b.srv.Close)
	b.Addr = b.srv.Listener.Addr().String()
	b.Port = uint32(b.srv.Listener.Addr().(*net.TCPAddr).Port)
	return b
}

// StartTLSBackend runs an HTTPS backend with the test server certificate.
func StartTLSBackend(t testing.TB, name string) *Backend {
	t.Helper()
	b := &Backend{Name: name}
	b.srv = httptest.NewUnstartedServer(b)
	cert, err := tls.X509KeyPair(testpki.Read("server.crt"), testpki.Read("server.key"))
	if err != nil {
		t.Fatal(err)
	}
	b.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	b.Addr = b.srv.Listener.Addr().String()
	b.Port = uint32(b.srv.Listener.Addr().(*net.TCPAddr).Port)
	return b
}

// ServiceEntry returns YAML declaring backends as one STATIC service.
func ServiceEntry(name, host string, port uint32, protocol string, backends ...*Backend) string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: %s}\nspec:\n  hosts: [%s]\n  ports: [{number: %d, name: %s, protocol: %s}]\n  resolution: STATIC\n  endpoints:\n",
		name, host, port, strings.ToLower(protocol), protocol)
	for _, be := range backends {
		fmt.Fprintf(&b, "  - {address: 127.0.0.1, ports: {%s: %d}, labels: {version: %s}}\n", strings.ToLower(protocol), be.Port, be.Name)
	}
	return b.String()
}

// WriteCerts writes the test PKI files into dir and returns dir.
func WriteCerts(t testing.TB, dir string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), testpki.Read(n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
