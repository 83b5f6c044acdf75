// Command gateway-controller binds Istio Gateway, VirtualService,
// DestinationRule and ServiceEntry resources and serves them to gateway
// proxies as Envoy xDS.
//
// In standalone mode (--standalone --config-dir DIR) it reads YAML from a
// directory and runs an embedded edge proxy: one process, nothing else
// needed. In Kubernetes mode it watches the API server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/portico-gateway/portico/pkg/telemetry"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/portico-gateway/portico/internal/logging"
	"github.com/portico-gateway/portico/internal/proxycmd"
	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/gatewayapi"
	"github.com/portico-gateway/portico/pkg/provider/file"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

type config struct {
	standalone   bool
	configDir    string
	xdsAddress   string
	debugAddress string
	logLevel     string
	logJSON      bool
	proxyLabels  string
	// gatewayController is the GatewayClass controllerName served.
	gatewayController string
	domainSuffix      string
	// debounceAfter and debounceMax batch changes before a rebuild.
	debounceAfter time.Duration
	debounceMax   time.Duration
	// meshConfig and edgeConfig are files: Istio's MeshConfig, and the
	// HTTP listeners' edge timeouts and limits.
	meshConfig string
	// rootNamespace is Istio's root namespace for security policies.
	rootNamespace string
	edgeConfig    string
	edge          translate.Edge
	// accessLog is meshConfig's access log (nil: Portico's default).
	accessLog *translate.AccessLog
	// tracing is meshConfig's tracing (nil: none). See tracing.go.
	tracing *translate.Tracing
	// mesh is meshConfig's tracing providers, for Telemetry resources.
	mesh        *telemetry.Mesh
	embedded    embeddedProxyConfig
	kube        kubeConfig
	xdsSecurity xdsSecurityConfig
	topology    topologyConfig
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("gateway-controller", flag.ContinueOnError)
	fs.BoolVar(&cfg.standalone, "standalone", false, "read configuration from --config-dir instead of Kubernetes, and run an embedded edge proxy")
	fs.StringVar(&cfg.configDir, "config-dir", "config/samples/quickstart", "standalone: directory of YAML resources (watched, recursive)")
	fs.StringVar(&cfg.xdsAddress, "xds-address", "", "address of the xDS gRPC server (default 127.0.0.1:18000 standalone, :15010 in Kubernetes)")
	fs.StringVar(&cfg.debugAddress, "debug-address", "127.0.0.1:15014", "address of /debug, /metrics, /healthz and /readyz (empty disables)")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warning, error")
	fs.BoolVar(&cfg.logJSON, "log-json", false, "log JSON instead of text")
	fs.StringVar(&cfg.proxyLabels, "proxy-labels", "istio=ingressgateway", "standalone: labels of the embedded proxy (k=v,k=v), matched by Gateway selectors")
	fs.StringVar(&cfg.domainSuffix, "domain-suffix", "cluster.local", "DNS suffix completing short service names")
	// A rebuild costs what the change touches, so there is little to gain
	// from waiting long for more changes (Istio waits 100 ms).
	fs.DurationVar(&cfg.debounceAfter, "debounce-after", 10*time.Millisecond, "wait this long after a change for more before rebuilding (Istio's PILOT_DEBOUNCE_AFTER); in Kubernetes mode a change after this long without one is read at once")
	fs.DurationVar(&cfg.debounceMax, "debounce-max", time.Second, "never postpone a rebuild more than this after the first change of a burst")
	fs.StringVar(&cfg.meshConfig, "mesh-config", "", "Istio MeshConfig YAML (as istiod's /etc/istio/config/mesh); read: pathNormalization, defaultConfig.gatewayTopology.numTrustedProxies, accessLogFile, accessLogEncoding, accessLogFormat, enableTracing, extensionProviders (opentelemetry, zipkin, envoyFileAccessLog), defaultProviders.tracing/accessLogging, defaultConfig.tracing.sampling")
	fs.StringVar(&cfg.gatewayController, "gateway-controller-name", gatewayapi.DefaultControllerName, "Gateway API: the GatewayClass spec.controllerName this controller serves")
	fs.StringVar(&cfg.rootNamespace, "root-namespace", "", "Istio's root namespace: its RequestAuthentications/AuthorizationPolicies without selector apply to every gateway (default: the MeshConfig's rootNamespace, else istio-system)")
	fs.StringVar(&cfg.edgeConfig, "edge-config", "", "YAML file overriding the HTTP listeners' edge timeouts and limits (see README, Security)")
	cfg.embedded.register(fs)
	cfg.kube.register(fs)
	cfg.xdsSecurity.register(fs)
	cfg.topology.register(fs)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	root, err := rootNamespace(cfg.rootNamespace, cfg.meshConfig)
	if err != nil {
		return cfg, err
	}
	cfg.rootNamespace = root
	edge, err := loadEdge(cfg.meshConfig, cfg.edgeConfig)
	if err != nil {
		return cfg, err
	}
	cfg.edge = edge
	if cfg.accessLog, err = loadAccessLog(cfg.meshConfig); err != nil {
		return cfg, err
	}
	if cfg.mesh, cfg.tracing, err = loadTracing(cfg.meshConfig, cfg.rootNamespace); err != nil {
		return cfg, err
	}
	// Telemetry's built-in "envoy" access log provider is formatted by
	// meshConfig's accessLogEncoding/accessLogFormat.
	cfg.mesh.MeshAccessLog = cfg.accessLog
	return cfg, nil
}

func run(args []string) int {
	cfg, err := parseFlags(args)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
		}
		return 2
	}
	log, err := logging.New(cfg.logLevel, !cfg.logJSON)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.standalone {
		err = runStandalone(ctx, log, cfg)
	} else {
		err = runKubernetes(ctx, log, cfg)
	}
	if err != nil {
		log.Error(err, "gateway-controller failed")
		return 1
	}
	return 0
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveHTTP runs an HTTP server until ctx ends.
func serveHTTP(ctx context.Context, log logr.Logger, addr string, h http.Handler) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("serving", "address", lis.Addr().String())
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func runStandalone(ctx context.Context, log logging.Logger, cfg config) error {
	labels, err := proxycmd.ParseLabels(cfg.proxyLabels)
	if err != nil {
		return fmt.Errorf("--proxy-labels: %w", err)
	}
	if fi, err := os.Stat(cfg.configDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("--config-dir %q is not a directory", cfg.configDir)
	}
	if cfg.xdsAddress == "" {
		cfg.xdsAddress = "127.0.0.1:18000"
	}
	reg := newRegistry()
	server := xds.NewServer(log.WithName("xds"), gateway.ClassName)
	ctrl := controller.New(log.WithName("controller"), server, controller.NewLogSink(log.WithName("status")), controller.Options{
		StaticClasses: []map[string]string{labels},
		DomainSuffix:  cfg.domainSuffix,
		RootNamespace: cfg.rootNamespace,
		Registerer:    reg,
		Translate:     translate.Options{Edge: cfg.edge, AccessLog: cfg.accessLog, Tracing: cfg.tracing},
		Mesh:          cfg.mesh,
		// Gateway API Gateways attach to the embedded proxy by default.
		GatewayAPI: gatewayapi.Options{ControllerName: cfg.gatewayController, DefaultSelector: labels},
	})
	serveOpts, private, err := standaloneXDS(log.WithName("xds"), cfg.xdsAddress, cfg.xdsSecurity)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.xdsAddress)
	if err != nil {
		return fmt.Errorf("listening for xDS on %s: %w", cfg.xdsAddress, err)
	}
	log.Info("standalone mode", "config-dir", cfg.configDir, "xds", lis.Addr().String(), "proxy-labels", cfg.proxyLabels)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return server.ServeWith(ctx, lis, serveOpts) })
	embeddedAddr := lis.Addr().String()
	if private && !cfg.embedded.disabled {
		// The public port wants credentials; the embedded proxy talks over
		// a socket only this user can reach.
		plis, addr, cleanup, err := privateListener()
		if err != nil {
			return fmt.Errorf("listening for the embedded proxy: %w", err)
		}
		defer cleanup()
		embeddedAddr = addr
		g.Go(func() error { return server.Serve(ctx, plis) })
	}
	g.Go(func() error { return ctrl.Run(ctx) })
	g.Go(func() error {
		p := file.New(cfg.configDir, log.WithName("file"), file.Options{Holdoff: cfg.debounceAfter, MaxDelay: cfg.debounceMax})
		return p.Run(ctx, func(r *resource.Resources) { ctrl.Update(r) })
	})
	if cfg.debugAddress != "" {
		scraper := cfg.topology.scraper(log.WithName("topology"), standaloneTargets(cfg, gateway.ClassName(labels)))
		g.Go(func() error { return runScraper(ctx, scraper) })
		g.Go(func() error {
			return serveHTTP(ctx, log.WithName("debug"), cfg.debugAddress, debugHandler(ctrl, reg, scraper))
		})
	}
	if !cfg.embedded.disabled {
		g.Go(func() error { return runEmbeddedProxy(ctx, log, cfg, embeddedAddr, labels, reg) })
	}
	return g.Wait()
}
