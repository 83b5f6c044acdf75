//go:build linux

// Package cluster starts the container-free Kubernetes cluster the
// Gateway API conformance suite runs against, inside the network
// namespace the caller runs in (the test re-executes itself in one of
// its own: see the test's TestMain):
//
//   - etcd and kube-apiserver (envtest, with the Istio and Gateway API
//     CRDs), advertising the bridge address;
//   - kube-controller-manager (deployments, replica sets, endpoint
//     slices, garbage collection, namespaces, node lifecycle) and
//     kube-scheduler, built from k8s.io/kubernetes by
//     hack/build-conformance-bins.sh;
//   - the node agent (package nodeagent) and the load balancer (package
//     loadbalancer), in this process;
//   - Portico's gateway-controller in Kubernetes mode, as
//     config/deploy runs it (its ServiceAccount and RBAC), with xDS on
//     the bridge address, which pods reach as
//     portico-controller.portico-system.svc (their /etc/hosts).
//
// Stop undoes all of it, and is safe after a partial Start.
package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/test/conformance/loadbalancer"
	"github.com/portico-gateway/portico/test/conformance/nodeagent"
)

// Network layout inside the cluster's network namespace.
const (
	Bridge      = "pconf0"
	BridgeIP    = "10.250.0.1"
	PrefixLen   = 16
	PodIPPrefix = "10.250."
	LBFirst     = "10.250.255.1"
	LBLast      = "10.250.255.254"
	// NetNSPrefix names every network namespace the harness creates: the
	// cluster's (made by the caller) and, with PodNetNSPrefix, the pods'.
	NetNSPrefix    = "pconf-"
	PodNetNSPrefix = NetNSPrefix + "pod-"
	NodeName       = "portico-node"
	// ServiceCIDR is the API server's service range (unroutable: no
	// kube-proxy; nothing in the suite's data path needs it).
	ServiceCIDR = "10.96.0.0/16"
	xdsPort     = "15010"

	// ProxyImage is what Portico's provisioner puts in proxy pods.
	ProxyImage = "ghcr.io/portico-gateway/portico"
	// EchoImage is the conformance backends' image.
	EchoImage = "registry.k8s.io/gateway-api/echo-basic"
	// CoreDNSImage is run by the base manifests for UDP tests.
	CoreDNSImage = "registry.k8s.io/coredns/coredns"
)

// Options configures Start.
type Options struct {
	// Root is the repository checkout; Bins the directory
	// hack/build-conformance-bins.sh printed.
	Root, Bins string
	// Work is a scratch directory (logs, images, pod roots).
	Work string
	Log  logr.Logger
}

// Cluster is a running cluster.
type Cluster struct {
	opts   Options
	env    *envtest.Environment
	Config *rest.Config // cluster admin
	Client client.Client
	// Kubeconfig is the admin's.
	Kubeconfig string
	Agent      *nodeagent.Agent

	cancel context.CancelFunc
	wg     sync.WaitGroup
	procs  []*process
}

// Start brings the cluster up; on error the caller still calls Stop.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	c := &Cluster{opts: opts}
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	log := opts.Log

	// Images: directories of static binaries.
	images, err := c.buildImages(ctx)
	if err != nil {
		return c, err
	}

	// The bridge pods attach to.
	nodeagent.CleanupNetNS(PodNetNSPrefix)
	exec.Command("ip", "link", "del", Bridge).Run()
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", Bridge, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", BridgeIP, PrefixLen), "dev", Bridge},
		{"link", "set", Bridge, "up"},
	} {
		if err := ipCmd(args...); err != nil {
			return c, err
		}
	}

	// API server and etcd.
	c.env = &envtest.Environment{
		BinaryAssetsDirectory:    opts.Bins,
		CRDDirectoryPaths:        testenv.CRDDirectories(opts.Root),
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	api := c.env.ControlPlane.GetAPIServer()
	api.Configure().Set("advertise-address", BridgeIP).Set("service-cluster-ip-range", ServiceCIDR).
		// The node agent's kubelet API (logs) is on its InternalIP; its
		// Hostname address resolves nowhere in the harness's namespace.
		Set("kubelet-preferred-address-types", "InternalIP")
	start := time.Now()
	if c.Config, err = c.env.Start(); err != nil {
		return c, fmt.Errorf("starting etcd and kube-apiserver: %w", err)
	}
	log.Info("kube-apiserver up", "took", time.Since(start).Round(time.Millisecond).String())
	admin, err := c.env.AddUser(envtest.User{Name: "conformance-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return c, err
	}
	c.Config = admin.Config()
	c.Config.QPS, c.Config.Burst = 200, 400
	c.Kubeconfig = filepath.Join(opts.Work, "admin.kubeconfig")
	if err := writeKubeconfig(c.Config, c.Kubeconfig); err != nil {
		return c, err
	}
	if c.Client, err = client.New(c.Config, client.Options{}); err != nil {
		return c, err
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return c, err
	}

	// Controller manager and scheduler.
	certDir := api.CertDir
	if _, err := c.start(runCtx, "kube-controller-manager", filepath.Join(opts.Bins, "kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--controllers=*,node-lifecycle-controller",
		"--service-account-private-key-file="+filepath.Join(certDir, "sa-signer.key"),
		"--root-ca-file="+filepath.Join(certDir, "apiserver.crt"),
		"--service-cluster-ip-range="+ServiceCIDR,
		"--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10", "--concurrent-service-endpoint-syncs=10",
		"--kube-api-qps=200", "--kube-api-burst=400",
		"--node-monitor-grace-period=1h", // the agent's lease keeps it alive; never evict pods in a test run
	); err != nil {
		return c, err
	}
	if _, err := c.start(runCtx, "kube-scheduler", filepath.Join(opts.Bins, "kube-scheduler"),
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--secure-port=0", "--kube-api-qps=200", "--kube-api-burst=400"); err != nil {
		return c, err
	}

	// The node agent and the load balancer.
	c.Agent = nodeagent.New(nodeagent.Config{
		NodeName: NodeName, Client: cs, Log: log.WithName("nodeagent"), Work: opts.Work,
		Bridge: Bridge, BridgeIP: BridgeIP, PodIPPrefix: PodIPPrefix, PrefixLen: PrefixLen,
		NetNSPrefix: PodNetNSPrefix, VethPrefix: "pcv",
		Images: images,
		Hosts:  map[string]string{"portico-controller.portico-system.svc": BridgeIP, "portico-controller.portico-system.svc.cluster.local": BridgeIP},
	})
	agentReady := make(chan struct{})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.Agent.Run(runCtx, agentReady); err != nil && runCtx.Err() == nil {
			log.Error(err, "node agent stopped")
		}
	}()
	select {
	case <-agentReady:
	case <-time.After(time.Minute):
		return c, errors.New("the node agent did not register its node within a minute")
	case <-ctx.Done():
		return c, ctx.Err()
	}
	lb := loadbalancer.New(loadbalancer.Config{Client: cs, Log: log.WithName("loadbalancer"), Pods: c.Agent,
		First: netip.MustParseAddr(LBFirst), Last: netip.MustParseAddr(LBLast), PrefixLen: PrefixLen, Bridge: Bridge})
	c.wg.Add(1)
	go func() { defer c.wg.Done(); lb.Run(runCtx) }()

	// Portico's controller, with config/deploy's ServiceAccount and RBAC.
	if err := c.startPortico(runCtx, images[ProxyImage].Dir); err != nil {
		return c, err
	}

	// The node is schedulable once the node lifecycle controller has
	// removed the not-ready taint the API server put on it.
	deadline := time.Now().Add(time.Minute)
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err == nil && len(n.Spec.Taints) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return c, fmt.Errorf("node %s still tainted after a minute: %v (%v)", NodeName, n.Spec.Taints, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	log.Info("cluster up", "took", time.Since(start).Round(time.Millisecond).String())
	return c, nil
}

// buildImages builds Portico's binaries statically into an image
// directory laid out as the Dockerfile's (/usr/local/bin), and links
// echo-basic into its own.
func (c *Cluster) buildImages(ctx context.Context) (map[string]nodeagent.Image, error) {
	portico := filepath.Join(c.opts.Work, "images", "portico")
	bin := filepath.Join(portico, "usr", "local", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin+"/", "./cmd/gateway-controller", "./cmd/edge-proxy")
	cmd.Dir = c.opts.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building Portico: %v: %s", err, out)
	}
	echo := filepath.Join(c.opts.Work, "images", "echo-basic")
	if err := os.MkdirAll(echo, 0o755); err != nil {
		return nil, err
	}
	src, err := filepath.EvalSymlinks(filepath.Join(c.opts.Bins, "echo-basic"))
	if err != nil {
		return nil, err
	}
	if err := copyFile(src, filepath.Join(echo, "echo-basic")); err != nil {
		return nil, err
	}
	// coredns is in the base manifests for the UDP tests only; an image
	// whose process just has to run (and listen, for readiness): the
	// echo server, on its default port.
	return map[string]nodeagent.Image{
		ProxyImage:   {Dir: portico, Entrypoint: []string{"/usr/local/bin/gateway-controller"}},
		EchoImage:    {Dir: echo, Entrypoint: []string{"/echo-basic"}},
		CoreDNSImage: {Dir: echo, Entrypoint: []string{"/echo-basic"}},
	}, nil
}

func (c *Cluster) startPortico(ctx context.Context, image string) error {
	for _, ns := range []string{"portico-system"} {
		if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	rbac, err := os.ReadFile(filepath.Join(c.opts.Root, "config", "deploy", "controller", "rbac.yaml"))
	if err != nil {
		return err
	}
	if err := applyYAML(ctx, c.Client, string(rbac)); err != nil {
		return fmt.Errorf("applying the controller's RBAC: %w", err)
	}
	sa, err := c.env.AddUser(envtest.User{Name: "system:serviceaccount:portico-system:portico-controller",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:portico-system", "system:authenticated"}}, nil)
	if err != nil {
		return err
	}
	kc := filepath.Join(c.opts.Work, "portico-controller.kubeconfig")
	if err := writeKubeconfig(sa.Config(), kc); err != nil {
		return err
	}
	_, err = c.start(ctx, "gateway-controller", filepath.Join(image, "usr", "local", "bin", "gateway-controller"),
		"--kubeconfig", kc, "--xds-address", BridgeIP+":"+xdsPort, "--debug-address", "127.0.0.1:15014",
		"--health-address", "127.0.0.1:15021", "--metrics-address", "", "--leader-election-namespace", "portico-system")
	return err
}

// process is a child process logging to <work>/<name>.log.
type process struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
}

func (c *Cluster) start(ctx context.Context, name, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(c.opts.Work, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "POD_NAMESPACE=portico-system")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	c.procs = append(c.procs, p)
	return p, nil
}

// Logs returns the last lines of every component's log, for a failure.
func (c *Cluster) Logs(lines int) string {
	var b strings.Builder
	for _, p := range c.procs {
		fmt.Fprintf(&b, "----- last %d lines of %s -----\n%s\n", lines, p.name, tail(p.log, lines))
	}
	return b.String()
}

// LogFile is where a component logs.
func (c *Cluster) LogFile(name string) string { return filepath.Join(c.opts.Work, name+".log") }

// Stop stops everything Start started, in reverse order.
func (c *Cluster) Stop() {
	if c.cancel != nil {
		c.cancel() // the agent stops its pods, the load balancer its watches
	}
	c.wg.Wait()
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	if c.env != nil {
		c.env.Stop()
	}
	nodeagent.CleanupNetNS(PodNetNSPrefix)
	exec.Command("ip", "link", "del", Bridge).Run()
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	c := clientcmdapi.NewConfig()
	c.Clusters["conformance"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	c.AuthInfos["conformance"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	c.Contexts["conformance"] = &clientcmdapi.Context{Cluster: "conformance", AuthInfo: "conformance"}
	c.CurrentContext = "conformance"
	return clientcmd.WriteToFile(*c, path)
}

// applyYAML creates every object of a YAML stream (those that exist are
// left as they are).
func applyYAML(ctx context.Context, c client.Client, text string) error {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		if err := sigsyaml.Unmarshal(doc, &u.Object); err != nil {
			return err
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
