package istiometrics

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// Protocol is Istio's request_protocol.
type Protocol uint8

// Protocols.
const (
	HTTP Protocol = iota
	GRPC
	TCP
)

func (p Protocol) String() string {
	switch p {
	case GRPC:
		return "grpc"
	case TCP:
		return "tcp"
	}
	return "http"
}

// Buckets are the histogram bounds: Envoy's default buckets, which Istio's
// bootstrap leaves in place (no histogram_bucket_settings unless the
// sidecar.istio.io/statsHistogramBuckets annotation asks), for durations
// in milliseconds and sizes in bytes alike.
var Buckets = [...]float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// histogram counts values in Buckets; sum is in units of 1/scale.
type histogram struct {
	counts [len(Buckets) + 1]atomic.Uint64
	sum    atomic.Uint64
}

func (h *histogram) observe(v float64, raw uint64) {
	h.counts[sort.SearchFloat64s(Buckets[:], v)].Add(1)
	h.sum.Add(raw)
}

// dest is an interned destination label set.
type dest struct {
	d      Destination
	labels string // rendered destination_* labels
}

// destKey identifies a destination by the configuration objects it comes
// from; equal label sets from different objects share one *dest.
type destKey struct {
	cluster *upstream.ClusterConfig
	ep      *upstream.EndpointMeta
}

type httpKey struct {
	d     *dest
	proto Protocol
	code  uint16
	grpc  int16
	flags accesslog.Flags
}

type httpSeries struct {
	labels    string
	requests  atomic.Uint64
	duration  histogram // sum in microseconds
	reqBytes  histogram
	respBytes histogram
}

type tcpKey struct {
	d     *dest
	flags accesslog.Flags
}

// TCPSeries are one TCP label set's counters.
type TCPSeries struct {
	labels                         string
	Opened, Closed, Sent, Received stats.Counter
}

// maxDestKeys bounds the destination cache: every CDS/EDS update makes new
// configuration objects, and keys to replaced ones are dropped wholesale
// once the cache is this big (the interned label sets stay).
const maxDestKeys = 4096

// Metrics records Istio's standard metrics for one proxy.
type Metrics struct {
	source  string // rendered reporter and source_* labels
	cluster string // the proxy's own cluster
	version string

	mu       sync.Mutex // serialises the copy-on-write updates
	dests    atomic.Pointer[map[destKey]*dest]
	interned map[string]*dest
	http     atomic.Pointer[map[httpKey]*httpSeries]
	tcp      atomic.Pointer[map[tcpKey]*TCPSeries]
	// overrides are a Telemetry's metrics overrides (nil: none).
	overrides atomic.Pointer[Overrides]
}

// New returns the metrics of a proxy whose own workload is source;
// version is reported as istio_build's tag.
func New(source Workload, version string) *Metrics {
	source = source.withDefaults()
	var l labelWriter
	sourceLabels(&l, source)
	m := &Metrics{source: l.b.String(), cluster: source.Cluster, version: version, interned: map[string]*dest{}}
	m.dests.Store(&map[destKey]*dest{})
	m.http.Store(&map[httpKey]*httpSeries{})
	m.tcp.Store(&map[tcpKey]*TCPSeries{})
	return m
}

// destination returns the interned destination of a cluster and host.
func (m *Metrics) destination(c *upstream.Cluster, h *upstream.Host) *dest {
	var k destKey
	if c != nil {
		k.cluster = c.Config()
	}
	if h != nil {
		k.ep = h.Meta()
	}
	if d, ok := (*m.dests.Load())[k]; ok {
		return d
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.dests.Load()
	if d, ok := old[k]; ok {
		return d
	}
	dd := DestinationOf(k.cluster, k.ep, m.cluster)
	var l labelWriter
	destinationLabels(&l, dd)
	d := m.interned[l.b.String()]
	if d == nil {
		d = &dest{d: dd, labels: l.b.String()}
		m.interned[d.labels] = d
	}
	next := make(map[destKey]*dest, len(old)+1)
	if len(old) < maxDestKeys {
		for kk, v := range old {
			next[kk] = v
		}
	}
	next[k] = d
	m.dests.Store(&next)
	return d
}

// Request is one finished HTTP request.
type Request struct {
	// Cluster the request was routed to (nil: none) and Host the endpoint
	// that answered (nil: none was chosen).
	Cluster       *upstream.Cluster
	Host          *upstream.Host
	Protocol      Protocol
	Code          int
	GRPCStatus    int // -1: none
	Flags         accesslog.Flags
	Duration      time.Duration
	RequestBytes  int64
	ResponseBytes int64
}

// RecordHTTP counts a finished request.
func (m *Metrics) RecordHTTP(r *Request) {
	k := httpKey{d: m.destination(r.Cluster, r.Host), proto: r.Protocol, grpc: -1, flags: r.Flags}
	if r.Code > 0 && r.Code < 1000 {
		k.code = uint16(r.Code)
	}
	if r.GRPCStatus >= 0 && r.GRPCStatus < 1000 {
		k.grpc = int16(r.GRPCStatus)
	}
	s, ok := (*m.http.Load())[k]
	if !ok {
		s = m.newHTTPSeries(k)
	}
	s.requests.Add(1)
	us := r.Duration.Microseconds()
	s.duration.observe(float64(us)/1000, uint64(max(us, 0)))
	s.reqBytes.observe(float64(r.RequestBytes), uint64(max(r.RequestBytes, 0)))
	s.respBytes.observe(float64(r.ResponseBytes), uint64(max(r.ResponseBytes, 0)))
}

func (m *Metrics) newHTTPSeries(k httpKey) *httpSeries {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.http.Load()
	if s, ok := old[k]; ok {
		return s
	}
	grpc := ""
	if k.grpc >= 0 {
		grpc = strconv.Itoa(int(k.grpc))
	}
	var l labelWriter
	l.b.WriteString(m.source)
	l.b.WriteByte(',')
	l.b.WriteString(k.d.labels)
	l.add("request_protocol", k.proto.String())
	l.add("response_code", strconv.Itoa(int(k.code)))
	l.add("grpc_response_status", grpc)
	l.add("response_flags", k.flags.String())
	l.add("connection_security_policy", Unknown)
	s := &httpSeries{labels: l.b.String()}
	next := make(map[httpKey]*httpSeries, len(old)+1)
	for kk, v := range old {
		next[kk] = v
	}
	next[k] = s
	m.http.Store(&next)
	return s
}

// TCP returns the counters of connections to a cluster (nil: none) and
// host (nil: none chosen) that ended with flags.
func (m *Metrics) TCP(c *upstream.Cluster, h *upstream.Host, flags accesslog.Flags) *TCPSeries {
	k := tcpKey{d: m.destination(c, h), flags: flags}
	if s, ok := (*m.tcp.Load())[k]; ok {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.tcp.Load()
	if s, ok := old[k]; ok {
		return s
	}
	var l labelWriter
	l.b.WriteString(m.source)
	l.b.WriteByte(',')
	l.b.WriteString(k.d.labels)
	l.add("request_protocol", TCP.String())
	l.add("response_flags", flags.String())
	l.add("connection_security_policy", Unknown)
	s := &TCPSeries{labels: l.b.String()}
	next := make(map[tcpKey]*TCPSeries, len(old)+1)
	for kk, v := range old {
		next[kk] = v
	}
	next[k] = s
	m.tcp.Store(&next)
	return s
}

// Reset zeroes every series (the admin /reset_counters).
func (m *Metrics) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.http.Store(&map[httpKey]*httpSeries{})
	m.tcp.Store(&map[tcpKey]*TCPSeries{})
}

// help texts, as Istio's docs describe the metrics.
var help = map[string]string{
	"istio_requests_total":                "Total number of requests handled by the proxy.",
	"istio_request_duration_milliseconds": "Duration of requests, in milliseconds.",
	"istio_request_bytes":                 "Request sizes (headers and body), in bytes.",
	"istio_response_bytes":                "Response sizes (headers and body), in bytes.",
	"istio_tcp_sent_bytes_total":          "Bytes sent to the downstream client on TCP connections.",
	"istio_tcp_received_bytes_total":      "Bytes received from the downstream client on TCP connections.",
	"istio_tcp_connections_opened_total":  "TCP connections opened.",
	"istio_tcp_connections_closed_total":  "TCP connections closed.",
	"istio_build":                         "Istio component build info.",
}

// Overrides are a Telemetry resource's metrics overrides, as Istio's
// stats filter takes them (stats.PluginConfig): metrics dropped and
// labels removed, by Istio's metric name without the istio_ prefix
// (requests_total, request_duration_milliseconds, request_bytes,
// response_bytes, tcp_connections_opened_total, …). Removing a label
// merges the series that differed only in it, as Istio's stats do.
type Overrides struct {
	Drop   map[string]bool
	Remove map[string][]string
}

// SetOverrides replaces the overrides (nil: none) the next scrape applies.
func (m *Metrics) SetOverrides(o *Overrides) { m.overrides.Store(o) }

// histSnap is a histogram's values at one scrape.
type histSnap struct {
	counts [len(Buckets) + 1]uint64
	sum    uint64
}

func (h *histogram) snap() histSnap {
	var s histSnap
	for i := range h.counts {
		s.counts[i] = h.counts[i].Load()
	}
	s.sum = h.sum.Load()
	return s
}

func (a *histSnap) add(b histSnap) {
	for i := range a.counts {
		a.counts[i] += b.counts[i]
	}
	a.sum += b.sum
}

// family is one metric's series at a scrape, in label order, with
// removed labels merged.
type family[V any] struct {
	labels []string
	values []V
}

func collect[S any, V any](series []S, labelsOf func(S) string, value func(S) V, remove []string, add func(*V, V)) family[V] {
	var f family[V]
	if len(remove) == 0 {
		for _, s := range series {
			f.labels = append(f.labels, labelsOf(s))
			f.values = append(f.values, value(s))
		}
		return f
	}
	at := map[string]int{}
	for _, s := range series {
		l := withoutLabels(labelsOf(s), remove)
		if i, ok := at[l]; ok {
			add(&f.values[i], value(s))
			continue
		}
		at[l] = len(f.labels)
		f.labels = append(f.labels, l)
		f.values = append(f.values, value(s))
	}
	idx := make([]int, len(f.labels))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return f.labels[idx[a]] < f.labels[idx[b]] })
	out := family[V]{labels: make([]string, len(idx)), values: make([]V, len(idx))}
	for i, j := range idx {
		out.labels[i], out.values[i] = f.labels[j], f.values[j]
	}
	return out
}

// withoutLabels drops the named labels from a rendered label set
// (name="escaped value",…).
func withoutLabels(labels string, remove []string) string {
	var b strings.Builder
	for len(labels) > 0 {
		eq := strings.IndexByte(labels, '=')
		if eq < 0 || eq+1 >= len(labels) || labels[eq+1] != '"' {
			return labels // not ours: leave it
		}
		name := labels[:eq]
		i := eq + 2
		for i < len(labels) && labels[i] != '"' {
			if labels[i] == '\\' {
				i++
			}
			i++
		}
		end := min(i+1, len(labels))
		pair := labels[:end]
		labels = strings.TrimPrefix(labels[end:], ",")
		if slices.Contains(remove, name) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(pair)
	}
	return b.String()
}

// WritePrometheus writes every series in the Prometheus text format,
// families sorted, series sorted by labels, with the overrides applied.
func (m *Metrics) WritePrometheus(w io.Writer) {
	https := make([]*httpSeries, 0, len(*m.http.Load()))
	for _, s := range *m.http.Load() {
		https = append(https, s)
	}
	sort.Slice(https, func(i, j int) bool { return https[i].labels < https[j].labels })
	tcps := make([]*TCPSeries, 0, len(*m.tcp.Load()))
	for _, s := range *m.tcp.Load() {
		tcps = append(tcps, s)
	}
	sort.Slice(tcps, func(i, j int) bool { return tcps[i].labels < tcps[j].labels })
	o := m.overrides.Load()
	if o == nil {
		o = &Overrides{}
	}

	head := func(name, typ string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help[name], name, typ)
	}
	head("istio_build", "gauge")
	var l labelWriter
	l.add("component", "proxy")
	l.add("tag", m.version)
	fmt.Fprintf(w, "istio_build{%s} 1\n", l.b.String())
	httpLabels := func(s *httpSeries) string { return s.labels }
	addU := func(a *uint64, b uint64) { *a += b }
	if len(https) > 0 {
		if !o.Drop["requests_total"] {
			head("istio_requests_total", "counter")
			f := collect(https, httpLabels, func(s *httpSeries) uint64 { return s.requests.Load() }, o.Remove["requests_total"], addU)
			for i, lb := range f.labels {
				fmt.Fprintf(w, "istio_requests_total{%s} %d\n", lb, f.values[i])
			}
		}
		for _, h := range []struct {
			name  string
			get   func(*httpSeries) *histogram
			scale float64
		}{
			{"istio_request_bytes", func(s *httpSeries) *histogram { return &s.reqBytes }, 1},
			{"istio_request_duration_milliseconds", func(s *httpSeries) *histogram { return &s.duration }, 1000},
			{"istio_response_bytes", func(s *httpSeries) *histogram { return &s.respBytes }, 1},
		} {
			short := strings.TrimPrefix(h.name, "istio_")
			if o.Drop[short] {
				continue
			}
			head(h.name, "histogram")
			f := collect(https, httpLabels, func(s *httpSeries) histSnap { return h.get(s).snap() }, o.Remove[short],
				func(a *histSnap, b histSnap) { a.add(b) })
			for i, lb := range f.labels {
				writeHistogram(w, h.name, lb, &f.values[i], h.scale)
			}
		}
	}
	if len(tcps) > 0 {
		for _, c := range []struct {
			name string
			get  func(*TCPSeries) *stats.Counter
		}{
			{"istio_tcp_connections_closed_total", func(s *TCPSeries) *stats.Counter { return &s.Closed }},
			{"istio_tcp_connections_opened_total", func(s *TCPSeries) *stats.Counter { return &s.Opened }},
			{"istio_tcp_received_bytes_total", func(s *TCPSeries) *stats.Counter { return &s.Received }},
			{"istio_tcp_sent_bytes_total", func(s *TCPSeries) *stats.Counter { return &s.Sent }},
		} {
			short := strings.TrimPrefix(c.name, "istio_")
			if o.Drop[short] {
				continue
			}
			head(c.name, "counter")
			f := collect(tcps, func(s *TCPSeries) string { return s.labels }, func(s *TCPSeries) uint64 { return c.get(s).Value() },
				o.Remove[short], addU)
			for i, lb := range f.labels {
				fmt.Fprintf(w, "%s{%s} %d\n", c.name, lb, f.values[i])
			}
		}
	}
}

func writeHistogram(w io.Writer, name, labels string, h *histSnap, scale float64) {
	var cum uint64
	for i, b := range Buckets {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{%s,le=\"%s\"} %d\n", name, labels, strconv.FormatFloat(b, 'f', -1, 64), cum)
	}
	cum += h.counts[len(Buckets)]
	fmt.Fprintf(w, "%s_bucket{%s,le=\"+Inf\"} %d\n", name, labels, cum)
	fmt.Fprintf(w, "%s_sum{%s} %s\n", name, labels, strconv.FormatFloat(float64(h.sum)/scale, 'f', -1, 64))
	fmt.Fprintf(w, "%s_count{%s} %d\n", name, labels, cum)
}
