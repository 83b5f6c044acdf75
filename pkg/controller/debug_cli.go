package controller

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/portico-gateway/portico/pkg/configdump"
	"github.com/portico-gateway/portico/pkg/version"
	"github.com/portico-gateway/portico/pkg/xds"
)

// serveProxyConfigDump answers /debug/config_dump?proxyID=ID[.NAMESPACE]:
// what the controller means that proxy to have now (its class snapshot
// less the secrets it may not receive), in Envoy's dump shape, with the
// versions it was given — istiod's endpoint of the same name, which
// `proxy-status POD` diffs against the proxy's own /config_dump.
func (c *Controller) serveProxyConfigDump(w http.ResponseWriter, r *http.Request, id string) {
	v, err := c.xds.ProxyView(id)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, xds.ErrNoProxy) {
			code = http.StatusNotFound
		}
		http.Error(w, fmt.Sprintf("proxyID: %v", err), code)
		return
	}
	entries := func(typ string) []configdump.Entry {
		out := make([]configdump.Entry, 0, len(v.Resources[typ]))
		for name, res := range v.Resources[typ] {
			out = append(out, configdump.Entry{Name: name, Resource: res, Version: v.Versions[typ]})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out
	}
	configdump.Serve(w, r, configdump.Input{
		ClustersVersion: v.Versions[resourcev3.ClusterType],
		Clusters:        entries(resourcev3.ClusterType),
		Listeners:       entries(resourcev3.ListenerType),
		Routes:          entries(resourcev3.RouteType),
		Secrets:         entries(resourcev3.SecretType),
		Endpoints:       entries(resourcev3.EndpointType),
	})
}

// serveVersion answers /version: the controller's build version, what
// `portico version` reports as the control plane version.
func (c *Controller) serveVersion(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"version": version.Version})
}
