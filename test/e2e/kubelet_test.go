//go:build linux

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
	"k8s.io/utils/ptr"
)

// kubelet is the part of a kubelet the API server calls for
// `kubectl port-forward`: GET /portForward/{namespace}/{pod} on the node's
// kubelet endpoint, upgraded to SPDY (protocol portforward.k8s.io), one
// pair of streams (error, data) per forwarded connection, each naming the
// pod's port. A real kubelet dials that port inside the pod's network
// namespace; the harness's "pods" are processes on the host, so each
// registered pod port maps to the address that process listens on.
//
// The API server reaches it because a Node names it (InternalIP and
// status.daemonEndpoints.kubeletEndpoint.port) and the pod is bound to
// that Node; it connects over TLS without verifying the certificate, as it
// does with any kubelet when --kubelet-certificate-authority is unset.
type kubelet struct {
	node string
	srv  *http.Server

	mu    sync.Mutex
	ports map[string]map[int32]string // "namespace/pod" → pod port → host address
}

const kubeletNode = "portico-e2e-node"

var (
	kubeletOnce sync.Once
	kubeletErr  error
	theKubelet  *kubelet
)

// startKubelet serves the port-forward API for the run (once) and
// registers its Node.
func (hs *harness) startKubelet(t *testing.T) *kubelet {
	t.Helper()
	kubeletOnce.Do(func() { theKubelet, kubeletErr = hs.newKubelet() })
	if kubeletErr != nil {
		t.Fatalf("starting the harness kubelet: %v", kubeletErr)
	}
	return theKubelet
}

func (hs *harness) newKubelet() (*kubelet, error) {
	cert, err := kubeletCert()
	if err != nil {
		return nil, err
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	k := &kubelet{node: kubeletNode, ports: map[string]map[int32]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/portForward/{namespace}/{pod}", k.servePortForward)
	// SPDY upgrades need HTTP/1.1: no HTTP/2 on this server.
	k.srv = &http.Server{Handler: mux, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}, ReadHeaderTimeout: 10 * time.Second}
	go k.srv.Serve(lis) // stopped at teardown (the listener closes with it)
	port := lis.Addr().(*net.TCPAddr).Port

	cs, err := kubernetes.NewForConfig(hs.cfg)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: kubeletNode, Labels: map[string]string{"kubernetes.io/hostname": kubeletNode}}}
	node, err = cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("registering node %s: %w", kubeletNode, err)
	}
	node.Status = corev1.NodeStatus{
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(port)}},
		Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("node %s status: %w", kubeletNode, err)
	}
	return k, nil
}

func (k *kubelet) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k.srv.Shutdown(ctx)
	k.srv.Close() // hijacked (upgraded) connections are not closed by Shutdown
}

// runPod makes a registered pod (existing or created here) run on the
// harness node: bound to it (the Binding a scheduler would post), Running
// and Ready, with ports served by the given host addresses.
func (hs *harness) runPod(t *testing.T, k *kubelet, namespace, name string, labels map[string]string, ports map[int32]string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(hs.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		p, err = cs.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
			Spec:       corev1.PodSpec{AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "main", Image: "portico/" + name}}},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("pod %s/%s: %v", namespace, name, err)
	}
	if p.Spec.NodeName == "" {
		err := cs.CoreV1().Pods(namespace).Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
			Target: corev1.ObjectReference{Kind: "Node", Name: k.node}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("binding pod %s/%s to %s: %v", namespace, name, k.node, err)
		}
	}
	if p, err = cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.HostIP, p.Status.PodIP = "127.0.0.1", "127.0.0.1"
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	if _, err := cs.CoreV1().Pods(namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pod %s/%s status: %v", namespace, name, err)
	}
	k.mu.Lock()
	k.ports[namespace+"/"+name] = ports
	k.mu.Unlock()
}

// target is where a pod's port is served, or an error as a kubelet words it.
func (k *kubelet) target(namespace, pod string, port int32) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ports, ok := k.ports[namespace+"/"+pod]
	if !ok {
		return "", fmt.Errorf("pod %s/%s not found on this node", namespace, pod)
	}
	addr, ok := ports[port]
	if !ok {
		return "", fmt.Errorf("failed to connect to localhost:%d inside namespace of pod %s/%s: connection refused", port, namespace, pod)
	}
	return addr, nil
}

// servePortForward is the kubelet's port-forward endpoint.
func (k *kubelet) servePortForward(w http.ResponseWriter, r *http.Request) {
	namespace, pod := r.PathValue("namespace"), r.PathValue("pod")
	if _, err := httpstream.Handshake(r, w, []string{"portforward.k8s.io"}); err != nil {
		return // Handshake answered
	}
	streams := make(chan httpstream.Stream, 4)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
		h := s.Headers()
		if p, err := strconv.ParseUint(h.Get(corev1.PortHeader), 10, 16); err != nil || p == 0 {
			return fmt.Errorf("%s header %q: want a port", corev1.PortHeader, h.Get(corev1.PortHeader))
		}
		if typ := h.Get(corev1.StreamType); typ != corev1.StreamTypeData && typ != corev1.StreamTypeError {
			return fmt.Errorf("%s header %q: want data or error", corev1.StreamType, typ)
		}
		streams <- s
		return nil
	})
	if conn == nil {
		return
	}
	defer conn.Close()
	conn.SetIdleTimeout(4 * time.Hour)
	pairs := map[string]*streamPair{}
	for {
		select {
		case <-conn.CloseChan():
			return
		case s := <-streams:
			id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
			p := pairs[id]
			if p == nil {
				p = &streamPair{}
				pairs[id] = p
			}
			if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeData {
				p.data = s
			} else {
				p.errs = s
			}
			if p.data != nil && p.errs != nil {
				delete(pairs, id)
				go k.forward(conn, namespace, pod, p) // ends with the forwarded connection
			}
		}
	}
}

type streamPair struct{ data, errs httpstream.Stream }

// forward connects one stream pair to the pod's port: bytes both ways,
// half-closes passed on; a failure is written to the error stream, which
// the client reports.
func (k *kubelet) forward(conn httpstream.Connection, namespace, pod string, p *streamPair) {
	defer conn.RemoveStreams(p.data, p.errs)
	defer p.errs.Close()
	defer p.data.Close()
	port, _ := strconv.ParseInt(p.data.Headers().Get(corev1.PortHeader), 10, 32)
	addr, err := k.target(namespace, pod, int32(port))
	var c net.Conn
	if err == nil {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		fmt.Fprintf(p.errs, "error forwarding port %d to pod %s/%s: %v", port, namespace, pod, err)
		return
	}
	defer c.Close()
	up := make(chan struct{})
	go func() {
		io.Copy(c, p.data)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		close(up)
	}()
	if _, err := io.Copy(p.data, c); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		fmt.Fprintf(p.errs, "error copying from pod %s/%s port %d: %v", namespace, pod, port, err)
	}
	p.data.Close()
	select {
	case <-up:
	case <-time.After(10 * time.Second):
	}
}

// kubeletCert is a self-signed serving certificate for 127.0.0.1.
func kubeletCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: kubeletNode},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{kubeletNode},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
