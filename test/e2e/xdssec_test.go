//go:build linux

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portico-gateway/portico/internal/testpki"
)

type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerToken) RequireTransportSecurity() bool { return true }

// xdsConn dials the controller's xDS port over TLS, verified with the CA
// it published, with a token (or none).
func xdsConn(t *testing.T, caFile, token string) *grpc.ClientConn {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no CA certificate")
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{RootCAs: pool, ServerName: xdsServerName}))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(token)))
	}
	conn, err := grpc.NewClient(h.xdsAddr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func xdsNode(id, namespace string, labels map[string]string) *corev3.Node {
	l := map[string]any{}
	for k, v := range labels {
		l[k] = v
	}
	md, _ := structpb.NewStruct(map[string]any{"LABELS": l, "NAMESPACE": namespace})
	return &corev3.Node{Id: id, Metadata: md}
}

// secretsFor opens a delta stream as node and subscribes to secret names;
// it returns what the first response carried (name → has a private key)
// or the stream's error.
func secretsFor(t *testing.T, conn *grpc.ClientConn, node *corev3.Node, names ...string) (map[string]bool, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: names})
	r, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, res := range r.GetResources() {
		var s tlsv3.Secret
		if err := res.GetResource().UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		out[res.GetName()] = len(s.GetTlsCertificate().GetPrivateKey().GetInlineBytes()) > 0
	}
	return out, nil
}

// TestXDSSecurityWithRealTokenReview: against the real API server's
// TokenReview and TokenRequest, and the controller's published CA, a
// gateway proxy authenticated with its pod's projected token receives its
// namespace's credentialName Secret with the private key; a proxy of the
// same class in another namespace gets only its own namespace's; a client
// without a token, with a token for another audience, claiming another
// namespace or labels its pod lacks, gets nothing at all.
func TestXDSSecurityWithRealTokenReview(t *testing.T) {
	ctx := t.Context()
	class := map[string]string{"istio": "authtest"}
	h.apply(t, `
apiVersion: v1
kind: Namespace
metadata: {name: intruder}
`)
	// Two Gateways select the class, each with a credentialName Secret in
	// its own namespace; both service accounts may read Secrets in their
	// namespace (Istio's rule for receiving private keys).
	for ns, cert := range map[string]string{"istio-system": "authtest-cert", "intruder": "intruder-cert"} {
		h.apply(t, fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: %[4]s, namespace: %[1]s}
type: kubernetes.io/tls
data: {tls.crt: %[2]s, tls.key: %[3]s}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: authtest, namespace: %[1]s}
spec:
  selector: {istio: authtest}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [%[1]s.authtest.example.com]
    tls: {mode: SIMPLE, credentialName: %[4]s}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: authtest-sds, namespace: %[1]s}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get, watch, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: authtest-sds, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: authtest-sds}
subjects: [{kind: ServiceAccount, name: authtest, namespace: %[1]s}]
`, ns, b64(testpki.Read("server.crt")), b64(testpki.Read("server.key")), cert))
	}
	legit, err := h.proxyCredentials(ctx, "istio-system", "authtest", "authtest-legit", class, "portico")
	if err != nil {
		t.Fatal(err)
	}
	intruder, err := h.proxyCredentials(ctx, "intruder", "authtest", "authtest-intruder", class, "portico")
	if err != nil {
		t.Fatal(err)
	}
	wrongAudience, err := h.proxyCredentials(ctx, "istio-system", "authtest", "authtest-wrong-audience", class, "istio-ca")
	if err != nil {
		t.Fatal(err)
	}
	both := []string{"kubernetes://authtest-cert", "kubernetes://intruder-cert"}

	// The legitimate proxy gets its namespace's Secret, private key
	// included (eventually: the controller binds the new Gateways first).
	eventually(t, "the gateway proxy to receive its certificate", 30*time.Second, func() error {
		got, err := secretsFor(t, xdsConn(t, legit.caFile, legit.token), xdsNode("authtest-legit", "istio-system", class), both...)
		if err != nil {
			return err
		}
		if !got["kubernetes://authtest-cert"] || len(got) != 1 {
			return fmt.Errorf("received %v, want authtest-cert with its key and not intruder's", got)
		}
		return nil
	})

	// Every refusal, by the real TokenReview and the authorizer.
	for _, tc := range []struct {
		name  string
		token string
		node  *corev3.Node
		code  codes.Code
	}{
		{"no token", "", xdsNode("x", "istio-system", class), codes.Unauthenticated},
		{"a forged token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", xdsNode("x", "istio-system", class), codes.Unauthenticated},
		{"a token for another audience", wrongAudience.token, xdsNode("x", "istio-system", class), codes.Unauthenticated},
		{"another namespace's token claiming istio-system", intruder.token, xdsNode("x", "istio-system", class), codes.PermissionDenied},
		{"labels the pod does not have", legit.token, xdsNode("x", "istio-system", map[string]string{"istio": "ingressgateway"}), codes.PermissionDenied},
	} {
		got, err := secretsFor(t, xdsConn(t, legit.caFile, tc.token), tc.node, both...)
		if status.Code(err) != tc.code {
			t.Errorf("%s: want %v, got %v %v", tc.name, tc.code, got, err)
		}
	}

	// The proxy of the same class in another namespace: its token is good,
	// it gets its own namespace's Secret, and none of istio-system's.
	got, err := secretsFor(t, xdsConn(t, intruder.caFile, intruder.token), xdsNode("authtest-intruder", "intruder", class), both...)
	if err != nil || !got["kubernetes://intruder-cert"] || len(got) != 1 {
		t.Errorf("a proxy in namespace intruder: received %v (%v), want only intruder-cert", got, err)
	}
	// The controller logged every refusal at error level.
	b, _ := os.ReadFile(h.controller.logPath)
	for _, want := range []string{"not authenticated", "not authorized"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the controller log does not mention %q", want)
		}
	}
	if !slices.ContainsFunc(strings.Split(string(b), "\n"), func(l string) bool {
		return strings.Contains(l, "ERROR") && strings.Contains(l, "claims labels")
	}) {
		t.Error("a proxy claiming labels its pod lacks is not logged at ERROR with the reason")
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
