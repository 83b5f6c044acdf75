package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/proxy/xdsclient"
	"github.com/portico-gateway/portico/pkg/xds"
	"github.com/portico-gateway/portico/pkg/xds/ca"
)

// TestStandaloneXDSNeedsCredentialsOffLoopback: loopback needs nothing;
// any other address needs a token or client certificates, or an explicit
// --xds-insecure.
func TestStandaloneXDSNeedsCredentialsOffLoopback(t *testing.T) {
	dir := t.TempDir()
	files := writePKI(t, dir)
	for _, tc := range []struct {
		name    string
		addr    string
		x       xdsSecurityConfig
		wantErr string
		private bool
	}{
		{name: "loopback, no flags", addr: "127.0.0.1:18000"},
		{name: "localhost, no flags", addr: "localhost:18000"},
		{name: "all interfaces, no flags", addr: "0.0.0.0:18000", wantErr: "without authentication"},
		{name: "a LAN address, no flags", addr: "192.0.2.1:18000", wantErr: "without authentication"},
		{name: "all interfaces, insecure on purpose", addr: ":18000", x: xdsSecurityConfig{insecure: true}},
		{name: "token", addr: ":18000", x: xdsSecurityConfig{tokenFile: files["token"]}, private: true},
		{name: "token over TLS", addr: ":18000", x: xdsSecurityConfig{tokenFile: files["token"], tlsCert: files["server.crt"], tlsKey: files["server.key"]}, private: true},
		{name: "mutual TLS", addr: ":18000", x: xdsSecurityConfig{tlsCert: files["server.crt"], tlsKey: files["server.key"], clientCA: files["ca.crt"]}, private: true},
		{name: "TLS alone is not authentication", addr: ":18000", x: xdsSecurityConfig{tlsCert: files["server.crt"], tlsKey: files["server.key"]}, wantErr: "without authentication"},
		{name: "half a certificate", addr: ":18000", x: xdsSecurityConfig{tlsCert: files["server.crt"]}, wantErr: "go together"},
		{name: "client CA without TLS", addr: ":18000", x: xdsSecurityConfig{clientCA: files["ca.crt"]}, wantErr: "needs --xds-tls-cert"},
		{name: "missing token file", addr: ":18000", x: xdsSecurityConfig{tokenFile: filepath.Join(dir, "nope")}, wantErr: "--xds-token-file"},
		{name: "a CA file that holds no certificate", addr: ":18000", x: xdsSecurityConfig{tlsCert: files["server.crt"], tlsKey: files["server.key"], clientCA: files["token"]}, wantErr: "no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, private, err := standaloneXDS(logr.Discard(), tc.addr, tc.x)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an error with %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil || private != tc.private {
				t.Fatalf("err %v, private channel %v (want %v)", err, private, tc.private)
			}
		})
	}
}

// writePKI writes a CA, a server certificate for 127.0.0.1, a client
// certificate and a token.
func writePKI(t *testing.T, dir string) map[string]string {
	t.Helper()
	a, err := ca.New("standalone-test", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	write := func(name string, b []byte) {
		files[name] = filepath.Join(dir, name)
		if err := os.WriteFile(files[name], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.crt", a.CertPEM)
	pair := func(prefix string, issue func() (certPEM, keyPEM []byte)) {
		c, k := issue()
		write(prefix+".crt", c)
		write(prefix+".key", k)
	}
	encode := func(der [][]byte, key any) ([]byte, []byte) {
		var c []byte
		for _, d := range der {
			c = append(c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
		}
		kb, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return c, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
	}
	pair("server", func() ([]byte, []byte) {
		c, err := a.Issue([]string{"127.0.0.1"}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return encode(c.Certificate, c.PrivateKey)
	})
	pair("client", func() ([]byte, []byte) {
		c, err := a.IssueClient("proxy", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return encode(c.Certificate, c.PrivateKey)
	})
	write("token", []byte("s3cret-token-for-the-xds-port\n"))
	write("wrong-token", []byte("not-the-token-for-the-xds-port\n"))
	return files
}

type applied struct {
	mu        sync.Mutex
	listeners int
}

func (a *applied) Update(typeURL string, res map[string]xdsclient.Resource, _ string) error {
	if typeURL == resourcev3.ListenerType {
		a.mu.Lock()
		a.listeners = len(res)
		a.mu.Unlock()
	}
	return nil
}
func (a *applied) Wanted(string) []string { return nil }
func (a *applied) Connected(bool)         {}
func (a *applied) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.listeners
}

// TestStandaloneXDSCredentialsEndToEnd: a proxy (pkg/proxy/xdsclient, as
// edge-proxy runs it) gets its configuration from a standalone xDS port
// secured by a token or mutual TLS only with the right credentials.
func TestStandaloneXDSCredentialsEndToEnd(t *testing.T) {
	files := writePKI(t, t.TempDir())
	tr, _ := testenv.Build(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
`, testenv.Ingress)
	for _, tc := range []struct {
		name   string
		x      xdsSecurityConfig
		client xdsclient.Security
		ok     bool
	}{
		{"token over TLS", xdsSecurityConfig{tokenFile: files["token"], tlsCert: files["server.crt"], tlsKey: files["server.key"]},
			xdsclient.Security{CAFile: files["ca.crt"], TokenFile: files["token"]}, true},
		{"wrong token", xdsSecurityConfig{tokenFile: files["token"], tlsCert: files["server.crt"], tlsKey: files["server.key"]},
			xdsclient.Security{CAFile: files["ca.crt"], TokenFile: files["wrong-token"]}, false},
		{"no token", xdsSecurityConfig{tokenFile: files["token"], tlsCert: files["server.crt"], tlsKey: files["server.key"]},
			xdsclient.Security{CAFile: files["ca.crt"]}, false},
		{"mutual TLS", xdsSecurityConfig{tlsCert: files["server.crt"], tlsKey: files["server.key"], clientCA: files["ca.crt"]},
			xdsclient.Security{CAFile: files["ca.crt"], CertFile: files["client.crt"], KeyFile: files["client.key"]}, true},
		{"TLS without a client certificate", xdsSecurityConfig{tlsCert: files["server.crt"], tlsKey: files["server.key"], clientCA: files["ca.crt"]},
			xdsclient.Security{CAFile: files["ca.crt"]}, false},
		{"token in clear text on loopback", xdsSecurityConfig{tokenFile: files["token"]}, xdsclient.Security{TokenFile: files["token"]}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, _, err := standaloneXDS(logr.Discard(), "0.0.0.0:0", tc.x)
			if err != nil {
				t.Fatal(err)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := xds.NewServer(logr.Discard(), gateway.ClassName)
			if _, err := srv.Publish(t.Context(), gateway.ClassName(testenv.Ingress), tr); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel()
			wg.Add(2)
			go func() { defer wg.Done(); srv.ServeWith(ctx, lis, opts) }()
			h := &applied{}
			md := map[string]string{"istio": "ingressgateway"}
			c := xdsclient.New(xdsclient.Options{Address: lis.Addr().String(), Node: proxyNode(md), Security: tc.client,
				BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}, h, logr.Discard())
			go func() { defer wg.Done(); c.Run(ctx) }()
			deadline := time.Now().Add(10 * time.Second)
			if !tc.ok {
				// A refused handshake is retried inside gRPC (the stream waits
				// for a ready connection) without ending the stream: give it a
				// bounded window in which nothing may be applied.
				deadline = time.Now().Add(2 * time.Second)
			}
			for time.Now().Before(deadline) {
				if tc.ok && h.count() == 1 {
					return
				}
				if !tc.ok && c.Stats().Disconnects >= 2 {
					if h.count() != 0 || !strings.Contains(c.Stats().LastError, "Unauthenticated") && !strings.Contains(c.Stats().LastError, "certificate") {
						t.Fatalf("refused client: listeners %d, last error %q", h.count(), c.Stats().LastError)
					}
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			if !tc.ok && h.count() == 0 && !c.Stats().Connected {
				return
			}
			t.Fatalf("timed out: listeners %d, stats %+v", h.count(), c.Stats())
		})
	}
}

func proxyNode(labels map[string]string) *corev3.Node {
	l := map[string]any{}
	for k, v := range labels {
		l[k] = v
	}
	md, _ := structpb.NewStruct(map[string]any{xds.MetadataLabels: l})
	return &corev3.Node{Id: "standalone-test", Metadata: md}
}
