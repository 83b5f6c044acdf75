//go:build linux

// The Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance)
// against Portico, in a container-free cluster (package cluster) started
// in a network namespace of its own. Run it with `make conformance`, or:
//
//	flock /tmp/portico-e2e.lock go test -count=1 -timeout 60m -v ./  (in test/conformance, as root)
//
// Flags after -args: -conformance.profiles, -conformance.run-test (one
// test by short name), -conformance.report (where the report goes; the
// default is conformance/reports/ in the repository).
package conformance

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/apis/v1alpha2"
	"sigs.k8s.io/gateway-api/apis/v1alpha3"
	xv1alpha1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	conformanceconfig "sigs.k8s.io/gateway-api/conformance/utils/config"
	confkube "sigs.k8s.io/gateway-api/conformance/utils/kubernetes"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/test/conformance/cluster"
	"github.com/portico-gateway/portico/test/conformance/nodeagent"
)

const (
	gatewayClass   = "portico"
	controllerName = "portico.io/gateway-controller"
	// clusterNetNS is the network namespace everything runs in.
	clusterNetNS = cluster.NetNSPrefix + "cluster"
	insideEnv    = "PORTICO_CONFORMANCE_INSIDE"
)

var (
	profiles   = flag.String("conformance.profiles", "GATEWAY-HTTP,GATEWAY-TLS,GATEWAY-GRPC,GATEWAY-TCP", "comma-separated conformance profiles to run")
	runTest    = flag.String("conformance.run-test", "", "run only this conformance test (short name)")
	reportPath = flag.String("conformance.report", "", "where to write the ConformanceReport (default: <repo>/conformance/reports/portico.yaml)")
	budget     = flag.Duration("conformance.budget", 50*time.Minute, "hard limit for the whole run, cluster included: the namespace and everything in it is killed after it")
)

var (
	c          *cluster.Cluster
	skipReason string
	repoRoot   string
)

// TestMain re-executes the test binary inside a network namespace of its
// own (the API server, controllers, node agent, proxies and the suite all
// run there, and the suite dials Gateway addresses on the pod bridge),
// bounded by -conformance.budget; whatever is left in the harness's
// namespaces afterwards is killed and the namespaces deleted, even if the
// inner run crashed.
func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() != 0 {
		skipReason = "the conformance cluster needs root (network namespaces, chroot); run as root (CI does)"
		os.Exit(m.Run())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipReason = "the conformance cluster needs iproute2 (ip): hack/ensure-test-deps.sh installs it"
		os.Exit(m.Run())
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	repoRoot = root
	if os.Getenv(insideEnv) == "" {
		os.Exit(outside())
	}
	os.Exit(inside(m))
}

// outside creates the cluster namespace, runs the tests in it and
// cleans up.
func outside() int {
	nodeagent.CleanupNetNS(cluster.NetNSPrefix)
	if out, err := exec.Command("ip", "netns", "add", clusterNetNS).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "creating network namespace %s: %v: %s\n", clusterNetNS, err, out)
		return 1
	}
	defer nodeagent.CleanupNetNS(cluster.NetNSPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), *budget)
	defer cancel()
	self, _ := os.Executable()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", clusterNetNS, self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), insideEnv+"=1")
	cmd.Stdout, cmd.Stderr, cmd.Stdin = os.Stdout, os.Stderr, nil
	cmd.WaitDelay = 30 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		fmt.Fprintf(os.Stderr, "conformance: the run exceeded -conformance.budget=%v and was killed\n", *budget)
		return 1
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// inside starts the cluster, runs the tests and stops it.
func inside(m *testing.M) int {
	log := funcr.New(func(prefix, args string) {
		fmt.Fprintf(os.Stderr, "%s %s %s\n", time.Now().Format("15:04:05.000"), prefix, args)
	}, funcr.Options{})
	ctrllog.SetLogger(logr.Discard())
	start := time.Now()
	bins, err := exec.Command(filepath.Join(repoRoot, "hack", "build-conformance-bins.sh")).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			fmt.Fprintf(os.Stderr, "building the cluster's binaries: %v: %s\n", err, ee.Stderr)
		}
		return 1
	}
	fmt.Fprintf(os.Stderr, "conformance: binaries ready in %v\n", time.Since(start).Round(time.Second))
	work, err := os.MkdirTemp("", "portico-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err = cluster.Start(ctx, cluster.Options{Root: repoRoot, Bins: strings.TrimSpace(string(bins)), Work: work, Log: log})
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance: starting the cluster:", err)
		fmt.Fprintln(os.Stderr, c.Logs(40))
	} else {
		fmt.Fprintf(os.Stderr, "conformance: cluster up in %v (work dir %s)\n", time.Since(start).Round(time.Second), work)
		code = m.Run()
		if code != 0 {
			fmt.Fprintln(os.Stderr, c.Logs(60))
		}
	}
	c.Stop()
	if os.Getenv("PORTICO_CONFORMANCE_KEEP") == "" {
		os.RemoveAll(work)
	}
	return code
}

func needCluster(t *testing.T) {
	t.Helper()
	if c == nil {
		t.Skip("conformance: " + skipReason)
	}
}

// TestClusterSmoke checks the harness itself: a Deployment of echo-basic
// becomes Ready on the node agent, the real endpoint slice controller
// lists its pods, and a pod answers HTTP on its pod IP.
func TestClusterSmoke(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := "harness-smoke"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "echo", Image: cluster.EchoImage + ":v1.5.1",
				Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}},
			}}}}}}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(3000)}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var ips []string
	poll(t, ctx, "the Deployment's two pods Ready and in an EndpointSlice", func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas != 2 {
			pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			var states []string
			for _, p := range pods.Items {
				states = append(states, fmt.Sprintf("%s node=%q phase=%s ip=%s conditions=%v containers=%v", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, p.Status.Conditions, p.Status.ContainerStatuses))
			}
			return fmt.Errorf("%d ready replicas; pods: %s", d.Status.ReadyReplicas, strings.Join(states, "; "))
		}
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=echo"})
		if err != nil {
			return err
		}
		ips = nil
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if ptr.Deref(e.Conditions.Ready, false) {
					ips = append(ips, e.Addresses...)
				}
			}
		}
		if len(ips) != 2 {
			return fmt.Errorf("ready endpoints %v", ips)
		}
		return nil
	})
	t.Logf("2 echo-basic pods Ready with endpoints %v after %v", ips, time.Since(start).Round(time.Millisecond))
	for _, ip := range ips {
		resp, err := http.Get("http://" + ip + ":3000/smoke")
		if err != nil {
			t.Fatalf("echo-basic on %s: %v", ip, err)
		}
		var echo struct{ Path, Namespace, Pod string }
		err = json.NewDecoder(resp.Body).Decode(&echo)
		resp.Body.Close()
		if err != nil || echo.Path != "/smoke" || echo.Namespace != ns || !strings.HasPrefix(echo.Pod, "echo-") {
			t.Fatalf("echo-basic on %s: %v: %+v", ip, err, echo)
		}
	}
}

// TestProvisionedProxy checks the harness's path for Gateways: the
// controller provisions an edge proxy for a Gateway of class portico, the
// node agent runs it (image ghcr.io/portico-gateway/portico, its
// projected token and CA volume, the controller's Service name in
// /etc/hosts), the proxy connects to xDS over TLS and turns Ready, and
// the load balancer's ingress IP for its Service reaches it.
func TestProvisionedProxy(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := gatewayClient(t)
	ensureGatewayClass(t, cl)
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := "harness-proxy"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: ns}, Spec: gwv1.GatewaySpec{GatewayClassName: gatewayClass,
		Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}}}
	if err := cl.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var ingress string
	poll(t, ctx, "the provisioned proxy Ready behind a load balancer IP", func() error {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "edge-portico", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas != 1 {
			pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			var states []string
			for _, p := range pods.Items {
				states = append(states, fmt.Sprintf("%s phase=%s ip=%s containers=%v", p.Name, p.Status.Phase, p.Status.PodIP, p.Status.ContainerStatuses))
			}
			return fmt.Errorf("%d ready replicas; pods: %s", d.Status.ReadyReplicas, strings.Join(states, "; "))
		}
		svc, err := cs.CoreV1().Services(ns).Get(ctx, "edge-portico", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(svc.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("service has no load balancer ingress")
		}
		ingress = svc.Status.LoadBalancer.Ingress[0].IP
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + ingress + ":15021/healthz/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("proxy readiness through %s: %s", ingress, resp.Status)
		}
		// And it holds an xDS stream to the controller (authenticated
		// with the token the agent requested for its pod).
		resp, err = http.Get("http://127.0.0.1:15014/debug/proxies")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "edge-portico") {
			return fmt.Errorf("the controller lists no proxy of edge-portico: %s", b)
		}
		return nil
	})
	t.Logf("provisioned proxy Ready and reachable on load balancer IP %s after %v", ingress, time.Since(start).Round(time.Millisecond))
}

// TestBaseManifestPods applies the suite's base manifests as its Setup
// does — Deployments first, the Secrets three of them mount afterwards —
// and checks that every pod of them (echo-basic in all its roles, coredns,
// the provisioned proxies of the base Gateways) turns Ready: the mount
// retry, the image mapping and the agent at the suite's scale.
func TestBaseManifestPods(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := gatewayClient(t)
	ensureGatewayClass(t, cl)
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	namespaces := []string{suite.InfrastructureNamespace, suite.AppBackendNamespace, suite.WebBackendNamespace}
	// Registered first, so it runs after the applier's deletions: the
	// suite, next, recreates these namespaces and must not find them
	// terminating.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		poll(t, ctx, "the base manifests' namespaces to be deleted", func() error {
			for _, ns := range namespaces {
				if _, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
					return fmt.Errorf("namespace %s still exists", ns)
				}
			}
			return nil
		})
	})
	timeouts := conformanceconfig.DefaultTimeoutConfig()
	applier := confkube.Applier{GatewayClass: gatewayClass, ControllerName: controllerName, ManifestFS: []fs.FS{&conformance.Manifests}}
	start := time.Now()
	applier.MustApplyWithCleanup(t, cl, timeouts, "base/manifests.yaml", true)
	_, ca, caKey := confkube.MustCreateCACertConfigMap(t, suite.InfrastructureNamespace, "tls-checks-ca-certificate")
	secrets := []client.Object{
		confkube.MustCreateCASignedCertSecret(t, suite.InfrastructureNamespace, "tls-checks-certificate", []string{"abc.example.com"}, ca, caKey),
		confkube.MustCreateCASignedCertSecret(t, suite.InfrastructureNamespace, "tls-passthrough-checks-certificate", []string{"abc.example.com"}, ca, caKey),
		confkube.MustCreateCASignedCertSecret(t, suite.AppBackendNamespace, "tls-passthrough-checks-certificate", []string{"abc.example.com"}, ca, caKey),
	}
	applier.MustApplyObjectsWithCleanup(t, cl, timeouts, secrets, true)
	var total int
	poll(t, ctx, "every Deployment of the base manifests Ready", func() error {
		total = 0
		var notReady []string
		for _, ns := range namespaces {
			deps, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			for _, d := range deps.Items {
				want := ptr.Deref(d.Spec.Replicas, 1)
				total += int(want)
				if d.Status.ReadyReplicas != want {
					notReady = append(notReady, fmt.Sprintf("%s/%s %d/%d", ns, d.Name, d.Status.ReadyReplicas, want))
				}
			}
		}
		if len(notReady) > 0 || total == 0 {
			return fmt.Errorf("not ready: %v", notReady)
		}
		return nil
	})
	t.Logf("%d pods of the base manifests Ready after %v", total, time.Since(start).Round(time.Millisecond))
}

// gatewayClient is a client with its own scheme (the default one is
// client-go's global scheme, which informers read concurrently) knowing
// the core kinds, the Gateway API kinds and CRDs, as the suite needs.
func gatewayClient(t *testing.T) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha3.Install, v1alpha2.Install, xv1alpha1.Install, gwv1.Install, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := client.New(c.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// ensureGatewayClass creates the GatewayClass portico (once).
func ensureGatewayClass(t *testing.T, cl client.Client) {
	t.Helper()
	gc := &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: gatewayClass}, Spec: gwv1.GatewayClassSpec{ControllerName: controllerName}}
	if err := cl.Create(context.Background(), gc); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// TestConformance runs the upstream suite against the GatewayClass
// portico and writes the ConformanceReport.
func TestConformance(t *testing.T) {
	needCluster(t)
	cl := gatewayClient(t)
	ensureGatewayClass(t, cl)
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	var profs []suite.ConformanceProfileName
	for _, p := range strings.Split(*profiles, ",") {
		profs = append(profs, suite.ConformanceProfileName(strings.TrimSpace(p)))
	}
	report := *reportPath
	if report == "" {
		report = filepath.Join(repoRoot, "conformance", "reports", "portico.yaml")
	}
	if err := os.MkdirAll(filepath.Dir(report), 0o755); err != nil {
		t.Fatal(err)
	}
	timeouts := conformanceconfig.DefaultTimeoutConfig()
	opts := suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			GatewayClassName:     gatewayClass,
			CleanupBaseResources: true,
			CleanupTestResources: true,
			TimeoutConfig:        timeouts,
			// What Portico claims: see features.go.
			SupportedFeatures:   supportedFeatures(),
			ConformanceProfiles: profs,
			RunTest:             *runTest,
			Mode:                "default",
			ReportOutputPath:    report,
			Implementation: confv1.Implementation{
				Organization: "portico-gateway",
				Project:      "portico",
				URL:          "https://github.com/portico-gateway/portico",
				Version:      "main",
				Contact:      []string{"https://github.com/portico-gateway/portico/issues"},
			},
		},
		Client:        cl,
		ClientOptions: client.Options{Scheme: cl.Scheme()},
		Clientset:     cs,
		RestConfig:    c.Config,
		ManifestFS:    []fs.FS{&conformance.Manifests},
	}
	// Not RunConformanceWithOptions: its report writer writes 0600 and we
	// want to log the summary too.
	cSuite, err := suite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r, err := cSuite.Report()
		if err != nil {
			t.Errorf("building the conformance report: %v", err)
			return
		}
		b, err := yaml.Marshal(r)
		if err != nil {
			t.Error(err)
			return
		}
		if err := os.WriteFile(report, b, 0o644); err != nil {
			t.Error(err)
		}
		t.Logf("conformance report written to %s:\n%s", report, summary(r))
	})
	cSuite.Setup(t, tests.ConformanceTests)
	if err := cSuite.Run(t, tests.ConformanceTests); err != nil {
		t.Fatal(err)
	}
}

// summary is one line per profile: core and extended results.
func summary(r *confv1.ConformanceReport) string {
	var b strings.Builder
	for _, p := range r.ProfileReports {
		fmt.Fprintf(&b, "%s: core %s (passed %d, failed %d, skipped %d)", p.Name, p.Core.Result, p.Core.Statistics.Passed, p.Core.Statistics.Failed, p.Core.Statistics.Skipped)
		if p.Extended != nil {
			fmt.Fprintf(&b, ", extended %s (passed %d, failed %d, skipped %d)", p.Extended.Result, p.Extended.Statistics.Passed, p.Extended.Statistics.Failed, p.Extended.Statistics.Skipped)
		}
		if len(p.Core.FailedTests) > 0 {
			fmt.Fprintf(&b, "\n  core failed: %s", strings.Join(p.Core.FailedTests, ", "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func poll(t *testing.T, ctx context.Context, what string, f func() error) {
	t.Helper()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s: %v\n%s", what, err, c.Logs(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
