// Command edge-proxy is Portico's Go data plane: it connects to a
// controller's xDS server, serves HTTP, HTTPS and TCP as configured, and
// exposes an Envoy-compatible admin interface on 127.0.0.1:15000.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/portico-gateway/portico/internal/logging"
	"github.com/portico-gateway/portico/internal/proxycmd"
	"github.com/portico-gateway/portico/pkg/proxy"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("edge-proxy", flag.ContinueOnError)
	var pf proxycmd.Flags
	pf.Register(fs, proxycmd.Defaults{StatusAddress: ":15021", TerminationDrain: 5 * time.Second})
	xdsAddr := fs.String("xds-address", "127.0.0.1:18000", "the controller's xDS (ADS) address")
	labels := fs.String("labels", "istio=ingressgateway", "proxy labels (k=v,k=v) that Gateway selectors match")
	level := fs.String("log-level", "info", "log level: debug, info, warning, error")
	logJSON := fs.Bool("log-json", false, "log JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log, err := logging.New(*level, !*logJSON)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	lbls := map[string]string{}
	for _, kv := range strings.Split(*labels, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k != "" {
			lbls[k] = v
		} else if strings.TrimSpace(kv) != "" {
			fmt.Fprintf(os.Stderr, "--labels: invalid label %q\n", kv)
			return 2
		}
	}
	opts, err := pf.Options(*xdsAddr, lbls, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("edge proxy starting", "node", opts.NodeID, "xds", opts.XDSAddress, "labels", *labels)
	if err := proxy.New(opts, log.WithName("proxy")).Run(ctx); err != nil {
		log.Error(err, "edge proxy failed")
		return 1
	}
	return 0
}
