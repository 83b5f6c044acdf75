package translate

import (
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	statspb "istio.io/api/envoy/extensions/stats"
)

// IstioStatsFilter is the HTTP filter istiod configures Istio's standard
// metrics with (a stats.PluginConfig).
const IstioStatsFilter = "istio.stats"

// MetricsOverrides are the Telemetry metrics overrides for a gateway, in
// stats.PluginConfig's terms: per Istio metric name (requests_total, …;
// "" for every metric), whether it is dropped and which labels are
// removed. Nil: no Telemetry sets metrics, and no filter is emitted.
type MetricsOverrides struct {
	Metrics []MetricOverride
}

// MetricOverride is one stats.MetricConfig.
type MetricOverride struct {
	Name         string
	Drop         bool
	TagsToRemove []string
}

// statsFilter is the istio.stats HTTP filter carrying the overrides (nil
// without Telemetry metrics). A gateway disables the Host header fallback
// for destination_service, as istiod sets for gateways.
func (t *translator) statsFilter() *hcmv3.HttpFilter {
	mo := t.opts.Metrics
	if mo == nil {
		return nil
	}
	c := &statspb.PluginConfig{DisableHostHeaderFallback: true}
	for _, m := range mo.Metrics {
		c.Metrics = append(c.Metrics, &statspb.MetricConfig{Name: m.Name, Drop: m.Drop, TagsToRemove: m.TagsToRemove})
	}
	return &hcmv3.HttpFilter{Name: IstioStatsFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: toAny(c)}}
}

// SetMetrics replaces the Telemetry metrics overrides of the next
// translations (nil: none).
func (tr *Translator) SetMetrics(m *MetricsOverrides) { tr.t.opts.Metrics = m }
