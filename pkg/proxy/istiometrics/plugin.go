package istiometrics

import (
	"fmt"
	"slices"

	statspb "istio.io/api/envoy/extensions/stats"
)

// FilterName is the HTTP filter istiod configures Istio's metrics with;
// its typed_config is a stats.PluginConfig. The proxy records the
// metrics itself; the filter carries a Telemetry resource's overrides.
const FilterName = "istio.stats"

// Names are Istio's metric names in stats.PluginConfig (without the
// istio_ prefix), as istiod writes them.
var Names = []string{"requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes",
	"tcp_connections_opened_total", "tcp_connections_closed_total", "tcp_sent_bytes_total", "tcp_received_bytes_total"}

// FromPluginConfig compiles a stats.PluginConfig into overrides. What the
// proxy cannot honour is an error, so the listener is NACKed rather than
// reported differently from what was asked: new dimensions (Telemetry's
// UPSERT tag overrides, CEL values), metric definitions, conditional
// overrides, and metrics the proxy does not have.
func FromPluginConfig(c *statspb.PluginConfig) (*Overrides, error) {
	if len(c.GetDefinitions()) > 0 {
		return nil, fmt.Errorf("%s: custom metric definitions are not supported", FilterName)
	}
	o := &Overrides{Drop: map[string]bool{}, Remove: map[string][]string{}}
	for i, m := range c.GetMetrics() {
		if len(m.GetDimensions()) > 0 {
			return nil, fmt.Errorf("%s: metrics[%d].dimensions: adding or changing labels (UPSERT) is not supported; only removing them", FilterName, i)
		}
		if m.GetMatch() != "" {
			return nil, fmt.Errorf("%s: metrics[%d].match is not supported", FilterName, i)
		}
		names := Names
		if m.GetName() != "" {
			if !slices.Contains(Names, m.GetName()) {
				return nil, fmt.Errorf("%s: metrics[%d].name %q is not one of Istio's standard metrics the proxy records", FilterName, i, m.GetName())
			}
			names = []string{m.GetName()}
		}
		for _, n := range names {
			if m.GetDrop() {
				o.Drop[n] = true
			}
			for _, t := range m.GetTagsToRemove() {
				if !slices.Contains(o.Remove[n], t) {
					o.Remove[n] = append(o.Remove[n], t)
				}
			}
		}
	}
	return o, nil
}
