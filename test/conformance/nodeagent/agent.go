//go:build linux

// Package nodeagent is the container-free kubelet of the conformance
// harness: a virtual-kubelet node whose provider runs each container of a
// pod as a local process — the image name mapped to a directory holding
// static binaries (an unpacked "image") — chrooted into a per-container
// root with the pod's volumes written into it, in a network namespace of
// its own per pod with a pod IP on a bridge. A pod is Ready once its
// readiness probes pass or, without probes, once it listens.
//
// What it deliberately does not do: images it does not know fail the pod
// (ErrImagePull) instead of being pulled; volume contents are written
// once, when the container starts (a later Secret change is not synced);
// exec probes and exec/attach over the kubelet API are not served
// (container logs are, whole: since/tail options are ignored; port-forward
// is, to localhost in the pod's network namespace);
// containers run as root in their chroot.
package nodeagent

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
	"k8s.io/utils/ptr"
)

// Image is an unpacked image: a directory whose files become each
// container's root, and the entrypoint used when the pod names no command.
type Image struct {
	Dir        string
	Entrypoint []string
}

// Config configures the agent.
type Config struct {
	NodeName string
	Client   kubernetes.Interface
	Log      logr.Logger
	// Work is where pod roots and container logs go.
	Work string
	// Bridge is the bridge pods attach to; BridgeIP its address (the
	// pods' default gateway and the node's InternalIP); pod IPs are
	// PodIPPrefix (two octets, e.g. "10.250.") followed by a counter, in
	// a /PrefixLen network with the bridge.
	Bridge, BridgeIP string
	PodIPPrefix      string
	PrefixLen        int
	// NetNSPrefix names pod network namespaces ("<prefix><n>"); veths are
	// named "<VethPrefix><n>".
	NetNSPrefix, VethPrefix string
	// Images maps an image reference (without tag, e.g.
	// registry.k8s.io/gateway-api/echo-basic) to what runs.
	Images map[string]Image
	// Hosts are extra /etc/hosts lines every container gets (names of
	// cluster Services the harness makes reachable without DNS).
	Hosts map[string]string
}

// Agent is a running node agent.
type Agent struct {
	cfg  Config
	node *nodeutil.Node

	mu     sync.Mutex
	pods   map[string]*pod // namespace/name
	notify func(*corev1.Pod)
	nextIP int
}

// New returns an agent; Run starts it.
func New(cfg Config) *Agent {
	return &Agent{cfg: cfg, pods: map[string]*pod{}}
}

// Run registers the node and serves pods until ctx ends, then stops
// every pod it runs (processes, network namespaces, roots).
func (a *Agent) Run(ctx context.Context, ready chan<- struct{}) error {
	defer a.stopAll()
	ctx = vklog.WithLogger(ctx, vkLogger{a.cfg.Log.WithName("vk")})
	apiOpts, err := a.kubeletAPI()
	if err != nil {
		return err
	}
	opts := append([]nodeutil.NodeOpt{nodeutil.WithClient(a.cfg.Client), func(c *nodeutil.NodeConfig) error {
		c.NumWorkers = 8
		c.InformerResyncPeriod = 30 * time.Second
		return nil
	}}, apiOpts...)
	n, err := nodeutil.NewNode(a.cfg.NodeName, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		pc.Node.Status.Capacity = corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("64"),
			corev1.ResourceMemory: resource.MustParse("256Gi"),
			corev1.ResourcePods:   resource.MustParse("1000"),
		}
		pc.Node.Status.Allocatable = pc.Node.Status.Capacity.DeepCopy()
		pc.Node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: a.cfg.BridgeIP},
			{Type: corev1.NodeHostName, Address: a.cfg.NodeName}}
		pc.Node.Status.NodeInfo = corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "v1.36.3-portico-nodeagent"}
		pc.Node.Status.DaemonEndpoints.KubeletEndpoint.Port = KubeletPort
		return a, nil, nil
	}, opts...)
	if err != nil {
		return fmt.Errorf("creating the virtual-kubelet node: %w", err)
	}
	a.node = n
	go func() {
		select {
		case <-n.Ready():
			close(ready)
		case <-ctx.Done():
		}
	}()
	return n.Run(ctx)
}

// NetNS is the network namespace a running pod's containers are in.
func (a *Agent) NetNS(namespace, name string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pods[namespace+"/"+name]
	if p == nil {
		return "", false
	}
	return p.netns, true
}

func (a *Agent) stopAll() {
	a.mu.Lock()
	pods := make([]*pod, 0, len(a.pods))
	for _, p := range a.pods {
		pods = append(pods, p)
	}
	a.pods = map[string]*pod{}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(0) }()
	}
	wg.Wait()
}

func key(namespace, name string) string { return namespace + "/" + name }

// CreatePod starts a pod's worker: networking, then volumes (retried
// until their Secrets and ConfigMaps exist, as a kubelet does), then the
// containers, then probes. It returns at once; status follows through
// NotifyPods.
func (a *Agent) CreatePod(ctx context.Context, in *corev1.Pod) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := key(in.Namespace, in.Name)
	if old := a.pods[k]; old != nil && old.uid == in.UID {
		return nil
	}
	a.nextIP++
	n := a.nextIP
	p := newPod(a, in.DeepCopy(), n)
	a.pods[k] = p
	go p.run()
	return nil
}

// UpdatePod: a running pod's spec changes only in ways (labels,
// annotations, image of a mutable field) this agent does not act on.
func (a *Agent) UpdatePod(ctx context.Context, in *corev1.Pod) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.pods[key(in.Namespace, in.Name)]; p != nil {
		p.mu.Lock()
		p.obj.ObjectMeta = *in.ObjectMeta.DeepCopy()
		p.mu.Unlock()
	}
	return nil
}

// DeletePod stops the pod's processes and frees its network, then removes
// the Pod object with grace 0 (virtual-kubelet itself would wait out the
// whole grace period before the API object goes, which makes namespace
// cleanup between conformance tests slow).
func (a *Agent) DeletePod(ctx context.Context, in *corev1.Pod) error {
	a.mu.Lock()
	p := a.pods[key(in.Namespace, in.Name)]
	if p != nil && p.uid == in.UID {
		delete(a.pods, key(in.Namespace, in.Name))
	} else {
		p = nil
	}
	a.mu.Unlock()
	if p != nil {
		grace := time.Duration(ptr.Deref(in.DeletionGracePeriodSeconds, 0)) * time.Second
		p.stop(min(grace, 3*time.Second))
	}
	err := a.cfg.Client.CoreV1().Pods(in.Namespace).Delete(ctx, in.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: ptr.To(in.UID)}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting pod %s/%s with grace 0: %w", in.Namespace, in.Name, err)
	}
	return nil
}

// GetPod returns the pod as the agent runs it.
func (a *Agent) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	a.mu.Lock()
	p := a.pods[key(namespace, name)]
	a.mu.Unlock()
	if p == nil {
		return nil, errdefs.NotFoundf("pod %s/%s is not running here", namespace, name)
	}
	return p.snapshot(), nil
}

// GetPodStatus returns the pod's status.
func (a *Agent) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := a.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods lists the pods the agent runs.
func (a *Agent) GetPods(ctx context.Context) ([]*corev1.Pod, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(a.pods))
	for _, p := range a.pods {
		out = append(out, p.snapshot())
	}
	return out, nil
}

// NotifyPods makes the provider asynchronous: status changes are pushed.
func (a *Agent) NotifyPods(ctx context.Context, cb func(*corev1.Pod)) {
	a.mu.Lock()
	a.notify = cb
	a.mu.Unlock()
}

func (a *Agent) push(p *corev1.Pod) {
	a.mu.Lock()
	cb := a.notify
	a.mu.Unlock()
	if cb != nil {
		cb(p)
	}
}

// GetContainerLogs serves a container's log file, whole (the lines carry
// no timestamps to honour sinceTime by; the suite's mirror tests look for
// a line naming a path unique to the test).
func (a *Agent) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	a.mu.Lock()
	p := a.pods[key(namespace, podName)]
	a.mu.Unlock()
	if p == nil {
		return nil, errdefs.NotFoundf("pod %s/%s", namespace, podName)
	}
	return os.Open(filepath.Join(p.dir, containerName+".log"))
}

var errUnsupported = errdefs.InvalidInput("not supported by the conformance node agent")

func (a *Agent) RunInContainer(context.Context, string, string, string, []string, api.AttachIO) error {
	return errUnsupported
}
func (a *Agent) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errUnsupported
}
func (a *Agent) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return nil, errUnsupported
}
func (a *Agent) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, errUnsupported
}

// image resolves an image reference: the tag or digest is dropped.
func (a *Agent) image(ref string) (Image, bool) {
	name := ref
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	img, ok := a.cfg.Images[name]
	return img, ok
}

// podIP is the address of the n-th pod.
func (a *Agent) podIP(n int) string {
	return fmt.Sprintf("%s%d.%d", a.cfg.PodIPPrefix, 1+n/250, 2+n%250)
}

// hostsFile is /etc/hosts for a container.
func (a *Agent) hostsFile(p *corev1.Pod, ip string) []byte {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	fmt.Fprintf(&b, "%s\t%s\n", ip, p.Name)
	names := make([]string, 0, len(a.cfg.Hosts))
	for n := range a.cfg.Hosts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s\t%s\n", a.cfg.Hosts[n], n)
	}
	return []byte(b.String())
}

// dialReady is a TCP probe.
func dialReady(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
