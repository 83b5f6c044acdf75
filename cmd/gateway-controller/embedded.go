package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
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
// each listener, with the hosts and certificates actually configured.
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
	log.Info(welcome(cfg.configDir, p.Serving(), p.Problems(), "http://"+cfg.embedded.flags.AdminAddress, cfg.debugAddress))
}

// welcome builds the "Try:" text from what the proxy serves.
func welcome(configDir string, serving []proxy.ServingListener, problems map[string]string, adminURL, debugAddress string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nPortico is serving %s. Try:\n", configDir)
	for _, l := range serving {
		for _, c := range l.Chains {
			host := exampleHost(c.Hosts)
			switch c.Kind {
			case "http":
				hdr := ""
				if host != "" {
					hdr = fmt.Sprintf("-H 'Host: %s' ", host)
				}
				fmt.Fprintf(&b, "  HTTP  (%s):  curl %shttp://127.0.0.1:%d/\n", l.Name, hdr, l.BoundPort)
			case "https":
				if host == "" {
					host = "localhost"
				}
				fmt.Fprintf(&b, "  HTTPS (%s):  curl %s--resolve %s:%d:127.0.0.1 https://%s:%d/\n", l.Name, caFlag(c.CertFile), host, l.BoundPort, host, l.BoundPort)
			case "tls", "passthrough":
				sni := ""
				if host != "" {
					sni = " -servername " + host
				}
				fmt.Fprintf(&b, "  TLS   (%s):  openssl s_client -connect 127.0.0.1:%d%s\n", l.Name, l.BoundPort, sni)
			case "tcp":
				fmt.Fprintf(&b, "  TCP   (%s):  printf 'PING\\n' | nc -q1 127.0.0.1 %d\n", l.Name, l.BoundPort)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(problems)) {
		fmt.Fprintf(&b, "  Not served (%s): %s\n", name, problems[name])
	}
	fmt.Fprintf(&b, "  Admin: curl -s %s/config_dump | jq '.configs[3].dynamic_route_configs[].route_config.virtual_hosts[]'\n", adminURL)
	if debugAddress != "" {
		fmt.Fprintf(&b, "  Status of every resource: curl -s http://%s/debug/status\n", debugAddress)
		fmt.Fprintf(&b, "  Topology, live rates and problems: http://%s/debug/topology\n", debugAddress)
	}
	return b.String()
}

// exampleHost picks a name a client can use: the first exact one, else a
// wildcard made concrete ("*.example.com" → "www.example.com"); "" when
// any name will do.
func exampleHost(hosts []string) string {
	for _, h := range hosts {
		if !strings.Contains(h, "*") && !strings.Contains(h, ":") {
			return h
		}
	}
	for _, h := range hosts {
		if rest, ok := strings.CutPrefix(h, "*."); ok && !strings.Contains(rest, ":") {
			return "www." + rest
		}
	}
	return ""
}

// caFlag is how curl should trust a certificate read from a file: the
// ca.crt next to it when there is one, else not verified (-k).
func caFlag(certFile string) string {
	if certFile != "" {
		ca := filepath.Join(filepath.Dir(certFile), "ca.crt")
		if fi, err := os.Stat(ca); err == nil && fi.Mode().IsRegular() {
			return "--cacert " + ca + " "
		}
	}
	return "-k "
}
