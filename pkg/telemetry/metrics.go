package telemetry

import (
	"fmt"
	"sort"

	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"

	"github.com/portico-gateway/portico/pkg/translate"
)

// PrometheusProvider is the metrics provider Portico serves: the proxy's
// Prometheus endpoint. It is Istio's default (defaultProviders.metrics).
const PrometheusProvider = "prometheus"

// metricNames are Istio's metric enum values and their stats.PluginConfig
// names (istiod's metricToPrometheusMetric), those Portico records.
var metricNames = map[telemetryv1alpha1.MetricSelector_IstioMetric]string{
	telemetryv1alpha1.MetricSelector_REQUEST_COUNT:          "requests_total",
	telemetryv1alpha1.MetricSelector_REQUEST_DURATION:       "request_duration_milliseconds",
	telemetryv1alpha1.MetricSelector_REQUEST_SIZE:           "request_bytes",
	telemetryv1alpha1.MetricSelector_RESPONSE_SIZE:          "response_bytes",
	telemetryv1alpha1.MetricSelector_TCP_OPENED_CONNECTIONS: "tcp_connections_opened_total",
	telemetryv1alpha1.MetricSelector_TCP_CLOSED_CONNECTIONS: "tcp_connections_closed_total",
	telemetryv1alpha1.MetricSelector_TCP_SENT_BYTES:         "tcp_sent_bytes_total",
	telemetryv1alpha1.MetricSelector_TCP_RECEIVED_BYTES:     "tcp_received_bytes_total",
}

// metricOverride is one metric's merged override.
type metricOverride struct {
	drop   *bool
	remove map[string]bool
}

// Metrics resolves the gateway's Telemetry metrics overrides with istiod's
// merge (pilot's mergeMetrics), for the prometheus provider and a gateway
// (CLIENT) workload: entries apply in order, less specific resources
// first; an override's metric defaults to ALL_METRICS; `disabled` drops
// the metric (ALL_METRICS disabled drops every one, until a later
// override re-enables one); tagOverrides REMOVE removes a label. It
// returns nil when no applicable Telemetry sets metrics: every metric,
// every label. Problems name what Portico does not honour: UPSERT
// (labels computed by CEL per request), custom metrics, providers other
// than prometheus, gRPC message counts.
func Metrics(m *Mesh, s Scope, tels []Telemetry) (*translate.MetricsOverrides, []Problem) {
	if m == nil {
		m = &Mesh{}
	}
	defaults := m.MetricsDefaults
	if len(defaults) == 0 {
		defaults = []string{PrometheusProvider}
	}
	var problems []Problem
	var any bool
	allDropped := false
	overrides := map[string]*metricOverride{}
	parent := defaults
	for _, t := range applicable(s, tels) {
		for i, mt := range t.Spec.GetMetrics() {
			any = true
			field := fmt.Sprintf("spec.metrics[%d]", i)
			names := make([]string, 0, len(mt.GetProviders()))
			for j, p := range mt.GetProviders() {
				names = append(names, p.GetName())
				if p.GetName() != PrometheusProvider {
					problems = append(problems, Problem{Namespace: t.Namespace, Name: t.Name, Field: fmt.Sprintf("%s.providers[%d]", field, j),
						Kind: Unsupported, Message: fmt.Sprintf("metrics provider %q: Portico serves Istio's metrics to Prometheus only", p.GetName())})
				}
			}
			if len(names) == 0 {
				names = parent
			}
			parent = names
			if !contains(names, PrometheusProvider) {
				continue
			}
			if mt.GetReportingInterval() != nil {
				problems = append(problems, Problem{Namespace: t.Namespace, Name: t.Name, Field: field + ".reportingInterval", Kind: Unsupported,
					Message: "TCP metrics are updated as bytes flow; a reporting interval does not apply"})
			}
			for j, o := range mt.GetOverrides() {
				of := fmt.Sprintf("%s.overrides[%d]", field, j)
				mode := o.GetMatch().GetMode()
				if mode == telemetryv1alpha1.WorkloadMode_SERVER {
					continue // a gateway reports as a client
				}
				var targets []string
				switch {
				case o.GetMatch().GetCustomMetric() != "":
					problems = append(problems, Problem{Namespace: t.Namespace, Name: t.Name, Field: of + ".match.customMetric", Kind: Unsupported,
						Message: fmt.Sprintf("custom metric %q: Portico records Istio's standard metrics only", o.GetMatch().GetCustomMetric())})
					continue
				case o.GetMatch().GetMetric() == telemetryv1alpha1.MetricSelector_ALL_METRICS:
					if o.GetDisabled().GetValue() {
						allDropped = true
						continue
					}
					for _, n := range metricNames {
						targets = append(targets, n)
					}
				default:
					n, ok := metricNames[o.GetMatch().GetMetric()]
					if !ok {
						problems = append(problems, Problem{Namespace: t.Namespace, Name: t.Name, Field: of + ".match.metric", Kind: Unsupported,
							Message: fmt.Sprintf("%s is not recorded by Portico's proxy", o.GetMatch().GetMetric())})
						continue
					}
					targets = []string{n}
				}
				allDropped = false
				for _, n := range targets {
					mo := overrides[n]
					if mo == nil {
						mo = &metricOverride{remove: map[string]bool{}}
						overrides[n] = mo
					}
					if d := o.GetDisabled(); d != nil {
						v := d.GetValue()
						mo.drop = &v
					}
					for tag, to := range o.GetTagOverrides() {
						switch to.GetOperation() {
						case telemetryv1alpha1.MetricsOverrides_TagOverride_REMOVE:
							mo.remove[tag] = true
						default:
							delete(mo.remove, tag)
						}
					}
				}
				tags := make([]string, 0, len(o.GetTagOverrides()))
				for tag := range o.GetTagOverrides() {
					tags = append(tags, tag)
				}
				sort.Strings(tags)
				for _, tag := range tags {
					if o.GetTagOverrides()[tag].GetOperation() == telemetryv1alpha1.MetricsOverrides_TagOverride_UPSERT {
						problems = append(problems, Problem{Namespace: t.Namespace, Name: t.Name, Field: fmt.Sprintf("%s.tagOverrides[%s]", of, tag),
							Kind: Unsupported, Message: "UPSERT (a label computed per request) is not supported; only REMOVE"})
					}
				}
			}
		}
	}
	if !any {
		return nil, problems
	}
	out := &translate.MetricsOverrides{}
	if allDropped {
		out.Metrics = []translate.MetricOverride{{Drop: true}}
		return out, problems
	}
	names := make([]string, 0, len(overrides))
	for n := range overrides {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mo := overrides[n]
		r := translate.MetricOverride{Name: n, Drop: mo.drop != nil && *mo.drop}
		for tag := range mo.remove {
			r.TagsToRemove = append(r.TagsToRemove, tag)
		}
		sort.Strings(r.TagsToRemove)
		if r.Drop || len(r.TagsToRemove) > 0 {
			out.Metrics = append(out.Metrics, r)
		}
	}
	return out, problems
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
