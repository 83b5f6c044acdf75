package main

import (
	"context"
	"flag"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/topology"
)

// topologyConfig tunes the topology page's stats readings (README,
// Observability, Topology page).
type topologyConfig struct {
	interval, window time.Duration
}

func (t *topologyConfig) register(fs *flag.FlagSet) {
	fs.DurationVar(&t.interval, "topology-scrape-interval", 5*time.Second, "how often the controller reads its proxies' stats for /debug/topology (0 disables reading)")
	fs.DurationVar(&t.window, "topology-window", time.Minute, "span /debug/topology computes request rates, error rates and p99 over")
}

// scraper returns the stats reader of the topology page, nil when disabled.
func (t *topologyConfig) scraper(log logr.Logger, targets func() []topology.Target) *topology.Scraper {
	if t.interval <= 0 {
		return nil
	}
	return topology.NewScraper(topology.ScraperOptions{Targets: targets, Interval: t.interval, Window: t.window, Log: log})
}

// debugHandler is the controller's debug handler with the topology page
// (/debug/topology, /debug/topology.json) mounted next to it.
func debugHandler(ctrl *controller.Controller, gatherer prometheus.Gatherer, scraper *topology.Scraper) http.Handler {
	mux := http.NewServeMux()
	(&topology.Handler{State: ctrl.State, Scraper: scraper}).Register(mux)
	mux.Handle("/", ctrl.DebugHandler(gatherer))
	return mux
}

// runScraper reads stats until ctx ends (a nil scraper does nothing).
func runScraper(ctx context.Context, s *topology.Scraper) error {
	if s == nil {
		return nil
	}
	return s.Run(ctx)
}

// standaloneTargets: the embedded proxy, on its admin port (which also
// serves /clusters, hence per-endpoint numbers).
func standaloneTargets(cfg config, class string) func() []topology.Target {
	admin := cfg.embedded.flags.AdminAddress
	node := cfg.embedded.flags.NodeID
	if node == "" {
		node = "standalone-proxy"
	}
	return func() []topology.Target {
		if cfg.embedded.disabled || admin == "" {
			return nil
		}
		return []topology.Target{{Class: class, Proxy: node, StatsURL: "http://" + admin + "/stats/prometheus", ClustersURL: "http://" + admin + "/clusters"}}
	}
}

// kubernetesTargets: the gateway pods of every published class, found
// through their Services' EndpointSlices, on the status port.
func kubernetesTargets(ctrl *controller.Controller) func() []topology.Target {
	return func() []topology.Target {
		st := ctrl.State()
		if st == nil || st.Result == nil {
			return nil
		}
		classes := map[string]map[string]string{}
		for _, p := range st.Result.Proxies {
			if _, ok := st.Versions[p.Name]; ok {
				classes[p.Name] = p.Labels
			}
		}
		return topology.KubernetesTargets(st.Resources, classes, 15021)
	}
}
