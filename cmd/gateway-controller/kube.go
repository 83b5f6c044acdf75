package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/portico-gateway/portico/internal/logging"
	"github.com/portico-gateway/portico/internal/proxycmd"
	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/gatewayapi"
	"github.com/portico-gateway/portico/pkg/provider/kube"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

type kubeConfig struct {
	kubeconfig     string
	leaderElect    bool
	leaderNS       string
	healthAddress  string
	metricsAddress string
	nodePorts      string
	targetPorts    string
}

func (k *kubeConfig) register(fs *flag.FlagSet) {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "portico-system"
	}
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "Kubernetes mode: path to a kubeconfig (default: $KUBECONFIG, then in-cluster)")
	fs.BoolVar(&k.leaderElect, "leader-elect", true, "Kubernetes mode: elect one replica to write statuses and Service ports (every replica serves xDS)")
	fs.StringVar(&k.leaderNS, "leader-election-namespace", ns, "Kubernetes mode: namespace of the leader election Lease")
	fs.StringVar(&k.healthAddress, "health-address", ":15021", "Kubernetes mode: address of the /healthz and /readyz probes")
	fs.StringVar(&k.metricsAddress, "metrics-address", ":15020", "Kubernetes mode: address of the Prometheus /metrics endpoint (empty disables)")
	fs.StringVar(&k.nodePorts, "node-ports", "80:31380,443:31390,3306:31400", "Kubernetes mode: preferred node ports for ports added to managed gateway Services")
	fs.StringVar(&k.targetPorts, "target-ports", "", "Kubernetes mode: container ports of the gateway proxies for added Service ports, e.g. 80:8080,443:8443 (default: same as the port)")
}

func restConfig(path string) (*rest.Config, error) {
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	return rest.InClusterConfig()
}

func runKubernetes(ctx context.Context, log logging.Logger, cfg config) error {
	rc, err := restConfig(cfg.kube.kubeconfig)
	if err != nil {
		return fmt.Errorf("connecting to Kubernetes (use --kubeconfig, or --standalone): %w", err)
	}
	nodePorts, err := proxycmd.ParsePortMap(cfg.kube.nodePorts)
	if err != nil {
		return fmt.Errorf("--node-ports: %w", err)
	}
	targetPorts, err := proxycmd.ParsePortMap(cfg.kube.targetPorts)
	if err != nil {
		return fmt.Errorf("--target-ports: %w", err)
	}
	if cfg.xdsAddress == "" {
		cfg.xdsAddress = ":15010"
	}
	prov, err := kube.New(kube.Options{Config: rc, LeaderElection: cfg.kube.leaderElect, LeaderElectionNamespace: cfg.kube.leaderNS,
		HealthAddress: cfg.kube.healthAddress, MetricsAddress: cfg.kube.metricsAddress,
		Holdoff: cfg.debounceAfter, MaxDelay: cfg.debounceMax}, log.WithName("kube"))
	if err != nil {
		return err
	}
	server := xds.NewServer(log.WithName("xds"), gateway.ClassName)
	ports := kube.NewServicePorts(prov, log.WithName("service-ports"), nodePorts, targetPorts)
	writer := kube.NewStatusWriter(prov, ports, log.WithName("status"))
	ctrl := controller.New(log.WithName("controller"), server, writer, controller.Options{
		DomainSuffix: cfg.domainSuffix, ExtraClasses: ports.Classes, Registerer: ctrlmetrics.Registry, RootNamespace: cfg.rootNamespace,
		Translate:  translate.Options{Edge: cfg.edge, AccessLog: cfg.accessLog, Tracing: cfg.tracing},
		Mesh:       cfg.mesh,
		GatewayAPI: gatewayapi.Options{ControllerName: cfg.gatewayController},
	})
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	serveOpts, serving, rootPub, err := kubernetesXDS(ctx, log.WithName("xds-auth"), cs, cfg.kube.leaderNS, cfg.domainSuffix, cfg.xdsSecurity)
	if err != nil {
		return err
	}
	if rootPub != nil {
		// Only the elected replica writes the CA into every namespace.
		if err := prov.Manager().Add(manager.RunnableFunc(rootPub.Run)); err != nil {
			return err
		}
	}
	lis, err := net.Listen("tcp", cfg.xdsAddress)
	if err != nil {
		return fmt.Errorf("listening for xDS on %s: %w", cfg.xdsAddress, err)
	}
	log.Info("Kubernetes mode", "xds", lis.Addr().String(), "leader-election", cfg.kube.leaderElect, "xds-tls", serving != nil)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return server.ServeWith(ctx, lis, serveOpts) })
	if serving != nil {
		g.Go(func() error { return serving.Run(ctx) })
	}
	g.Go(func() error { return ctrl.Run(ctx) })
	g.Go(func() error { return prov.Run(ctx, func(r *resource.Resources) { ctrl.Update(r) }) })
	g.Go(func() error { return writer.Run(ctx) })
	if cfg.debugAddress != "" {
		scraper := cfg.topology.scraper(log.WithName("topology"), kubernetesTargets(ctrl))
		g.Go(func() error { return runScraper(ctx, scraper) })
		g.Go(func() error {
			return serveHTTP(ctx, log.WithName("debug"), cfg.debugAddress, debugHandler(ctrl, ctrlmetrics.Registry, scraper))
		})
	}
	return g.Wait()
}
