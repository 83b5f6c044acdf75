package istiometrics

import (
	"fmt"
	"io"
	"sort"
	"strconv"
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

// WritePrometheus writes every series in the Prometheus text format,
// families sorted, series sorted by labels.
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

	head := func(name, typ string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help[name], name, typ)
	}
	head("istio_build", "gauge")
	var l labelWriter
	l.add("component", "proxy")
	l.add("tag", m.version)
	fmt.Fprintf(w, "istio_build{%s} 1\n", l.b.String())
	if len(https) > 0 {
		head("istio_requests_total", "counter")
		for _, s := range https {
			fmt.Fprintf(w, "istio_requests_total{%s} %d\n", s.labels, s.requests.Load())
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
			head(h.name, "histogram")
			for _, s := range https {
				writeHistogram(w, h.name, s.labels, h.get(s), h.scale)
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
			head(c.name, "counter")
			for _, s := range tcps {
				fmt.Fprintf(w, "%s{%s} %d\n", c.name, s.labels, c.get(s).Value())
			}
		}
	}
}

func writeHistogram(w io.Writer, name, labels string, h *histogram, scale float64) {
	var cum uint64
	for i, b := range Buckets {
		cum += h.counts[i].Load()
		fmt.Fprintf(w, "%s_bucket{%s,le=\"%s\"} %d\n", name, labels, strconv.FormatFloat(b, 'f', -1, 64), cum)
	}
	cum += h.counts[len(Buckets)].Load()
	fmt.Fprintf(w, "%s_bucket{%s,le=\"+Inf\"} %d\n", name, labels, cum)
	fmt.Fprintf(w, "%s_sum{%s} %s\n", name, labels, strconv.FormatFloat(float64(h.sum.Load())/scale, 'f', -1, 64))
	fmt.Fprintf(w, "%s_count{%s} %d\n", name, labels, cum)
}
