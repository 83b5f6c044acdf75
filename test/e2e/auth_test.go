package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/portico-gateway/portico/internal/testjwt"
)

// jwksServer serves Istio's sample JWKS on loopback, as a jwksUri.
func jwksServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		io.WriteString(w, testjwt.SampleJWKS)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/security/tools/jwt/samples/jwks.json"
}

// seed002Auth is the article's RequestAuthentication and
// AuthorizationPolicy, applied to the ingress gateway as Istio's gateway
// documentation does it: in the root namespace, selecting the gateway.
func seed002Auth(jwksURI string, withPolicy bool) string {
	y := fmt.Sprintf(`
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata:
  name: bookjwt
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "%s"
`, jwksURI)
	if withPolicy {
		y += `---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
    when:
    - key: request.auth.claims[role]
      values: ["customer"]
`
	}
	return y
}

// authCase is one request of the article and what it must get.
type authCase struct {
	what   string
	token  string
	status int
	body   string // a substring of the body
}

func bearer(token string) map[string]string {
	if token == "" {
		return nil
	}
	return map[string]string{"Authorization": "Bearer " + token}
}

var (
	// Only RequestAuthentication: a present token must verify; none passes.
	authnOnly = []authCase{
		{"tampered token", testjwt.SeedTampered, 401, "Jwt verification fails"},
		{"valid token", testjwt.SeedNoRole, 200, ""},
		{"no token", "", 200, ""},
	}
	// With the AuthorizationPolicy: the role claim decides.
	authnAndPolicy = []authCase{
		{"tampered token", testjwt.SeedTampered, 401, "Jwt verification fails"},
		{"valid token without role: customer", testjwt.SeedNoRole, 403, "RBAC: access denied"},
		{"valid token with role: customer", testjwt.SeedCustomer, 200, ""},
		{"no token", "", 403, "RBAC: access denied"},
	}
)

// expect checks every case once; get sends a request with headers.
func expect(cases []authCase, get func(hdr map[string]string) (int, string, error)) error {
	for _, c := range cases {
		code, body, err := get(bearer(c.token))
		if err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		if code != c.status || !strings.Contains(body, c.body) {
			return fmt.Errorf("%s: got %d %q, want %d %q", c.what, code, body, c.status, c.body)
		}
	}
	return nil
}

// TestSeed002AuthKubernetes: seed 002's 认证/授权 section through a real
// API server: tampered token 401 "Jwt verification fails", valid token
// without the role claim 403 "RBAC: access denied", with it 200.
func TestSeed002AuthKubernetes(t *testing.T) {
	needHarness(t)
	jwks := jwksServer(t)
	book := h.startPod(t, "default", "book-service", map[string]string{"app.kubernetes.io/name": "book-service"}, "v1")
	h.service(t, "default", "book-service", []corev1.ServicePort{httpPort("http", 8080, 8080)}, book)
	h.apply(t, `
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: book-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [book.example.com]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: book-service, namespace: default}
spec:
  hosts: [book.example.com]
  gateways: [book-gateway]
  http:
  - route:
    - destination: {host: book-service}
`)
	get := func(hdr map[string]string) (int, string, error) {
		return h.httpGet(80, "book.example.com", "/book/1", hdr)
	}
	eventually(t, "the book service served", 30*time.Second, func() error { return expect([]authCase{{"no token", "", 200, ""}}, get) })

	h.apply(t, seed002Auth(jwks, false))
	eventually(t, "RequestAuthentication enforced", 30*time.Second, func() error { return expect(authnOnly, get) })
	h.apply(t, seed002Auth(jwks, true))
	eventually(t, "AuthorizationPolicy enforced", 30*time.Second, func() error { return expect(authnAndPolicy, get) })

	h.delete(t, "security.istio.io/v1beta1", "AuthorizationPolicy", "istio-system", "require-jwt")
	h.delete(t, "security.istio.io/v1beta1", "RequestAuthentication", "istio-system", "bookjwt")
	eventually(t, "policies gone: everything passes again", 30*time.Second, func() error {
		return expect([]authCase{{"tampered token", testjwt.SeedTampered, 200, ""}, {"no token", "", 200, ""}}, get)
	})
}

// TestSeed002AuthStandalone: the same scenario with `gateway-controller
// --standalone` on a directory of the user's YAML files.
func TestSeed002AuthStandalone(t *testing.T) {
	needHarness(t) // for the built binaries
	jwks := jwksServer(t)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"bookId":1,"name":"Book 1","rating":3}`)
	}))
	defer backend.Close()
	_, backendPort, _ := net.SplitHostPort(backend.Listener.Addr().String())

	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		// Atomically, as editors do, so a half-written file is never read.
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("book.yaml", fmt.Sprintf(`
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: book-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [book.example.com]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: book-service, namespace: default}
spec:
  hosts: [book.example.com]
  gateways: [book-gateway]
  http:
  - route:
    - destination: {host: book-service.default.svc.cluster.local}
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: book-service, namespace: default}
spec:
  hosts: [book-service.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: %s}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
`, backendPort))
	port := freePort()
	admin := fmt.Sprintf("127.0.0.1:%d", freePort())
	ctrl, err := h.start("standalone-auth", h.bins["gateway-controller"], "--standalone", "--config-dir", dir,
		"--xds-address", fmt.Sprintf("127.0.0.1:%d", freePort()), "--admin-address", admin,
		"--debug-address", fmt.Sprintf("127.0.0.1:%d", freePort()), "--health-address", fmt.Sprintf("127.0.0.1:%d", freePort()),
		"--metrics-address", fmt.Sprintf("127.0.0.1:%d", freePort()), "--port-map", fmt.Sprintf("80:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.stop()
	get := func(hdr map[string]string) (int, string, error) {
		req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/book/1", port), nil)
		if err != nil {
			return 0, "", err
		}
		req.Host = "book.example.com"
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	eventually(t, "the book service served", 30*time.Second, func() error { return expect([]authCase{{"no token", "", 200, "Book 1"}}, get) })
	write("auth.yaml", seed002Auth(jwks, false))
	eventually(t, "RequestAuthentication enforced", 30*time.Second, func() error { return expect(authnOnly, get) })
	write("auth.yaml", seed002Auth(jwks, true))
	eventually(t, "AuthorizationPolicy enforced", 30*time.Second, func() error { return expect(authnAndPolicy, get) })
	// The 401 carries what Envoy sends.
	code, hdr := 0, http.Header{}
	if req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/book/1", port), nil); err == nil {
		req.Host = "book.example.com"
		req.Header.Set("Authorization", "Bearer "+testjwt.SeedTampered)
		if resp, err := httpClient.Do(req); err == nil {
			code, hdr = resp.StatusCode, resp.Header
			resp.Body.Close()
		}
	}
	if code != 401 || !strings.HasPrefix(hdr.Get("www-authenticate"), "Bearer realm=") {
		t.Errorf("tampered token: %d, www-authenticate %q", code, hdr.Get("www-authenticate"))
	}
	if err := os.Remove(filepath.Join(dir, "auth.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "policies gone: everything passes again", 30*time.Second, func() error {
		return expect([]authCase{{"tampered token", testjwt.SeedTampered, 200, "Book 1"}}, get)
	})
}
