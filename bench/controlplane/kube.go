package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/scale"
)

// kubeAssets builds (once, cached) the kube-apiserver and etcd the e2e
// tests use.
func kubeAssets() (string, error) {
	out, err := exec.Command("hack/build-e2e-bins.sh").Output()
	if err != nil {
		return "", fmt.Errorf("hack/build-e2e-bins.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// kubernetes: a real API server with the configuration applied; a change
// is an update of the probe VirtualService through the API.
// onePort puts every VirtualService on one Gateway port (see standalone).
func (b *bench) kubernetes(ctx context.Context, routes int, onePort bool) (*system, func(), error) {
	assets, err := kubeAssets()
	if err != nil {
		return nil, nil, err
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets, CRDDirectoryPaths: []string{"config/crd"}, ErrorIfCRDPathMissing: true,
		ControlPlaneStartTimeout: 2 * time.Minute}
	// envtest's default Service range is a /24: too small for the 1,200
	// Services of 3,000 routes. A cluster's usual range instead.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { env.Stop() }
	fail := func(err error) (*system, func(), error) { cleanup(); return nil, nil, err }
	cfg.QPS, cfg.Burst = 2000, 4000
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fail(err)
	}
	o := scale.Options{VirtualServices: scale.VirtualServicesForRoutes(routes)}
	if onePort {
		o.Gateways = 1
	}
	for _, ns := range []string{"istio-system", "portico-system", "ns-0", "ns-1", "ns-2", "ns-3", "ns-4", "ns-5", "ns-6", "ns-7", "ns-8", "ns-9"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return fail(err)
		}
	}
	docs := append(o.All(), probeDocs(0, b.backendPort)...)
	start := time.Now()
	if err := applyAll(ctx, c, docs); err != nil {
		return fail(err)
	}
	fmt.Fprintf(os.Stderr, "kubernetes: %d objects applied in %v\n", len(docs), time.Since(start).Round(time.Millisecond))

	kubeconfig := filepath.Join(b.work, fmt.Sprintf("kubeconfig-%d", routes))
	if err := writeKubeconfig(cfg, kubeconfig); err != nil {
		return fail(err)
	}
	xds := freeAddr()
	s := &system{debug: freeAddr()}
	ctrl, err := b.start("gateway-controller", append([]string{"--kubeconfig", kubeconfig, "--xds-address", xds, "--debug-address", s.debug,
		"--health-address", freeAddr(), "--metrics-address", "", "--leader-election-namespace", "portico-system",
		// The bench measures propagation, not xDS authentication (the
		// e2e tests cover that): the proxy connects in plaintext.
		"--xds-insecure"}, b.controllerArgs...)...)
	if err != nil {
		return fail(err)
	}
	s.procs = append(s.procs, ctrl)
	if err := b.startProxy(s, xds); err != nil {
		s.stop()
		return fail(err)
	}
	s.change = func(rev int) error {
		patch, err := yaml.YAMLToJSON([]byte(probeDocs(rev, b.backendPort)[0].YAML))
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("networking.istio.io/v1")
		u.SetKind("VirtualService")
		u.SetNamespace("default")
		u.SetName("probe")
		return c.Patch(ctx, u, client.RawPatch(types.MergePatchType, patch))
	}
	return s, cleanup, nil
}

// applyAll creates documents with a few concurrent clients.
func applyAll(ctx context.Context, c client.Client, docs []scale.Document) error {
	work := make(chan scale.Document)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				u := &unstructured.Unstructured{}
				if err := yaml.Unmarshal([]byte(d.YAML), &u.Object); err != nil {
					errs <- err
					return
				}
				if err := c.Create(ctx, u); err != nil {
					errs <- fmt.Errorf("creating %s %s/%s: %w", d.Kind, d.Namespace, d.Name, err)
					return
				}
			}
		}()
	}
	var err error
feed:
	for _, d := range docs {
		select {
		case work <- d:
		case err = <-errs:
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	c := clientcmdapi.NewConfig()
	c.Clusters["bench"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	c.AuthInfos["bench"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	c.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "bench"}
	c.CurrentContext = "bench"
	return clientcmd.WriteToFile(*c, path)
}
