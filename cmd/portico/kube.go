package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"
)

// Istio's well-known ports, which Portico keeps: the proxy's admin
// interface and the control plane's debug interface.
const (
	proxyAdminPort      = 15000
	controllerDebugPort = 15014
)

// kubeFlags are istioctl's cluster flags, shared by every command that can
// reach a cluster.
type kubeFlags struct {
	kubeconfig, context string
	namespace           string
	// porticoNamespace and controllerLabel find the controller's pods
	// (istioctl's --istioNamespace and app=istiod).
	porticoNamespace, controllerLabel string
	// set records whether any cluster flag was given: then the command
	// works against the cluster even when no kubeconfig file is found by
	// default.
	set bool
}

func (k *kubeFlags) register(fl *flag.FlagSet) {
	mark := func(p *string) func(string) error {
		return func(v string) error { *p = v; k.set = true; return nil }
	}
	fl.Func("kubeconfig", "the kubeconfig file (default $KUBECONFIG, then ~/.kube/config)", mark(&k.kubeconfig))
	fl.Func("context", "the kubeconfig context", mark(&k.context))
	fl.Func("n", "the namespace (of the pod; analyze: the namespace analyzed) (default: the context's)", mark(&k.namespace))
	fl.Func("namespace", "same as -n", mark(&k.namespace))
	k.porticoNamespace = "portico-system"
	fl.Func("portico-namespace", "the controller's namespace (default portico-system)", mark(&k.porticoNamespace))
	fl.Func("i", "same as --portico-namespace (istioctl's --istioNamespace)", mark(&k.porticoNamespace))
	k.controllerLabel = "app=portico-controller"
	fl.Func("controller-selector", "the label selector of the controller's pods (default app=portico-controller)", mark(&k.controllerLabel))
}

func (k *kubeFlags) loader() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.context})
}

// available says whether the command should go to a cluster: a cluster
// flag was given, or a kubeconfig is found where kubectl would look.
func (k *kubeFlags) available() bool {
	if k.set {
		return true
	}
	_, err := k.loader().ClientConfig()
	return err == nil
}

// cluster is a connection to the API server.
type cluster struct {
	cfg       *rest.Config
	client    kubernetes.Interface
	namespace string // -n, else the context's, else "default"
	flags     *kubeFlags
}

func (k *kubeFlags) connect() (*cluster, error) {
	cc := k.loader()
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	cfg.Timeout = 30 * time.Second
	ns := k.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a Kubernetes client: %w", err)
	}
	return &cluster{cfg: cfg, client: cs, namespace: ns, flags: k}, nil
}

// podRef reads istioctl's pod argument: "name.namespace" (the last dot
// separates them, as istioctl infers it), or "name" in -n's namespace
// (else the context's).
func (c *cluster) podRef(arg string) (namespace, name string, err error) {
	if arg == "" || strings.HasPrefix(arg, ".") || strings.HasSuffix(arg, ".") {
		return "", "", fmt.Errorf("pod %q: want NAME or NAME.NAMESPACE", arg)
	}
	if i := strings.LastIndex(arg, "."); i > 0 {
		return arg[i+1:], arg[:i], nil
	}
	return c.namespace, arg, nil
}

// resolvePod reads a POD argument as istioctl does: NAME[.NAMESPACE], or
// deployment/NAME[.NAMESPACE] (also deploy/), which names the
// deployment's first running pod (by name, so the choice is stable).
// The pod must be Running for a port-forward to reach it.
func (c *cluster) resolvePod(ctx context.Context, arg string) (namespace, name string, err error) {
	kind, rest, hasKind := strings.Cut(arg, "/")
	if !hasKind {
		ns, name, err := c.podRef(arg)
		if err != nil {
			return "", "", err
		}
		_, err = c.pod(ctx, ns, name)
		return ns, name, err
	}
	switch kind {
	case "deployment", "deploy", "deployments", "deployment.apps":
	case "pod", "pods", "po":
		return c.resolvePod(ctx, rest)
	default:
		return "", "", fmt.Errorf("%q: want POD[.NAMESPACE] or deployment/NAME[.NAMESPACE]", arg)
	}
	ns, dname, err := c.podRef(rest)
	if err != nil {
		return "", "", err
	}
	d, err := c.client.AppsV1().Deployments(ns).Get(ctx, dname, metav1.GetOptions{})
	if err != nil {
		return "", "", fmt.Errorf("getting deployment %s/%s: %w", ns, dname, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return "", "", fmt.Errorf("deployment %s/%s selector: %w", ns, dname, err)
	}
	pods, err := c.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return "", "", fmt.Errorf("listing the pods of deployment %s/%s: %w", ns, dname, err)
	}
	var running []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			running = append(running, p.Name)
		}
	}
	if len(running) == 0 {
		return "", "", fmt.Errorf("deployment %s/%s has no running pod (%d pods match %s)", ns, dname, len(pods.Items), sel)
	}
	sort.Strings(running)
	return ns, running[0], nil
}

// pod gets a pod and checks that a port-forward can reach it.
func (c *cluster) pod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	p, err := c.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting pod %s/%s: %w", namespace, name, err)
	}
	if p.Status.Phase != corev1.PodRunning {
		return nil, fmt.Errorf("pod %s/%s is %s, not Running: nothing to port-forward to", namespace, name, p.Status.Phase)
	}
	return p, nil
}

// controllerPods lists the running controller pods, sorted by name.
func (c *cluster) controllerPods(ctx context.Context) ([]corev1.Pod, error) {
	sel, err := labels.Parse(c.flags.controllerLabel)
	if err != nil {
		return nil, fmt.Errorf("--controller-selector %q: %w", c.flags.controllerLabel, err)
	}
	list, err := c.client.CoreV1().Pods(c.flags.porticoNamespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("listing the controller's pods (%s in %s): %w", sel, c.flags.porticoNamespace, err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no running controller pod (%s) in namespace %s (--portico-namespace, --controller-selector)", sel, c.flags.porticoNamespace)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// forwarder is a port-forward to one pod port through the API server, as
// `kubectl port-forward` makes it: a local listener on 127.0.0.1, each
// connection a stream over one upgraded connection.
type forwarder struct {
	addr string
	stop func()
}

// forward opens a port-forward to namespace/pod:port. WebSockets first
// (tunnelling SPDY, what current API servers prefer), SPDY when the
// server does not upgrade to WebSockets — kubectl's order.
func (c *cluster) forward(ctx context.Context, namespace, pod string, port int) (*forwarder, error) {
	u := c.client.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(c.cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s/%s: %w", namespace, pod, err)
	}
	spdyDialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	wsDialer, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, c.cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forward to %s/%s: %w", namespace, pod, err)
	}
	dialer := portforward.NewFallbackDialerForStreaming(wsDialer, spdyDialer, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	fctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreamingWithContext(fctx, dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, ready, io.Discard, io.Discard)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("port-forward to %s/%s: %w", namespace, pod, err)
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }() // ends when fctx is cancelled
	stop := func() {
		cancel()
		<-done
	}
	select {
	case <-ready:
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("port-forward to %s/%s:%d: %w", namespace, pod, port, err)
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		stop()
		return nil, fmt.Errorf("port-forward to %s/%s:%d: no local port: %v", namespace, pod, port, err)
	}
	return &forwarder{addr: "127.0.0.1:" + strconv.Itoa(int(ports[0].Local)), stop: stop}, nil
}

// getVia fetches path from a pod's port over a port-forward.
func (c *cluster) getVia(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error) {
	f, err := c.forward(ctx, namespace, pod, port)
	if err != nil {
		return nil, err
	}
	defer f.stop()
	b, err := get(f.addr, path)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s port %d: %w", namespace, pod, port, err)
	}
	return b, nil
}

// errHelped ends a command that printed its flags for -h.
var errHelped = errors.New("help shown")

// parseFlags parses a command's flags (anywhere among its arguments);
// for -h/--help it prints them and returns errHelped.
func parseFlags(fl *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	pos, err := interspersed(fl, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "Flags of portico %s:\n", fl.Name())
		fl.SetOutput(stdout)
		fl.PrintDefaults()
		return nil, errHelped
	}
	return pos, err
}

// interspersed parses flags wherever they are among the arguments
// (kubectl's style: `pc clusters POD -n ns --port 80`), returning the
// positional ones in order.
func interspersed(fl *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fl.Parse(args); err != nil {
			return nil, err
		}
		rest := fl.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			return append(pos, rest...), nil // everything after -- is positional
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// commandContext bounds a command's cluster calls.
func commandContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}
