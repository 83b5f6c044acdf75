package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
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

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/internal/testpki"
	ptls "github.com/portico-gateway/portico/pkg/tls"
)

func caPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(testpki.Read("ca.crt"))
	return pool
}

func clientCert(t *testing.T, name string) tls.Certificate {
	c, err := tls.X509KeyPair(testpki.Read(name+".crt"), testpki.Read(name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// httpsGet makes one request over a fresh TLS connection.
func httpsGet(addr string, cfg *tls.Config, host string) (*http.Response, testenv.Echo, error) {
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + host + "/")
	if err != nil {
		return nil, testenv.Echo{}, err
	}
	defer resp.Body.Close()
	var e testenv.Echo
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &e)
	return resp, e, nil
}

func TestTLSModes(t *testing.T) {
	dir := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key", "ca.crt")
	web := testenv.StartBackend(t, "web")
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-mtls, protocol: HTTPS}
    hosts: [mtls.example.com]
    tls: {mode: MUTUAL, credentialName: mtls-cert}
  - port: {number: 443, name: https-san, protocol: HTTPS}
    hosts: [san.example.com]
    tls: {mode: MUTUAL, credentialName: mtls-cert, subjectAltNames: [someone-else.test]}
  - port: {number: 443, name: https-optional, protocol: HTTPS}
    hosts: [optional.example.com]
    tls: {mode: OPTIONAL_MUTUAL, serverCertificate: %[1]s/server.crt, privateKey: %[1]s/server.key, caCertificates: %[1]s/ca.crt}
  - port: {number: 443, name: https-tls13, protocol: HTTPS}
    hosts: [tls13.example.com]
    tls: {mode: SIMPLE, credentialName: mtls-cert, minProtocolVersion: TLSV1_3}
  - port: {number: 443, name: https-cipher, protocol: HTTPS}
    hosts: [cipher.example.com]
    tls: {mode: SIMPLE, credentialName: mtls-cert, maxProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]}
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [mtls.example.com]
    tls: {httpsRedirect: true}
---
apiVersion: v1
kind: Secret
metadata: {name: mtls-cert, namespace: istio-system}
stringData: {tls.crt: ${PEM:server.crt}, tls.key: ${PEM:server.key}, ca.crt: ${PEM:ca.crt}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ['*.example.com']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: web}}]}]
`, dir)+testenv.ServiceEntry("web", "web.default.svc.cluster.local", 80, "HTTP", web))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{443, 80}})
	p.WaitReady(t)
	addr := p.Addr(443)
	good, untrusted := clientCert(t, "client"), clientCert(t, "untrusted-client")
	cfg := func(sni string, certs ...tls.Certificate) *tls.Config {
		return &tls.Config{ServerName: sni, RootCAs: caPool(), Certificates: certs}
	}
	cases := []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"mutual with a trusted client", cfg("mtls.example.com", good), true},
		{"mutual without a client certificate", cfg("mtls.example.com"), false},
		{"mutual with an untrusted client", cfg("mtls.example.com", untrusted), false},
		{"subjectAltNames not matching", cfg("san.example.com", good), false},
		{"optional mutual without a certificate", cfg("optional.example.com"), true},
		{"optional mutual with a trusted client", cfg("optional.example.com", good), true},
		{"optional mutual with an untrusted client", cfg("optional.example.com", untrusted), false},
		{"TLS 1.3 minimum, client offers 1.3", cfg("tls13.example.com"), true},
		{"TLS 1.3 minimum, client at most 1.2", &tls.Config{ServerName: "tls13.example.com", RootCAs: caPool(), MaxVersion: tls.VersionTLS12}, false},
		{"cipher suite offered", &tls.Config{ServerName: "cipher.example.com", RootCAs: caPool(), CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}}, true},
		{"cipher suite not offered", &tls.Config{ServerName: "cipher.example.com", RootCAs: caPool(), CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, false},
		{"unknown SNI", cfg("nobody.example.org"), false},
	}
	for _, c := range cases {
		resp, e, err := httpsGet(addr, c.cfg, c.cfg.ServerName)
		if c.ok && (err != nil || resp.StatusCode != 200 || e.Backend != "web") {
			t.Errorf("%s: want success, got %v %v", c.name, err, resp)
		}
		if !c.ok && err == nil {
			t.Errorf("%s: want a failed handshake, got %d", c.name, resp.StatusCode)
		}
		if c.name == "mutual with a trusted client" && err == nil {
			xfcc := e.Headers["x-forwarded-client-cert"]
			if !strings.Contains(xfcc, "Hash=") || !strings.Contains(xfcc, `Subject="CN=client.portico.test`) || !strings.Contains(xfcc, "DNS=client.portico.test") {
				t.Errorf("x-forwarded-client-cert = %q", xfcc)
			}
		}
		if c.name == "optional mutual without a certificate" && err == nil && e.Headers["x-forwarded-client-cert"] != "" {
			t.Errorf("no client certificate, yet x-forwarded-client-cert = %q", e.Headers["x-forwarded-client-cert"])
		}
	}
	// httpsRedirect.
	req, _ := http.NewRequest("GET", p.URL(80)+"/path?q=1", nil)
	req.Host = "mtls.example.com"
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "https://mtls.example.com/path?q=1" {
		t.Errorf("httpsRedirect: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestCertificateRotationUnderLoad swaps mounted certificate files the way
// the kubelet does while clients keep opening TLS connections: no
// handshake may fail, the new certificate must be served within a second,
// and a corrupt pair must never be served.
func TestCertificateRotationUnderLoad(t *testing.T) {
	dir := t.TempDir()
	version := 0
	swap := func(cert, key []byte) {
		version++
		ts := filepath.Join(dir, fmt.Sprintf("..2026_11_21_%02d", version))
		os.MkdirAll(ts, 0o755)
		os.WriteFile(filepath.Join(ts, "tls.crt"), cert, 0o644)
		os.WriteFile(filepath.Join(ts, "tls.key"), key, 0o600)
		tmp := filepath.Join(dir, "..data_tmp")
		os.Remove(tmp)
		os.Symlink(filepath.Base(ts), tmp)
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swap(testpki.Read("server.crt"), testpki.Read("server.key"))
	os.Symlink("..data/tls.crt", filepath.Join(dir, "tls.crt"))
	os.Symlink("..data/tls.key", filepath.Join(dir, "tls.key"))

	p := startSimpleTLS(t, filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))

	var failures, handshakes atomic.Int64
	var mu sync.Mutex
	seen := map[string]time.Time{} // serial → first time served
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := tls.Dial("tcp", p.Addr(443), &tls.Config{ServerName: "counter.lab.example.com", RootCAs: caPool()})
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				handshakes.Add(1)
				s := conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
				conn.Close()
				mu.Lock()
				if _, ok := seen[s]; !ok {
					seen[s] = time.Now()
				}
				mu.Unlock()
			}
		}()
	}
	served := func(serial string) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		at, ok := seen[serial]
		return at, ok
	}
	testenv.WaitFor(t, "handshakes with the first certificate", func() bool { _, ok := served("64"); return ok })

	// A corrupt pair (mismatched key) is rejected; the old one keeps serving.
	swap(testpki.Read("server.crt"), testpki.Read("other.key"))
	testenv.WaitFor(t, "the bad pair to be rejected", func() bool {
		v, _ := p.Stats.Lookup("sds.file-cert:" + dir + "/tls.crt~" + dir + "/tls.key.update_rejected")
		return v > 0
	})
	rotatedAt := time.Now()
	swap(testpki.Read("server-rotated.crt"), testpki.Read("server-rotated.key"))
	testenv.WaitFor(t, "the rotated certificate", func() bool { _, ok := served("65"); return ok })
	at, _ := served("65")
	before := handshakes.Load()
	testenv.WaitFor(t, "more handshakes after rotation", func() bool { return handshakes.Load() > before+50 })
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d handshakes failed during rotation; first: %v", failures.Load(), handshakes.Load()+failures.Load(), firstErr.Load())
	}
	if d := at.Sub(rotatedAt); d > time.Second {
		t.Errorf("the new certificate took %v to be served, want under 1s", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Errorf("served certificates %v; the corrupt pair must never be served", seen)
	}
	t.Logf("%d handshakes, 0 failed; new serial served %v after the swap", handshakes.Load(), at.Sub(rotatedAt).Round(time.Millisecond))
}

// TestSecretRotationPushesOnlyTheSecret: a credentialName Secret changing
// changes the SDS resource only; the listener is untouched (no drain), and
// the next handshake serves the new certificate.
func TestSecretRotationPushesOnlyTheSecret(t *testing.T) {
	web := testenv.StartBackend(t, "web")
	cp := testenv.StartControlPlane(t, "")
	yaml := func(cert, key string) string {
		return `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: web-cert}
---
apiVersion: v1
kind: Secret
metadata: {name: web-cert, namespace: istio-system}
stringData: {tls.crt: ${PEM:` + cert + `}, tls.key: ${PEM:` + key + `}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: web}}]}]
` + testenv.ServiceEntry("web", "web.default.svc.cluster.local", 80, "HTTP", web)
	}
	cp.Publish(t, yaml("server.crt", "server.key"))
	first, _ := cp.Server.Snapshot("istio=ingressgateway")
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{443}})
	p.WaitReady(t)
	serial := func() string {
		conn, err := tls.Dial("tcp", p.Addr(443), &tls.Config{ServerName: "counter.lab.example.com", RootCAs: caPool()})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
	}
	if s := serial(); s != "64" {
		t.Fatalf("serial %s", s)
	}
	cp.Publish(t, yaml("server-rotated.crt", "server-rotated.key"))
	second, _ := cp.Server.Snapshot("istio=ingressgateway")
	for _, typ := range []string{"type.googleapis.com/envoy.config.listener.v3.Listener", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
		"type.googleapis.com/envoy.config.cluster.v3.Cluster"} {
		if first.Versions[typ] != second.Versions[typ] {
			t.Errorf("rotating a Secret changed %s", typ)
		}
	}
	if first.Versions["type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"] == second.Versions["type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"] {
		t.Fatal("the secret version did not change")
	}
	testenv.WaitFor(t, "the rotated certificate", func() bool { return serial() == "65" })
	if v, _ := p.Stats.Lookup("listener_manager.lds.update_success"); v != 1 {
		t.Errorf("the listener was updated %d times; a secret rotation must not touch it", v)
	}
}

func TestTLSOrigination(t *testing.T) {
	dir := testenv.WriteCerts(t, t.TempDir(), "ca.crt", "untrusted-ca.crt", "client.crt", "client.key")
	plain := testenv.StartTLSBackend(t, "tls-backend")
	mtlsBackend := startMTLSBackend(t)
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, gateway80+fmt.Sprintf(`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: out}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /verified}}]
    route: [{destination: {host: secure.internal, subset: verified}}]
  - match: [{uri: {prefix: /wrong-ca}}]
    route: [{destination: {host: secure.internal, subset: wrongca}}]
  - match: [{uri: {prefix: /insecure}}]
    route: [{destination: {host: secure.internal, subset: insecure}}]
  - match: [{uri: {prefix: /credential}}]
    route: [{destination: {host: secure.internal, subset: credential}}]
  - match: [{uri: {prefix: /mutual}}]
    route: [{destination: {host: mtls.internal}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: default}
spec:
  host: secure.internal
  subsets:
  - name: verified
    trafficPolicy: {tls: {mode: SIMPLE, sni: counter.lab.example.com, caCertificates: %[1]s/ca.crt}}
  - name: wrongca
    trafficPolicy: {tls: {mode: SIMPLE, sni: counter.lab.example.com, caCertificates: %[1]s/untrusted-ca.crt}}
  - name: insecure
    trafficPolicy: {tls: {mode: SIMPLE, sni: whatever.test, insecureSkipVerify: true}}
  - name: credential
    trafficPolicy: {tls: {mode: SIMPLE, sni: counter.lab.example.com, credentialName: backend-ca}}
---
apiVersion: v1
kind: Secret
metadata: {name: backend-ca, namespace: default}
stringData: {ca.crt: ${PEM:ca.crt}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mtls, namespace: default}
spec:
  host: mtls.internal
  trafficPolicy:
    tls: {mode: MUTUAL, sni: counter.lab.example.com, caCertificates: %[1]s/ca.crt, clientCertificate: %[1]s/client.crt, privateKey: %[1]s/client.key}
`, dir)+testenv.ServiceEntry("secure", "secure.internal", 443, "HTTPS", plain)+
		testenv.ServiceEntry("mtls", "mtls.internal", 443, "HTTPS", mtlsBackend))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	for path, want := range map[string]int{"/verified": 200, "/wrong-ca": 503, "/insecure": 200, "/credential": 200, "/mutual": 200} {
		resp, e := get(t, http.DefaultClient, p.URL(80)+path, "app.example.com", nil)
		if resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", path, resp.StatusCode, want)
		}
		if want == 200 && e.Proto != "HTTP/1.1" {
			t.Errorf("%s: backend answer %+v", path, e)
		}
	}
	p.Proxy.Flush()
	if !strings.Contains(p.Log.String(), `"GET /wrong-ca HTTP/1.1" 503 UF`) {
		t.Errorf("an unverifiable upstream must be a connection failure (UF):\n%s", p.Log.String())
	}
	if mtlsBackend.Hits.Load() == 0 {
		t.Error("the mutual TLS backend was never reached")
	}
}

// startMTLSBackend runs an HTTPS backend that requires a client
// certificate signed by the test CA.
func startMTLSBackend(t *testing.T) *testenv.Backend {
	b := &testenv.Backend{Name: "mtls-backend"}
	srv := httptest.NewUnstartedServer(b)
	cert, err := tls.X509KeyPair(testpki.Read("server.crt"), testpki.Read("server.key"))
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: caPool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	b.Addr = srv.Listener.Addr().String()
	b.Port = uint32(srv.Listener.Addr().(*net.TCPAddr).Port)
	return b
}

func TestCertsEndpoint(t *testing.T) {
	dir := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key")
	p := startSimpleTLS(t, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	resp, err := http.Get(p.Admin.URL + "/certs")
	if err != nil {
		t.Fatal(err)
	}
	var certs struct {
		Certificates []struct {
			CertChain []struct {
				SerialNumber        string `json:"serial_number"`
				DaysUntilExpiration string `json:"days_until_expiration"`
				Path                string `json:"path"`
			} `json:"cert_chain"`
		} `json:"certificates"`
	}
	json.NewDecoder(resp.Body).Decode(&certs)
	resp.Body.Close()
	if len(certs.Certificates) != 1 || certs.Certificates[0].CertChain[0].SerialNumber != "64" || !strings.Contains(certs.Certificates[0].CertChain[0].Path, "file-cert:") {
		t.Fatalf("/certs = %+v", certs)
	}
	name := "file-cert:" + dir + "/server.crt~" + dir + "/server.key"
	testenv.WaitFor(t, "the expiry stat", func() bool {
		v, ok := p.Stats.Lookup("sds." + name + ".expiration_seconds")
		return ok && v > 2.9e9 // the test certificate expires in 2120, ~94 years away
	})
	if v, _ := p.Stats.Lookup("server.days_until_first_cert_expiring"); v < 30000 {
		t.Errorf("server.days_until_first_cert_expiring = %d", v)
	}
	_ = ptls.Describe

	// The secrets dump shows the file's certificate inline, as Envoy's
	// does (istioctl proxy-config secret reads it), and the key only as
	// its path.
	resp, err = http.Get(p.Admin.URL + "/config_dump?resource=dynamic_active_secrets")
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Configs []struct {
			Secret struct {
				TLS struct {
					Chain struct {
						Inline   []byte `json:"inline_bytes"`
						Filename string `json:"filename"`
					} `json:"certificate_chain"`
					Key map[string]any `json:"private_key"`
				} `json:"tls_certificate"`
			} `json:"secret"`
		} `json:"configs"`
	}
	err = json.NewDecoder(resp.Body).Decode(&dump)
	resp.Body.Close()
	if err != nil || len(dump.Configs) != 1 {
		t.Fatalf("secrets dump: %v %+v", err, dump)
	}
	want, _ := os.ReadFile(dir + "/server.crt")
	got := dump.Configs[0].Secret.TLS
	if block, _ := pem.Decode(got.Chain.Inline); block == nil || !bytes.Contains(want, got.Chain.Inline[:40]) || got.Chain.Filename != "" {
		t.Errorf("certificate chain not inline: %+v", got.Chain)
	}
	if got.Key["filename"] != dir+"/server.key" || got.Key["inline_bytes"] != nil || got.Key["inline_string"] != nil {
		t.Errorf("private key in the dump: %v", got.Key)
	}
}

// startSimpleTLS runs a proxy with one HTTPS server on port 443 (SIMPLE,
// the certificate and key from files) routing every host to a backend.
func startSimpleTLS(t *testing.T, certFile, keyFile string) *testenv.Proxy {
	t.Helper()
	web := testenv.StartBackend(t, "web")
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, serverCertificate: %s, privateKey: %s}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: web}}]}]
`, certFile, keyFile)+testenv.ServiceEntry("web", "web.default.svc.cluster.local", 80, "HTTP", web))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{443}})
	p.WaitReady(t)
	return p
}
