package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portico-gateway/portico/internal/logging"
	"github.com/portico-gateway/portico/internal/proxycmd"
	"github.com/portico-gateway/portico/pkg/proxy"
)

// The standalone default binds Istio's classic NodePorts instead of 80,
// 443 and 3306, so it runs without root; the configuration still says 80.
const defaultPortMap = "80:31380,443:31390,3306:31400"

type embeddedProxyConfig struct {
	disabled bool
	flags    proxycmd.Flags
}

func (e *embeddedProxyConfig) register(fs *flag.FlagSet) {
	fs.BoolVar(&e.disabled, "no-proxy", false, "standalone: serve xDS only, without the embedded edge proxy")
	e.flags.Register(fs, proxycmd.Defaults{PortMap: defaultPortMap, NoXDSFlags: true})
}

// runEmbeddedProxy runs the edge proxy in-process, connected to the xDS
// server over loopback gRPC like any other proxy.
func runEmbeddedProxy(ctx context.Context, log logging.Logger, cfg config, xdsAddr string, labels map[string]string, _ prometheus.Registerer) error {
	opts, err := cfg.embedded.flags.Options(xdsAddr, labels, log)
	if err != nil {
		return err
	}
	if opts.NodeID == "" {
		opts.NodeID = "standalone-proxy"
	}
	p := proxy.New(opts, log.WithName("proxy"))
	go printWelcome(ctx, log, p, cfg)
	return p.Run(ctx)
}

// printWelcome waits for the first configuration and prints how to reach
// each listener.
func printWelcome(ctx context.Context, log logging.Logger, p *proxy.Proxy, cfg config) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(30 * time.Second)
	for !p.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			log.Info("the embedded proxy has no configuration yet; check the status messages above and /debug/status")
			return
		case <-t.C:
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nPortico is serving %s. Try:\n", cfg.configDir)
	names := p.Listeners.Names()
	sort.Strings(names)
	for _, name := range names {
		spec := p.Listeners.Spec(name)
		addr := p.Listeners.BoundAddress(name)
		_, port, _ := net.SplitHostPort(addr)
		for _, c := range spec.Chains {
			switch {
			case c.HTTP != nil && c.TLS == nil:
				fmt.Fprintf(&b, "  HTTP  (%s):  curl -H 'Host: counter.lab.example.com' http://127.0.0.1:%s/\n", name, port)
			case c.HTTP != nil:
				fmt.Fprintf(&b, "  HTTPS (%s):  curl --cacert config/samples/quickstart/certs/ca.crt --resolve counter.lab.example.com:%s:127.0.0.1 https://counter.lab.example.com:%s/\n", name, port, port)
			case c.TCP != nil && c.TLS == nil && len(c.ServerNames) == 0:
				fmt.Fprintf(&b, "  TCP   (%s):  printf 'PING\\n' | nc -q1 127.0.0.1 %s\n", name, port)
			}
		}
	}
	fmt.Fprintf(&b, "  Admin: curl -s %s/config_dump | jq '.configs[3].dynamic_route_configs[].route_config.virtual_hosts[]'\n", "http://"+cfg.embedded.flags.AdminAddress)
	fmt.Fprintf(&b, "  Status of every resource: curl -s http://%s/debug/status\n", cfg.debugAddress)
	log.Info(b.String())
}
