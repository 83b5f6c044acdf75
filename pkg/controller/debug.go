package controller

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/configdump"
	"github.com/portico-gateway/portico/pkg/ir"
)

// DebugHandler serves the controller's introspection endpoints:
//
//	/debug/ir?class=      the bound IR per proxy class (YAML; keys redacted)
//	/debug/status         every resource's status (YAML)
//	/debug/proxies        connected proxies and whether they are in sync
//	/debug/config_dump?class=  what a class is sent, in Envoy's dump shape
//	/healthz /readyz /metrics
func (c *Controller) DebugHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/version", c.serveVersion) // debug_cli.go
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-c.Ready():
			fmt.Fprintln(w, "ok")
		default:
			http.Error(w, "no configuration built yet", http.StatusServiceUnavailable)
		}
	})
	if gatherer != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/debug/ir", c.serveIR)
	mux.HandleFunc("/debug/status", c.serveStatus)
	mux.HandleFunc("/debug/proxies", c.serveProxies)
	mux.HandleFunc("/debug/config_dump", c.serveConfigDump)
	// Go's profiler (the debug address is on localhost by default).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "/debug/ir?class=NAME\n/debug/status\n/debug/proxies\n/debug/config_dump?class=NAME&resource=&name_regex=\n/debug/pprof/\n/metrics /healthz /readyz")
	})
	return mux
}

func writeYAML(w http.ResponseWriter, v any) {
	b, err := yaml.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Write(b)
}

func (c *Controller) serveIR(w http.ResponseWriter, r *http.Request) {
	st := c.State()
	if st == nil {
		http.Error(w, "no configuration built yet", http.StatusServiceUnavailable)
		return
	}
	class := r.URL.Query().Get("class")
	var out []*ir.Proxy
	for _, p := range st.Result.Proxies {
		if class == "" || p.Name == class {
			out = append(out, p.Redacted())
		}
	}
	writeYAML(w, map[string]any{"proxies": out, "errors": st.Errors, "excluded": st.Excluded, "versions": st.Versions, "builtAt": st.BuiltAt, "duration": st.Duration.String()})
}

func (c *Controller) serveStatus(w http.ResponseWriter, _ *http.Request) {
	st := c.State()
	if st == nil {
		http.Error(w, "no configuration built yet", http.StatusServiceUnavailable)
		return
	}
	out := map[string]any{"statuses": st.Result.Statuses, "invalid": st.Resources.Invalid}
	if len(st.Result.APIStatuses) > 0 {
		out["gatewayAPIStatuses"] = st.Result.APIStatuses // Gateway API objects, in their own status shape
	}
	if u := c.unselected(st.Result); len(u) > 0 {
		out["warnings"] = u // connected proxies no Gateway selects
	}
	writeYAML(w, out)
}

// serveProxies is the equivalent of `istioctl proxy-status`: every
// connected proxy, per type SYNCED, STALE or NOT SENT ([] when none).
func (c *Controller) serveProxies(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(c.xds.ProxyStatus())
}

func (c *Controller) serveConfigDump(w http.ResponseWriter, r *http.Request) {
	if id := r.URL.Query().Get("proxyID"); id != "" {
		c.serveProxyConfigDump(w, r, id) // one proxy's view: debug_proxyconfig.go
		return
	}
	class := r.URL.Query().Get("class")
	if class == "" {
		if st := c.State(); st != nil && len(st.Versions) == 1 {
			for k := range st.Versions {
				class = k
			}
		}
	}
	snap, err := c.xds.Snapshot(class)
	if err != nil {
		var classes []string
		if st := c.State(); st != nil {
			for k := range st.Versions {
				classes = append(classes, k)
			}
		}
		sort.Strings(classes)
		http.Error(w, fmt.Sprintf("no snapshot for class %q; classes: %s", class, strings.Join(classes, " | ")), http.StatusNotFound)
		return
	}
	entries := func(typ string) []configdump.Entry {
		var out []configdump.Entry
		for name, res := range snap.Originals(typ) {
			out = append(out, configdump.Entry{Name: name, Resource: res, Version: snap.Versions[typ]})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out
	}
	in := configdump.Input{
		ClustersVersion: snap.Versions[resourcev3.ClusterType],
		Clusters:        entries(resourcev3.ClusterType),
		Listeners:       entries(resourcev3.ListenerType),
		Routes:          entries(resourcev3.RouteType),
		Secrets:         entries(resourcev3.SecretType),
		Endpoints:       entries(resourcev3.EndpointType),
	}
	configdump.Serve(w, r, in)
}
