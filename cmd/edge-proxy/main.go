// Command edge-proxy is Portico's Go data plane: it connects to a
// controller's xDS server, serves HTTP, HTTPS and TCP as configured, and
// exposes an Envoy-compatible admin interface on 127.0.0.1:15000.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/portico-gateway/portico/internal/logging"
	"github.com/portico-gateway/portico/internal/proxycmd"
	"github.com/portico-gateway/portico/pkg/proxy"
)

func main() { os.Exit(run(os.Args[1:])) }

// flags are the command line, parsed.
type flags struct {
	proxy   proxycmd.Flags
	xdsAddr string
	labels  map[string]string
	level   string
	logJSON bool
}

func parseFlags(args []string) (*flags, error) {
	fs := flag.NewFlagSet("edge-proxy", flag.ContinueOnError)
	f := &flags{}
	f.proxy.Register(fs, proxycmd.Defaults{StatusAddress: ":15021", TerminationDrain: 5 * time.Second})
	fs.StringVar(&f.xdsAddr, "xds-address", "127.0.0.1:18000", "the controller's xDS (ADS) address")
	labels := fs.String("labels", "istio=ingressgateway", "proxy labels (k=v,k=v) that Gateway selectors match")
	fs.StringVar(&f.level, "log-level", "info", "log level: debug, info, warning, error")
	fs.BoolVar(&f.logJSON, "log-json", false, "log JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if f.labels, err = proxycmd.ParseLabels(*labels); err != nil {
		return nil, fmt.Errorf("--labels: %w", err)
	}
	return f, nil
}

func run(args []string) int {
	f, err := parseFlags(args)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
		}
		return 2
	}
	log, err := logging.New(f.level, !f.logJSON)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	opts, err := f.proxy.Options(f.xdsAddr, f.labels, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("edge proxy starting", "node", opts.NodeID, "xds", opts.XDSAddress, "labels", f.labels)
	if err := proxy.New(opts, log.WithName("proxy")).Run(ctx); err != nil {
		log.Error(err, "edge proxy failed")
		return 1
	}
	return 0
}
