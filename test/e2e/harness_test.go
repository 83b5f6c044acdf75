//go:build linux

// Package e2e runs Portico against a real kube-apiserver and etcd (built
// from the Go module proxy by hack/build-e2e-bins.sh and started with
// envtest), with the real gateway-controller and edge-proxy binaries and
// backend "pods": demo-backend processes in network namespaces with pod
// IPs, registered as Pods, Services and EndpointSlices the way the
// endpoints controller would. It needs root (network namespaces).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/freeport"
	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/internal/testenv"
)

const (
	bridge  = "ptico0"
	podCIDR = "10.244.0.1/16"
)

// harness is the shared environment of every e2e test.
type harness struct {
	root       string
	work       string
	assets     string // kube-apiserver and etcd
	bins       map[string]string
	env        *envtest.Environment
	cfg        *rest.Config
	kubeconfig string
	client     client.Client

	controller  *process
	proxy       *process
	xdsAddr     string
	adminAddr   string
	debugAddr   string
	healthAddr  string
	metricsAddr string
	proxyStatus string
	// ports maps Gateway ports to where the proxy binds them.
	ports map[uint32]uint32

	mu     sync.Mutex
	pods   []*pod
	nextIP int
}

var h *harness

// skipReason is why the harness could not be set up without it being a
// failure (not root); every test then skips with it, visibly, instead of
// the binary exiting 0 as if everything had passed.
var skipReason string

// needHarness skips the test, saying why, when there is no harness.
func needHarness(t *testing.T) {
	t.Helper()
	if h == nil {
		t.Skip("e2e: " + skipReason)
	}
}

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		skipReason = "network namespaces for backend pods need root (CI runs as root); run as root to run the end-to-end tests"
		os.Exit(m.Run())
	}
	var err error
	h, err = setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		if h != nil {
			h.teardown()
		}
		os.Exit(1)
	}
	code := m.Run()
	if code != 0 {
		h.dumpLogs()
	}
	h.teardown()
	os.Exit(code)
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// freePort returns a port no other test process is handed (package freeport).
func freePort() uint32 { return freeport.MustGet() }

func setup() (*harness, error) {
	root, err := filepath.Abs("../..")
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "portico-e2e-")
	if err != nil {
		return nil, err
	}
	hs := &harness{root: root, work: work, bins: map[string]string{}, ports: map[uint32]uint32{}}

	// The control plane binaries, built once and cached.
	start := time.Now()
	out, err := exec.Command(filepath.Join(root, "hack", "build-e2e-bins.sh")).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return hs, fmt.Errorf("building kube-apiserver and etcd: %v: %s", err, ee.Stderr)
		}
		return hs, err
	}
	assets := strings.TrimSpace(string(out))
	hs.assets = assets
	fmt.Printf("e2e: kube-apiserver and etcd in %s (%v)\n", assets, time.Since(start).Round(time.Second))
	for _, name := range []string{"gateway-controller", "edge-proxy", "demo-backend"} {
		path := filepath.Join(work, name)
		cmd := exec.Command("go", "build", "-o", path, "./cmd/"+name)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return hs, fmt.Errorf("building %s: %v: %s", name, err, out)
		}
		hs.bins[name] = path
	}

	// Network: a bridge for the pod range; each pod gets a namespace.
	cleanupNetwork()
	if err := run("ip", "link", "add", bridge, "type", "bridge"); err != nil {
		return hs, err
	}
	if err := run("ip", "addr", "add", podCIDR, "dev", bridge); err != nil {
		return hs, err
	}
	if err := run("ip", "link", "set", bridge, "up"); err != nil {
		return hs, err
	}

	hs.env = &envtest.Environment{
		BinaryAssetsDirectory: assets,
		// The Istio CRDs and the Gateway API bundle (testenv says which channel, and why).
		CRDDirectoryPaths:        testenv.CRDDirectories(root),
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
	}
	if hs.cfg, err = hs.env.Start(); err != nil {
		return hs, fmt.Errorf("starting kube-apiserver: %w", err)
	}
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	if hs.client, err = client.New(hs.cfg, client.Options{Scheme: scheme}); err != nil {
		return hs, err
	}
	for _, ns := range []string{"istio-system", "portico-system", "springistiodemo"} {
		if err := hs.client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return hs, err
		}
	}
	// The controller runs as config/deploy's ServiceAccount, with exactly
	// the RBAC the manifests grant: a missing permission fails the tests.
	rbac, err := os.ReadFile(filepath.Join(root, "config", "deploy", "controller", "rbac.yaml"))
	if err != nil {
		return hs, err
	}
	if err := hs.applyYAML(context.Background(), string(rbac)); err != nil {
		return hs, err
	}
	// The ingress gateway's ServiceAccount and Role, as config/deploy
	// creates them: the harness proxy authenticates as that pod would.
	gwRBAC, err := os.ReadFile(filepath.Join(root, "config", "deploy", "ingressgateway", "rbac.yaml"))
	if err != nil {
		return hs, err
	}
	if err := hs.applyYAML(context.Background(), string(gwRBAC)); err != nil {
		return hs, err
	}
	sa, err := hs.env.AddUser(envtest.User{Name: "system:serviceaccount:portico-system:portico-controller",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:portico-system", "system:authenticated"}}, nil)
	if err != nil {
		return hs, err
	}
	hs.kubeconfig = filepath.Join(hs.work, "kubeconfig")
	if err := writeKubeconfig(sa.Config(), hs.kubeconfig); err != nil {
		return hs, err
	}
	for _, p := range []uint32{80, 443, 3306, 8080} {
		hs.ports[p] = freePort()
	}
	hs.xdsAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
	hs.debugAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
	hs.adminAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
	hs.healthAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
	hs.metricsAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
	hs.proxyStatus = fmt.Sprintf("127.0.0.1:%d", freePort())
	if err := hs.startController(); err != nil {
		return hs, err
	}
	var pm []string
	for from, to := range hs.ports {
		pm = append(pm, fmt.Sprintf("%d:%d", from, to))
	}
	// The proxy authenticates as a pod of config/deploy's ingress gateway:
	// a token bound to its Pod, for audience portico, and the CA the
	// controller publishes.
	creds, err := hs.proxyCredentials(context.Background(), "istio-system", "istio-ingressgateway", "istio-ingressgateway-e2e",
		map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}, "portico")
	if err != nil {
		return hs, err
	}
	hs.proxy, err = hs.start("edge-proxy", hs.bins["edge-proxy"], "--xds-address", hs.xdsAddr, "--labels", "istio=ingressgateway",
		"--xds-ca-file", creds.caFile, "--xds-token-file", creds.tokenFile, "--xds-server-name", xdsServerName,
		"--namespace", "istio-system",
		"--node-id", "istio-ingressgateway-e2e", "--admin-address", hs.adminAddr, "--port-map", strings.Join(pm, ","), "--drain-time", "2s",
		"--status-address", hs.proxyStatus, "--termination-drain-duration", "1s")
	if err != nil {
		return hs, err
	}
	return hs, nil
}

// xdsServerName is a name of the controller's xDS certificate (its
// Service's DNS name in config/deploy).
const xdsServerName = "portico-controller.portico-system.svc"

// credentials are what a proxy pod has mounted.
type credentials struct {
	caFile, tokenFile string
	token             string
	pod               *corev1.Pod
}

// proxyCredentials registers a gateway Pod (it stays Pending: there is no
// scheduler) running as a ServiceAccount, requests a token bound to it
// for audience with the TokenRequest API (what the kubelet projects), and
// reads the CA certificate the controller publishes into the namespace.
func (hs *harness) proxyCredentials(ctx context.Context, namespace, serviceAccount, podName string, labels map[string]string, audience string) (*credentials, error) {
	cs, err := kubernetes.NewForConfig(hs.cfg)
	if err != nil {
		return nil, err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: serviceAccount}}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	pod, err := cs.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: serviceAccount, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "istio-proxy", Image: "portico/edge-proxy"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", namespace, podName, err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](2 * 3600),
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for %s/%s: %w", namespace, serviceAccount, err)
	}
	c := &credentials{pod: pod, token: tr.Status.Token,
		tokenFile: filepath.Join(hs.work, namespace+"-"+podName+".token"), caFile: filepath.Join(hs.work, namespace+"-root-cert.pem")}
	if err := os.WriteFile(c.tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		cm, err := cs.CoreV1().ConfigMaps(namespace).Get(ctx, "portico-ca-root-cert", metav1.GetOptions{})
		if err == nil && cm.Data["root-cert.pem"] != "" {
			return c, os.WriteFile(c.caFile, []byte(cm.Data["root-cert.pem"]), 0o644)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the controller did not publish its CA in %s: %v", namespace, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (hs *harness) startController() error {
	var err error
	hs.controller, err = hs.start("gateway-controller", hs.bins["gateway-controller"], "--kubeconfig", hs.kubeconfig,
		"--xds-address", hs.xdsAddr, "--debug-address", hs.debugAddr, "--health-address", hs.healthAddr, "--metrics-address", hs.metricsAddr,
		"--leader-election-namespace", "portico-system", "--log-level", "debug")
	return err
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	c := clientcmdapi.NewConfig()
	c.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	c.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	c.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e"}
	c.CurrentContext = "e2e"
	return clientcmd.WriteToFile(*c, path)
}

func cleanupNetwork() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "ptico-") {
			exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
	exec.Command("ip", "link", "del", bridge).Run()
}

func (hs *harness) teardown() {
	hs.mu.Lock()
	for _, p := range hs.pods {
		p.proc.stop()
	}
	hs.mu.Unlock()
	if hs.proxy != nil {
		hs.proxy.stop()
	}
	if theKubelet != nil {
		theKubelet.stop() // kubelet_test.go
	}
	if hs.controller != nil {
		hs.controller.stop()
	}
	if hs.env != nil {
		hs.env.Stop()
	}
	cleanupNetwork()
	if os.Getenv("PORTICO_E2E_KEEP") == "" {
		os.RemoveAll(hs.work)
	}
}

func (hs *harness) dumpLogs() {
	for _, p := range []*process{hs.controller, hs.proxy} {
		if p == nil {
			continue
		}
		b, _ := os.ReadFile(p.logPath)
		lines := strings.Split(string(b), "\n")
		if len(lines) > 80 {
			lines = lines[len(lines)-80:]
		}
		fmt.Fprintf(os.Stderr, "----- last lines of %s -----\n%s\n", p.name, strings.Join(lines, "\n"))
	}
}

// process is a child process with its output in a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func (hs *harness) start(name, bin string, args ...string) (*process, error) {
	return hs.startIn("", name, bin, args...)
}

// startIn starts a binary, in a network namespace when netns is set.
func (hs *harness) startIn(netns, name, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(hs.work, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", netns, bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

// stop interrupts the process and waits for it (killing it after 10 s).
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// kill stops the process abruptly, as a crash would.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// pod is a backend process in its own network namespace.
type pod struct {
	name, namespace, ip string
	labels              map[string]string
	proc                *process
}

// startPod runs demo-backend in a network namespace with a pod IP (HTTP on
// :8080, TCP on :3306) and registers the Pod.
func (hs *harness) startPod(t *testing.T, namespace, name string, labels map[string]string, version string) *pod {
	t.Helper()
	hs.mu.Lock()
	hs.nextIP++
	n := hs.nextIP
	hs.mu.Unlock()
	ip := fmt.Sprintf("10.244.%d.%d", n/250, n%250+10)
	ns := fmt.Sprintf("ptico-%d", n)
	veth := fmt.Sprintf("ptv%d", n)
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", veth, "master", bridge, "up"},
		{"netns", "exec", ns, "ip", "addr", "add", ip + "/16", "dev", "eth0"},
		{"netns", "exec", ns, "ip", "link", "set", "eth0", "up"},
		{"netns", "exec", ns, "ip", "link", "set", "lo", "up"},
		{"netns", "exec", ns, "ip", "route", "add", "default", "via", "10.244.0.1"},
	} {
		if err := run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	proc, err := hs.startIn(ns, "pod-"+namespace+"-"+name, hs.bins["demo-backend"], "-http", ip+":8080", "-tcp", ip+":3306", "-version", version, "-name", name, "-quiet")
	if err != nil {
		t.Fatal(err)
	}
	p := &pod{name: name, namespace: namespace, ip: ip, labels: labels, proc: proc}
	hs.mu.Lock()
	hs.pods = append(hs.pods, p)
	hs.mu.Unlock()
	eventually(t, "pod "+name+" to listen", 20*time.Second, func() error {
		c, err := net.DialTimeout("tcp", ip+":8080", 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "portico/demo-backend"}}, AutomountServiceAccountToken: ptr.To(false)},
	}
	if err := hs.client.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	return p
}

// service registers a Service for pods and the EndpointSlice the endpoints
// controller would write (there is no controller-manager here).
func (hs *harness) service(t *testing.T, namespace, name string, ports []corev1.ServicePort, pods ...*pod) {
	t.Helper()
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: ports}}
	if err := hs.client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	hs.endpoints(t, namespace, name, ports, pods...)
}

func (hs *harness) endpoints(t *testing.T, namespace, name string, ports []corev1.ServicePort, pods ...*pod) {
	t.Helper()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-e2e", Namespace: namespace, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		target := p.TargetPort.IntVal
		if target == 0 {
			target = p.Port
		}
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(target), Protocol: ptr.To(corev1.ProtocolTCP)})
	}
	for _, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: p.name, Namespace: p.namespace}})
	}
	existing := &discoveryv1.EndpointSlice{}
	err := hs.client.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: es.Name}, existing)
	switch {
	case apierrors.IsNotFound(err):
		err = hs.client.Create(context.Background(), es)
	case err == nil:
		es.ResourceVersion = existing.ResourceVersion
		err = hs.client.Update(context.Background(), es)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// apply creates or updates every object of a YAML stream, as kubectl apply.
func (hs *harness) apply(t *testing.T, yamlText string) {
	t.Helper()
	if err := hs.applyYAML(context.Background(), yamlText); err != nil {
		t.Fatal(err)
	}
}

func (hs *harness) applyYAML(ctx context.Context, yamlText string) error {
	return applyYAML(ctx, hs.client, yamlText)
}

func applyYAML(ctx context.Context, c client.Client, yamlText string) error {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(yamlText)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		// Strict, as kubectl is: a duplicated key is a mistake in the test.
		u := &unstructured.Unstructured{}
		if err := sigsyaml.UnmarshalStrict(doc, &u.Object); err != nil {
			return fmt.Errorf("applying %s: %w", doc, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if namespaced, err := c.IsObjectNamespaced(u); u.GetNamespace() == "" && (namespaced || err != nil) {
			u.SetNamespace("default")
		}
		// The controller writes status concurrently: an update based on a
		// resourceVersion it just superseded conflicts, and is retried on
		// the latest one (as kubectl apply's patch would not conflict).
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			existing := &unstructured.Unstructured{}
			existing.SetGroupVersionKind(u.GroupVersionKind())
			err := c.Get(ctx, client.ObjectKeyFromObject(u), existing)
			switch {
			case apierrors.IsNotFound(err):
				return c.Create(ctx, u)
			case err == nil:
				u.SetResourceVersion(existing.GetResourceVersion())
				return c.Update(ctx, u)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

func (hs *harness) delete(t *testing.T, apiVersion, kind, namespace, name string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(namespace)
	u.SetName(name)
	if err := hs.client.Delete(context.Background(), u); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

// istioStatus reads the status of an Istio resource.
func (hs *harness) istioStatus(t *testing.T, kind, namespace, name string) map[string]any {
	t.Helper()
	st, _ := hs.istioObject(t, kind, namespace, name).Object["status"].(map[string]any)
	return st
}

func (hs *harness) istioObject(t *testing.T, kind, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("networking.istio.io/v1")
	u.SetKind(kind)
	if err := hs.client.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: name}, u); err != nil {
		t.Fatal(err)
	}
	return u
}

// condition finds a condition in an Istio status.
func condition(st map[string]any, typ string) map[string]any {
	conds, _ := st["conditions"].([]any)
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t *testing.T, what string, timeout time.Duration, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := poll.WaitUpTo(ctx, 50*time.Millisecond, f)
	if err == nil {
		return
	}
	// What the proxy holds is usually the answer to why.
	if h != nil && h.adminAddr != "" {
		clusters, _ := h.admin("/clusters")
		t.Logf("proxy /clusters:\n%s", clusters)
		for _, path := range []string{"/debug/status", "/debug/ir"} {
			if resp, err := http.Get("http://" + h.debugAddr + path); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Logf("controller %s:\n%s", path, b)
			}
		}
	}
	t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
}

// httpGet sends a request through the proxy's port for a Gateway port.
func (hs *harness) httpGet(gatewayPort uint32, host, path string, hdr map[string]string) (int, string, error) {
	req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", hs.ports[gatewayPort], path), nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
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

var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// tcpGreeting connects to a Gateway TCP port and reads the banner.
func (hs *harness) tcpGreeting(gatewayPort uint32) (string, error) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", hs.ports[gatewayPort]), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(c).ReadString('\n')
}

// admin fetches a proxy admin path.
func (hs *harness) admin(path string) (string, error) {
	resp, err := http.Get("http://" + hs.adminAddr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return b.String(), nil
}
