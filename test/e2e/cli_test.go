//go:build linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	porticoOnce sync.Once
	porticoBin  string
	porticoErr  error
	adminKube   string
)

// portico runs the CLI binary against the harness's API server as its
// administrator, returning stdout, stderr and the exit code.
func portico(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	porticoOnce.Do(func() {
		porticoBin = filepath.Join(h.work, "portico")
		cmd := exec.Command("go", "build", "-o", porticoBin, "./cmd/portico")
		cmd.Dir = h.root
		if out, err := cmd.CombinedOutput(); err != nil {
			porticoErr = fmt.Errorf("building portico: %v: %s", err, out)
			return
		}
		adminKube = filepath.Join(h.work, "admin.kubeconfig")
		porticoErr = writeKubeconfig(h.cfg, adminKube)
	})
	if porticoErr != nil {
		t.Fatal(porticoErr)
	}
	var out, errOut bytes.Buffer
	cmd := exec.Command(porticoBin, append(args, "--kubeconfig", adminKube)...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "HOME="+h.work) // no kubeconfig of the machine's
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running portico: %v", err)
	}
	return out.String(), errOut.String(), code
}

// TestCLIAgainstCluster: the portico CLI as istioctl is used — pods named
// to the API server, which forwards to the proxy's admin port and the
// controller's debug port through the node's kubelet (the harness's,
// which serves the kubelet port-forward API); analyze reads the cluster's
// objects itself.
func TestCLIAgainstCluster(t *testing.T) {
	needHarness(t)
	k := h.startKubelet(t)
	const proxyPod = "istio-ingressgateway-e2e"
	h.runPod(t, k, "istio-system", proxyPod, nil, map[int32]string{15000: h.adminAddr})
	h.runPod(t, k, "portico-system", "portico-controller-e2e", map[string]string{"app": "portico-controller"}, map[int32]string{15014: h.debugAddr})

	if err := h.client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "clitest"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	backend := h.startPod(t, "clitest", "cli-backend-1", map[string]string{"app": "cli-backend"}, "v1")
	h.service(t, "clitest", "cli-backend", []corev1.ServicePort{httpPort("http", 80, 8080)}, backend)
	h.apply(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: cli, namespace: clitest}
spec:
  selector: {istio: ingressgateway}
  servers:
  - hosts: [cli.e2e.example.com]
    port: {name: http, number: 80, protocol: HTTP}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: orphan, namespace: clitest}
spec:
  selector: {istio: no-such-proxy}
  servers:
  - hosts: [orphan.e2e.example.com]
    port: {name: http, number: 80, protocol: HTTP}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cli, namespace: clitest}
spec:
  hosts: [cli.e2e.example.com]
  gateways: [cli]
  http:
  - route:
    - destination: {host: cli-backend, port: {number: 80}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: typo, namespace: clitest}
spec:
  hosts: [typo.e2e.example.com]
  gateways: [cli-typo]
  http:
  - route:
    - destination: {host: cli-backend, port: {number: 80}}
`)
	t.Cleanup(func() { // the proxy is shared: leave it as other tests expect it
		for _, o := range [][2]string{{"Gateway", "cli"}, {"Gateway", "orphan"}, {"VirtualService", "cli"}, {"VirtualService", "typo"}} {
			h.delete(t, "networking.istio.io/v1", o[0], "clitest", o[1])
		}
	})
	eventually(t, "HTTP through the gateway", 30*time.Second, func() error {
		code, body, err := h.httpGet(80, "cli.e2e.example.com", "/", nil)
		if err != nil {
			return err
		}
		if code != 200 || !strings.Contains(body, "cli-backend-1") {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})

	t.Run("proxy-config", func(t *testing.T) {
		out, errOut, code := portico(t, "proxy-config", "routes", proxyPod+".istio-system")
		if code != 0 || !regexpLine(out, `cli\.e2e\.example\.com\s+/\*\s+cli\.clitest`) {
			t.Fatalf("pc routes POD.NS: exit %d %s\n%s", code, errOut, out)
		}
		out, errOut, code = portico(t, "pc", "clusters", proxyPod, "-n", "istio-system", "--port", "80")
		if code != 0 || !strings.Contains(out, "cli-backend.clitest.svc.cluster.local") || strings.Contains(out, "|3306|") {
			t.Errorf("pc clusters POD -n --port 80: exit %d %s\n%s", code, errOut, out)
		}
		out, errOut, code = portico(t, "pc", "bootstrap", proxyPod+".istio-system")
		if code != 0 || !regexpLine(out, `Node ID:\s+`+proxyPod) || !regexpLine(out, `Labels:\s+istio=ingressgateway`) {
			t.Errorf("pc bootstrap: exit %d %s\n%s", code, errOut, out)
		}
		out, errOut, code = portico(t, "pc", "listeners", proxyPod+".istio-system", "-o", "json")
		if code != 0 || !strings.HasPrefix(out, "[") || !strings.Contains(out, `"port_value": 80`) {
			t.Errorf("pc listeners -o json: exit %d %s\n%.300s", code, errOut, out)
		}
		// deployment/NAME.NS: the deployment's running pod.
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "cli-gw", Namespace: "istio-system"},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"istio": "ingressgateway"}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"istio": "ingressgateway"}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "istio-proxy", Image: "portico/edge-proxy"}}}}}}
		if err := h.client.Create(context.Background(), dep); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.client.Delete(context.Background(), dep) })
		out, errOut, code = portico(t, "pc", "bootstrap", "deployment/cli-gw.istio-system")
		if code != 0 || !regexpLine(out, `Node ID:\s+`+proxyPod) {
			t.Errorf("pc bootstrap deployment/NAME.NS: exit %d %s\n%s", code, errOut, out)
		}
		if _, errOut, code := portico(t, "pc", "bootstrap", "deployment/no-such.istio-system"); code != 1 || !strings.Contains(errOut, "not found") {
			t.Errorf("unknown deployment: exit %d %q", code, errOut)
		}
		// Errors say what is wrong.
		if _, errOut, code := portico(t, "pc", "routes", "no-such-pod.istio-system"); code != 1 || !strings.Contains(errOut, "not found") {
			t.Errorf("unknown pod: exit %d %q", code, errOut)
		}
		if _, errOut, code := portico(t, "pc", "routes", "cli-backend-1.clitest"); code != 1 || !strings.Contains(errOut, "not Running") {
			t.Errorf("a pod no kubelet runs: exit %d %q", code, errOut)
		}
		if _, _, code := portico(t, "pc", "routes", proxyPod+".istio-system", "--proxy-admin-port", "15999"); code != 1 {
			t.Errorf("a port nothing listens on in the pod: exit %d", code)
		}
	})

	t.Run("proxy-status", func(t *testing.T) {
		var out string
		eventually(t, "proxy-status to list the proxy SYNCED, with its controller pod", 30*time.Second, func() error {
			o, errOut, code := portico(t, "proxy-status")
			out = o
			if code != 0 {
				return fmt.Errorf("exit %d: %s", code, errOut)
			}
			if !regexpLine(out, proxyPod+`\.istio-system\s+\S+\s+SYNCED\s+SYNCED\s+SYNCED\s+SYNCED\s+(SYNCED|NOT SENT)\s+\S+\s+portico-controller-e2e\.portico-system`) {
				return fmt.Errorf("table:\n%s", out)
			}
			return nil
		})
		eventually(t, "proxy-status POD: what the controller sends is what the proxy has", 30*time.Second, func() error {
			o, errOut, code := portico(t, "ps", proxyPod+".istio-system")
			if code != 0 {
				return fmt.Errorf("exit %d: %s", code, errOut)
			}
			for _, want := range []string{"Clusters Match", "Listeners Match", "Routes Match (RDS last loaded at ", "Endpoints Match", "Secrets Match"} {
				if !strings.Contains(o, want) {
					return fmt.Errorf("missing %q in:\n%s", want, o)
				}
			}
			return nil
		})
		out, errOut, code := portico(t, "version")
		if code != 0 || !regexpLine(out, `control plane version: \S+ \(portico-controller-e2e\.portico-system\)`) || !regexpLine(out, `data plane version: 0\.1\.0 \(\d+ proxies\)`) {
			t.Errorf("version: exit %d %s\n%s", code, errOut, out)
		}
	})

	t.Run("analyze", func(t *testing.T) {
		out, errOut, code := portico(t, "analyze", "-n", "clitest")
		if code != 79 {
			t.Errorf("errors found: exit %d, want 79 (%s)", code, errOut)
		}
		for _, want := range []string{
			"Error [IST0101] (VirtualService clitest/typo)",
			`Error [IST0101] (Gateway clitest/orphan) spec.selector: Referenced selector not found: "istio=no-such-proxy"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("analyze -n clitest: missing %q in:\n%s", want, out)
			}
		}
		if strings.Contains(out, "(Gateway clitest/cli)") || strings.Contains(out, "(VirtualService clitest/cli)") {
			t.Errorf("the working Gateway and VirtualService have no findings:\n%s", out)
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if !strings.Contains(l, " clitest/") {
				t.Errorf("-n clitest reports another namespace: %q", l)
			}
		}
		if all, _, _ := portico(t, "analyze", "-A"); !strings.Contains(all, "(VirtualService clitest/typo)") {
			t.Errorf("analyze -A lacks the clitest finding:\n%s", all)
		}
		// A local file replaces the cluster's object of the same name.
		fixed := filepath.Join(t.TempDir(), "fixed.yaml")
		os.WriteFile(fixed, []byte(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: typo, namespace: clitest}
spec:
  hosts: [typo.e2e.example.com]
  gateways: [cli]
  http:
  - route:
    - destination: {host: cli-backend, port: {number: 80}}
`), 0o644)
		out, _, _ = portico(t, "analyze", "-n", "clitest", "--use-kube=true", fixed)
		if strings.Contains(out, "[IST0101] (VirtualService clitest/typo)") || !strings.Contains(out, "Gateway clitest/orphan") {
			t.Errorf("with the fixed file over the cluster:\n%s", out)
		}
		if out, _, code := portico(t, "analyze", "-n", "kube-system"); code != 0 || !strings.Contains(out, "No validation issues found when analyzing namespace: kube-system.") {
			t.Errorf("a namespace without findings: exit %d\n%s", code, out)
		}
	})
}

func regexpLine(text, re string) bool {
	return regexpMust(re).MatchString(text)
}

func regexpMust(re string) *regexp.Regexp { return regexp.MustCompile(re) }
