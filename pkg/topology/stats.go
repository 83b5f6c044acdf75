package topology

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape is one reading of one proxy: every counter, gauge and histogram
// of its Prometheus text, plus per-endpoint counts when its admin
// /clusters was read too.
type scrape struct {
	at     time.Time
	values map[string]float64  // series key → value (histograms: _count and _sum)
	hists  map[string][]bucket // series key → cumulative buckets, by upper bound
	hosts  map[string]hostCounts
}

type bucket struct {
	le    float64
	count float64
}

// hostCounts are an endpoint's counters in a proxy's /clusters.
type hostCounts struct {
	success, errors float64
	health          string
}

// seriesKey names a series by metric name and labels, in a canonical
// form: name, then k=v for every label but le, sorted.
func seriesKey(name string, kv ...string) string {
	pairs := make([]string, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		pairs = append(pairs, kv[i]+"="+kv[i+1])
	}
	sort.Strings(pairs)
	return name + "|" + strings.Join(pairs, "|")
}

// parsePrometheus reads the Prometheus text format.
func parsePrometheus(r io.Reader, at time.Time) (*scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing Prometheus text: %w", err)
	}
	s := &scrape{at: at, values: map[string]float64{}, hists: map[string][]bucket{}, hosts: map[string]hostCounts{}}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			kv := make([]string, 0, 2*len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				kv = append(kv, l.GetName(), l.GetValue())
			}
			key := seriesKey(name, kv...)
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				s.values[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s.values[key] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				s.values[key] = m.GetUntyped().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				bs := make([]bucket, 0, len(h.GetBucket())+1)
				for _, b := range h.GetBucket() {
					bs = append(bs, bucket{le: b.GetUpperBound(), count: float64(b.GetCumulativeCount())})
				}
				if len(bs) == 0 || !math.IsInf(bs[len(bs)-1].le, 1) {
					bs = append(bs, bucket{le: math.Inf(1), count: float64(h.GetSampleCount())})
				}
				sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
				s.hists[key] = bs
				s.values[seriesKey(name+"_count", kv...)] = float64(h.GetSampleCount())
				s.values[seriesKey(name+"_sum", kv...)] = h.GetSampleSum()
			}
		}
	}
	return s, nil
}

// parseClusters reads the text of an admin /clusters: lines
// "cluster::host:port::stat::value". Cluster names never hold "::", host
// addresses may (IPv6), so the stat and value are read from the right.
func parseClusters(r io.Reader, into map[string]hostCounts) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		first := strings.Index(line, "::")
		if first < 0 {
			continue
		}
		cluster, rest := line[:first], line[first+2:]
		vi := strings.LastIndex(rest, "::")
		if vi < 0 {
			continue
		}
		value := rest[vi+2:]
		rest = rest[:vi]
		si := strings.LastIndex(rest, "::")
		if si < 0 {
			continue
		}
		host, stat := rest[:si], rest[si+2:]
		key := cluster + "\x00" + host
		hc := into[key]
		switch stat {
		case "rq_success", "rq_error":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				continue
			}
			if stat == "rq_success" {
				hc.success = v
			} else {
				hc.errors = v
			}
		case "health_flags":
			hc.health = value
		default:
			continue
		}
		into[key] = hc
	}
	return sc.Err()
}

// Window is what the scrapes say about the recent past: per proxy class,
// the increase of every counter and histogram bucket over Span, as rates,
// summed over the class's proxies.
type Window struct {
	Span    time.Duration
	Scrapes []ScrapeInfo
	classes map[string]*classWindow
}

type classWindow struct {
	rates  map[string]float64  // per second
	totals map[string]float64  // latest values
	hists  map[string][]bucket // increase per cumulative bucket
	hosts  map[string]hostWindow
}

type hostWindow struct {
	successRate, errorRate float64
	health                 string
}

// ScrapeInfo says where numbers come from and whether reading them works.
type ScrapeInfo struct {
	Class    string    `json:"class"`
	Proxy    string    `json:"proxy"`
	URL      string    `json:"url"`
	Last     time.Time `json:"last,omitempty"`
	Error    string    `json:"error,omitempty"`
	Readings int       `json:"readings"`
}

// newWindow computes rates from each proxy's oldest and newest reading.
func newWindow(span time.Duration, byProxy map[string]*proxyReadings) *Window {
	w := &Window{classes: map[string]*classWindow{}}
	for _, name := range sortedKeys(byProxy) {
		pr := byProxy[name]
		w.Scrapes = append(w.Scrapes, pr.info())
		if len(pr.readings) == 0 {
			continue
		}
		cw := w.classes[pr.target.Class]
		if cw == nil {
			cw = &classWindow{rates: map[string]float64{}, totals: map[string]float64{}, hists: map[string][]bucket{}, hosts: map[string]hostWindow{}}
			w.classes[pr.target.Class] = cw
		}
		newest := pr.readings[len(pr.readings)-1]
		for k, v := range newest.values {
			cw.totals[k] += v
		}
		if len(pr.readings) < 2 {
			continue
		}
		oldest := pr.readings[0]
		dt := newest.at.Sub(oldest.at).Seconds()
		if dt <= 0 {
			continue
		}
		if d := newest.at.Sub(oldest.at); d > w.Span {
			w.Span = d
		}
		for k, v := range newest.values {
			cw.rates[k] += increase(oldest.values[k], v) / dt
		}
		for k, nb := range newest.hists {
			ob := oldest.hists[k]
			cw.hists[k] = addBuckets(cw.hists[k], bucketIncrease(ob, nb))
		}
		for k, h := range newest.hosts {
			o := oldest.hosts[k]
			hw := cw.hosts[k]
			hw.successRate += increase(o.success, h.success) / dt
			hw.errorRate += increase(o.errors, h.errors) / dt
			hw.health = h.health
			cw.hosts[k] = hw
		}
	}
	if w.Span == 0 {
		w.Span = span
	}
	return w
}

// increase is how much a counter grew; a counter that went down was reset
// (the proxy restarted, or /reset_counters), and grew by its new value.
func increase(old, now float64) float64 {
	if now < old {
		return now
	}
	return now - old
}

func bucketIncrease(old, now []bucket) []bucket {
	out := make([]bucket, len(now))
	byLE := map[float64]float64{}
	for _, b := range old {
		byLE[b.le] = b.count
	}
	reset := false
	for _, b := range now {
		if b.count < byLE[b.le] {
			reset = true
		}
	}
	for i, b := range now {
		out[i] = bucket{le: b.le, count: b.count}
		if !reset {
			out[i].count -= byLE[b.le]
		}
	}
	return out
}

func addBuckets(a, b []bucket) []bucket {
	byLE := map[float64]float64{}
	for _, x := range a {
		byLE[x.le] += x.count
	}
	for _, x := range b {
		byLE[x.le] += x.count
	}
	out := make([]bucket, 0, len(byLE))
	for le, c := range byLE {
		out = append(out, bucket{le: le, count: c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].le < out[j].le })
	return out
}

// quantile estimates the q-quantile of cumulative buckets as Prometheus's
// histogram_quantile does: linear inside the bucket the rank falls in,
// the highest finite bound when it falls in +Inf. ok is false without
// observations.
func quantile(q float64, bs []bucket) (float64, bool) {
	if len(bs) == 0 {
		return 0, false
	}
	total := bs[len(bs)-1].count
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	prevLE, prevCount := 0.0, 0.0
	for i, b := range bs {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				if i == 0 {
					return 0, false
				}
				return bs[i-1].le, true
			}
			if b.count == prevCount {
				return b.le, true
			}
			return prevLE + (b.le-prevLE)*(rank-prevCount)/(b.count-prevCount), true
		}
		prevLE, prevCount = b.le, b.count
	}
	return bs[len(bs)-1].le, true
}

// rate is a series' per-second increase in a class, summed.
func (w *Window) rate(class, key string) float64 {
	if w == nil || w.classes[class] == nil {
		return 0
	}
	return w.classes[class].rates[key]
}

func (w *Window) total(class, key string) float64 {
	if w == nil || w.classes[class] == nil {
		return 0
	}
	return w.classes[class].totals[key]
}

func (w *Window) hist(class, key string) []bucket {
	if w == nil || w.classes[class] == nil {
		return nil
	}
	return w.classes[class].hists[key]
}

func (w *Window) host(class, cluster, addr string) (hostWindow, bool) {
	if w == nil || w.classes[class] == nil {
		return hostWindow{}, false
	}
	h, ok := w.classes[class].hosts[cluster+"\x00"+addr]
	return h, ok
}
