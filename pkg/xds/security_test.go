package xds_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/xds"
	"github.com/portico-gateway/portico/pkg/xds/auth"
	"github.com/portico-gateway/portico/pkg/xds/ca"
)

var egress = map[string]string{"istio": "egressgateway"}

// tokens stands in for the API server's TokenReview (the e2e tests use
// the real one): token → identity.
var tokens = map[string]auth.Identity{
	"tok-ingress":    {Namespace: "istio-system", ServiceAccount: "ingress", PodName: "ingress-1", PodUID: "uid-ingress-1", Method: "kubernetes"},
	"tok-egress":     {Namespace: "istio-system", ServiceAccount: "egress", PodName: "egress-1", PodUID: "uid-egress-1", Method: "kubernetes"},
	"tok-nosecrets":  {Namespace: "istio-system", ServiceAccount: "nosecrets", PodName: "plain-1", PodUID: "uid-plain-1", Method: "kubernetes"},
	"tok-other-ns":   {Namespace: "other", ServiceAccount: "ingress", PodName: "ingress-1", PodUID: "uid-other-1", Method: "kubernetes"},
	"tok-unbound":    {Namespace: "istio-system", ServiceAccount: "ingress", Method: "kubernetes"},
	"tok-stale-pod":  {Namespace: "istio-system", ServiceAccount: "ingress", PodName: "ingress-1", PodUID: "uid-of-a-deleted-pod", Method: "kubernetes"},
	"tok-wrong-sa":   {Namespace: "istio-system", ServiceAccount: "egress", PodName: "ingress-1", PodUID: "uid-ingress-1", Method: "kubernetes"},
	"tok-other-pods": {Namespace: "istio-system", ServiceAccount: "ingress", PodName: "no-such-pod", Method: "kubernetes"},
}

var fakeTokenReview = auth.AuthenticatorFunc(func(ctx context.Context) (auth.Identity, error) {
	tok, err := auth.BearerToken(ctx)
	if err != nil {
		return auth.Identity{}, err
	}
	id, ok := tokens[tok]
	if !ok {
		return auth.Identity{}, errors.New("the token was not authenticated")
	}
	return id, nil
})

func pod(ns, name, uid, sa string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: sa}}
}

// kubeClient holds the proxies' pods; service accounts ingress and egress
// may read Secrets in istio-system (the Role Istio's gateway charts
// create), nosecrets may not.
func kubeClient() *fake.Clientset {
	cs := fake.NewClientset(
		pod("istio-system", "ingress-1", "uid-ingress-1", "ingress", map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway", "pod-template-hash": "x"}),
		pod("istio-system", "egress-1", "uid-egress-1", "egress", egress),
		pod("istio-system", "plain-1", "uid-plain-1", "nosecrets", map[string]string{"istio": "ingressgateway"}),
		pod("other", "ingress-1", "uid-other-1", "ingress", map[string]string{"istio": "ingressgateway"}),
	)
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		ra := sar.Spec.ResourceAttributes
		sar.Status.Allowed = ra.Resource == "secrets" && ra.Verb == "list" && ra.Namespace == "istio-system" &&
			(sar.Spec.User == "system:serviceaccount:istio-system:ingress" || sar.Spec.User == "system:serviceaccount:istio-system:egress")
		return true, sar, nil
	})
	return cs
}

func secret(name string, withKey bool) *tlsv3.Secret {
	if !withKey {
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("CA of " + name)}}}}}
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("cert of " + name)}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("PRIVATE KEY of " + name)}}}}}
}

// secureServer serves xDS over TLS with the fake TokenReview and the real
// Kubernetes authorizer; the ingress class's secrets come from Secrets in
// istio-system, the egress class's too.
func secureServer(t *testing.T) (*xds.Server, string, *ca.Authority) {
	t.Helper()
	authority, err := ca.New("test-ca", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := authority.Issue([]string{"xds.portico.test"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := xds.NewServer(logr.Discard(), gateway.ClassName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- srv.ServeWith(ctx, lis, xds.ServeOptions{
			TLS:           &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12},
			Authenticator: fakeTokenReview,
			Authorizer:    auth.NewKubeAuthorizer(kubeClient()),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	publish := func(class map[string]string, name string) {
		res := translateSeed(t, nil)
		res.Secrets = append(slices.Clone(res.Secrets), secret("kubernetes://"+name, true), secret("kubernetes://"+name+"-cacert", false))
		srv.SetSecretOrigins(gateway.ClassName(class), xds.SecretOrigins{"kubernetes://" + name: {"istio-system"}, "kubernetes://" + name + "-cacert": {"istio-system"}})
		if _, err := srv.Publish(t.Context(), gateway.ClassName(class), res); err != nil {
			t.Fatal(err)
		}
	}
	publish(ingress, "ingress-cert")
	publish(egress, "egress-cert")
	return srv, lis.Addr().String(), authority
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

func dial(t *testing.T, addr string, authority *ca.Authority, token string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: authority.Pool(), ServerName: "xds.portico.test"}))}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func nodeIn(id, namespace string, labels map[string]string) *corev3.Node {
	n := node(id, labels)
	if labels == nil {
		md, _ := structpb.NewStruct(map[string]any{})
		n.Metadata = md
	}
	if namespace != "" {
		n.Metadata.Fields[xds.MetadataNamespace] = structpb.NewStringValue(namespace)
	}
	return n
}

// askSecrets opens a delta stream as n, subscribes to secret names and
// returns the first response (or the stream's error).
func askSecrets(t *testing.T, conn *grpc.ClientConn, n *corev3.Node, names ...string) (*discoveryv3.DeltaDiscoveryResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	// A refused stream fails Send with io.EOF; Recv has the status.
	stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: n, TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: names})
	return stream.Recv()
}

func secretNames(r *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	slices.Sort(out)
	return out
}

func TestXDSRefusesWhatAProxyMayNotHave(t *testing.T) {
	srv, addr, authority := secureServer(t)
	// Every proxy may have the seed's file certificate (a path on its own
	// filesystem): it is asked for too, so every allowed stream answers.
	var fileCert string
	for _, s := range translateSeed(t, nil).Secrets {
		if strings.HasPrefix(s.Name, "file-cert:") {
			fileCert = s.Name
		}
	}
	all := []string{fileCert, "kubernetes://ingress-cert", "kubernetes://ingress-cert-cacert", "kubernetes://egress-cert", "kubernetes://egress-cert-cacert"}
	for _, tc := range []struct {
		name   string
		token  string
		node   *corev3.Node
		code   codes.Code // refused with this code, or
		secret []string   // these secrets of `all` are received
	}{
		{name: "the ingress proxy gets its own secrets", token: "tok-ingress",
			node: nodeIn("ingress-1", "istio-system", ingress), secret: []string{"kubernetes://ingress-cert", "kubernetes://ingress-cert-cacert"}},
		{name: "class A (egress) asking for class B's (ingress) secrets gets only its own", token: "tok-egress",
			node: nodeIn("egress-1", "istio-system", egress), secret: []string{"kubernetes://egress-cert", "kubernetes://egress-cert-cacert"}},
		{name: "egress claiming the ingress proxy's node id still gets only its own", token: "tok-egress",
			node: nodeIn("ingress-1", "istio-system", egress), secret: []string{"kubernetes://egress-cert", "kubernetes://egress-cert-cacert"}},
		{name: "a service account that may not read Secrets gets CA certificates only", token: "tok-nosecrets",
			node: nodeIn("plain-1", "istio-system", ingress), secret: []string{"kubernetes://ingress-cert-cacert"}},
		{name: "a proxy of another namespace, same class, gets none of istio-system's Secrets", token: "tok-other-ns",
			node: nodeIn("ingress-1", "other", ingress), secret: nil},
		{name: "no token", token: "", node: nodeIn("ingress-1", "istio-system", ingress), code: codes.Unauthenticated},
		{name: "unknown token", token: "forged", node: nodeIn("ingress-1", "istio-system", ingress), code: codes.Unauthenticated},
		{name: "another namespace's token claiming istio-system", token: "tok-other-ns",
			node: nodeIn("ingress-1", "istio-system", ingress), code: codes.PermissionDenied},
		{name: "egress claiming the ingress labels", token: "tok-egress",
			node: nodeIn("egress-1", "istio-system", ingress), code: codes.PermissionDenied},
		{name: "claiming one label too many", token: "tok-ingress",
			node: nodeIn("ingress-1", "istio-system", map[string]string{"istio": "ingressgateway", "role": "admin"}), code: codes.PermissionDenied},
		{name: "a token bound to no pod", token: "tok-unbound", node: nodeIn("x", "istio-system", ingress), code: codes.PermissionDenied},
		{name: "a token of a pod that was replaced", token: "tok-stale-pod", node: nodeIn("x", "istio-system", ingress), code: codes.PermissionDenied},
		{name: "a token whose pod runs as another service account", token: "tok-wrong-sa", node: nodeIn("x", "istio-system", ingress), code: codes.PermissionDenied},
		{name: "a token naming a pod that does not exist", token: "tok-other-pods", node: nodeIn("x", "istio-system", ingress), code: codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := askSecrets(t, dial(t, addr, authority, tc.token), tc.node, all...)
			if tc.code != codes.OK {
				if status.Code(err) != tc.code {
					t.Fatalf("want %v, got response %v, error %v", tc.code, secretNames(r), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := secretNames(r), append([]string{fileCert}, tc.secret...); !slices.Equal(got, want) {
				t.Fatalf("received secrets %v, want %v", got, tc.secret)
			}
		})
	}

	waitFor(t, "proxies to leave", func() bool { return len(srv.Nodes()) == 0 })

	// Without LABELS, a proxy is served for its pod's labels.
	stream := openDelta(t, dial(t, addr, authority, "tok-ingress"))
	if err := stream.Send(deltaReq(nodeIn("ingress-1", "istio-system", nil), resourcev3.ListenerType, "")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the proxy registered with its pod's labels", func() bool {
		n, ok := nodeState(srv, "ingress-1")
		return ok && n.Class == "app=istio-ingressgateway,istio=ingressgateway,pod-template-hash=x"
	})
}

// TestXDSValidProxyGetsItsConfig: an authorized proxy over TLS with its
// token gets listeners and clusters of its class, and /debug/proxies says
// who it is.
func TestXDSValidProxyGetsItsConfig(t *testing.T) {
	srv, addr, authority := secureServer(t)
	conn := dial(t, addr, authority, "tok-ingress")
	stream := openDelta(t, conn)
	if err := stream.Send(deltaReq(nodeIn("ingress-1", "istio-system", ingress), resourcev3.ListenerType, "")); err != nil {
		t.Fatal(err)
	}
	r := recvDelta(t, stream)
	if len(r.Resources) != 3 {
		t.Fatalf("got %d listeners", len(r.Resources))
	}
	n, ok := nodeState(srv, "ingress-1")
	if !ok || n.Class != gateway.ClassName(ingress) || n.Namespace != "istio-system" || !strings.Contains(n.Identity, "system:serviceaccount:istio-system:ingress") {
		t.Fatalf("registry: %+v", n)
	}
	ps := srv.ProxyStatus()
	if len(ps) != 1 || ps[0].Namespace != "istio-system" || !strings.Contains(ps[0].Identity, "pod istio-system/ingress-1") {
		t.Fatalf("proxy-status: %+v", ps)
	}
}

// TestXDSTransportAndFetch: a plaintext client cannot talk to the TLS
// port; a unary fetch (whose every request names a node of its choosing)
// is refused to an authenticated but untrusted proxy.
func TestXDSTransportAndFetch(t *testing.T) {
	_, addr, authority := secureServer(t)
	plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := askSecrets(t, plain, nodeIn("ingress-1", "istio-system", ingress), "kubernetes://ingress-cert"); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext to the TLS port: %v", err)
	}
	conn := dial(t, addr, authority, "tok-ingress")
	_, err = secretservice.NewSecretDiscoveryServiceClient(conn).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{
		Node: nodeIn("ingress-1", "istio-system", ingress), TypeUrl: resourcev3.SecretType, ResourceNames: []string{"kubernetes://ingress-cert"}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("unary fetch: %v", err)
	}
}

// TestSecretOriginsDecideWhoGetsASecret: the same class snapshot, served
// to a proxy in istio-system, holds a Secret read from istio-system; when
// the configuration reads it from another namespace instead, that proxy
// stops receiving it.
func TestSecretOriginsDecideWhoGetsASecret(t *testing.T) {
	srv, addr, authority := secureServer(t)
	conn := dial(t, addr, authority, "tok-ingress")
	stream := openDelta(t, conn)
	req := deltaReq(nodeIn("ingress-1", "istio-system", ingress), resourcev3.SecretType, "")
	req.ResourceNamesSubscribe = []string{"kubernetes://ingress-cert"}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	r := recvDelta(t, stream)
	if got := secretNames(r); !slices.Equal(got, []string{"kubernetes://ingress-cert"}) {
		t.Fatalf("got %v", got)
	}
	if err := stream.Send(deltaReq(nil, resourcev3.SecretType, r.Nonce)); err != nil {
		t.Fatal(err)
	}
	res := translateSeed(t, nil)
	res.Secrets = append(slices.Clone(res.Secrets), secret("kubernetes://ingress-cert", true), secret("kubernetes://ingress-cert-cacert", false))
	srv.SetSecretOrigins(gateway.ClassName(ingress), xds.SecretOrigins{"kubernetes://ingress-cert": {"default"}, "kubernetes://ingress-cert-cacert": {"istio-system"}})
	if _, err := srv.Publish(t.Context(), gateway.ClassName(ingress), res); err != nil {
		t.Fatal(err)
	}
	r = recvDelta(t, stream)
	if !slices.Equal(r.RemovedResources, []string{"kubernetes://ingress-cert"}) || len(r.Resources) != 0 {
		t.Fatalf("the secret must be withdrawn: removed %v, sent %v", r.RemovedResources, secretNames(r))
	}
}

// TestXDSNodeIDTakeoverOverSotW: a proxy that claims, as its node id,
// the very cache key of a connected proxy of another class (namespace/
// pod/id) still gets only its own configuration, over state of the world
// as over delta: it is answered for exactly its own secrets, which only
// its own view has (a state-of-the-world ADS watch whose names differ from
// the snapshot's stays open).
func TestXDSNodeIDTakeoverOverSotW(t *testing.T) {
	_, addr, authority := secureServer(t)
	victim := openDelta(t, dial(t, addr, authority, "tok-ingress"))
	req := deltaReq(nodeIn("ingress-1", "istio-system", ingress), resourcev3.SecretType, "")
	req.ResourceNamesSubscribe = []string{"kubernetes://ingress-cert"}
	if err := victim.Send(req); err != nil {
		t.Fatal(err)
	}
	if got := secretNames(recvDelta(t, victim)); !slices.Equal(got, []string{"kubernetes://ingress-cert"}) {
		t.Fatalf("the victim got %v", got)
	}
	// go-control-plane answers a state-of-the-world ADS request only when it
	// names every secret of the proxy's snapshot: its own three.
	var own []string
	for _, s := range translateSeed(t, nil).Secrets {
		own = append(own, s.Name)
	}
	own = append(own, "kubernetes://egress-cert", "kubernetes://egress-cert-cacert")
	slices.Sort(own)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, addr, authority, "tok-egress")).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: nodeIn("istio-system/ingress-1/ingress-1", "istio-system", egress),
		TypeUrl: resourcev3.SecretType, ResourceNames: own}); err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   *discoveryv3.DiscoveryResponse
		err error
	}
	ch := make(chan result, 1)
	go func() { r, err := stream.Recv(); ch <- result{r, err} }()
	var res result
	select {
	case res = <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no response")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	var names []string
	for _, a := range res.r.Resources {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		names = append(names, s.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, own) {
		t.Fatalf("the impostor got %v", names)
	}
}
