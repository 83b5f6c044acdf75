package controller

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	bind, build prometheus.Histogram
	pushes      prometheus.Counter
	errors      prometheus.Counter
	resources   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 16)
	m := &metrics{
		bind: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "portico_bind_duration_seconds",
			Help: "Time to bind and validate resources into the IR.", Buckets: buckets}),
		build: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "portico_build_duration_seconds",
			Help: "Time from a resource change to every snapshot published.", Buckets: buckets}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{Name: "portico_xds_publishes_total",
			Help: "Snapshots published to proxy classes."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "portico_build_errors_total",
			Help: "Builds whose snapshot was rejected; the previous snapshot kept serving."}),
		resources: prometheus.NewGauge(prometheus.GaugeOpts{Name: "portico_resources",
			Help: "Input resources in the last build."}),
	}
	if reg != nil {
		reg.MustRegister(m.bind, m.build, m.pushes, m.errors, m.resources)
	}
	return m
}
