//go:build linux

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// TestWorksWithIstiosOwnCRDs: on an API server with Istio's CRDs (as
// shipped in istio.io/api) instead of Portico's, the controller binds and
// reports status unchanged, in whichever version the objects were
// written. What Istio's schemas let through (an invalid regex) Portico's
// own validation reports.
func TestWorksWithIstiosOwnCRDs(t *testing.T) {
	needHarness(t)
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api")
	cmd.Dir = h.root
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	crds := t.TempDir()
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "kubernetes", "customresourcedefinitions.gen.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(crds, "istio-crds.yaml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: h.assets, CRDDirectoryPaths: []string{crds}, ErrorIfCRDPathMissing: true,
		ControlPlaneStartTimeout: 2 * time.Minute}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Stop() })
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, ns := range []string{"istio-system", "portico-system"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := writeKubeconfig(cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	debug := fmt.Sprintf("127.0.0.1:%d", freePort())
	ctrl, err := h.start("gateway-controller-istio-crds", h.bins["gateway-controller"], "--kubeconfig", kubeconfig,
		"--xds-address", fmt.Sprintf("127.0.0.1:%d", freePort()), "--debug-address", debug,
		"--health-address", fmt.Sprintf("127.0.0.1:%d", freePort()), "--metrics-address", "",
		"--leader-election-namespace", "portico-system")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctrl.stop)

	if err := applyYAML(ctx, c, `
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: default-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: counter}
spec:
  gateways: [default-gateway.istio-system.svc.cluster.local]
  hosts: [counter.lab.example.com]
  http: [{route: [{destination: {host: counter, port: {number: 80}}}]}]
---
apiVersion: v1
kind: Service
metadata: {name: counter}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-regex}
spec:
  gateways: [istio-system/default-gateway]
  hosts: [regex.example.com]
  http:
  - match: [{uri: {regex: "/(unclosed"}}]
    route: [{destination: {host: counter}}]
`); err != nil {
		t.Fatal(err)
	}
	statusOf := func(name string) map[string]any {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("networking.istio.io/v1")
		u.SetKind("VirtualService")
		if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: name}, u); err != nil {
			t.Fatal(err)
		}
		st, _ := u.Object["status"].(map[string]any)
		return st
	}
	eventually(t, "counter Accepted", 60*time.Second, func() error {
		if c := condition(statusOf("counter"), "Accepted"); c == nil || c["status"] != "True" {
			return fmt.Errorf("%v", c)
		}
		return nil
	})
	eventually(t, "the invalid regex reported", 30*time.Second, func() error {
		st := statusOf("bad-regex")
		c := condition(st, "Accepted")
		if c == nil || c["status"] != "False" || c["reason"] != "InvalidSpec" || !strings.Contains(fmt.Sprint(st), "invalid regular expression") {
			return fmt.Errorf("%v", st)
		}
		return nil
	})
	resp, err := http.Get("http://" + debug + "/debug/ir")
	if err != nil {
		t.Fatal(err)
	}
	ir, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(ir), "counter.lab.example.com") {
		t.Errorf("the counter route is not in the IR:\n%s", ir)
	}
}
