package topology

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"

	"github.com/portico-gateway/portico/pkg/resource"
)

// Target is one proxy to read stats from.
type Target struct {
	// Class is the proxy class the numbers are added to.
	Class string
	// Proxy names the proxy (its node ID, or pod).
	Proxy string
	// StatsURL serves the Prometheus text (/stats/prometheus on the
	// admin or status port).
	StatsURL string
	// ClustersURL, if set, is the admin /clusters (per-endpoint counts);
	// only reachable where the admin port is (standalone).
	ClustersURL string
}

// ScraperOptions configure a Scraper.
type ScraperOptions struct {
	// Targets lists the proxies to read, asked before every round.
	Targets func() []Target
	// Interval between rounds (default 5s) and Window, the span rates are
	// computed over (default 1m, as rate(x[1m])).
	Interval, Window time.Duration
	// Timeout for one proxy's reading (default 3s).
	Timeout time.Duration
	// MaxBytes bounds what one reading may read (default 32 MiB): a proxy
	// with a million clusters is not worth running out of memory for.
	MaxBytes int64
	Client   *http.Client
	Log      logr.Logger
}

// Scraper reads the proxies' stats periodically and keeps the readings of
// the last window. The controller does it itself rather than ask a
// Prometheus server, so the page works in standalone mode, where there is
// none.
type Scraper struct {
	opts    ScraperOptions
	mu      sync.Mutex
	proxies map[string]*proxyReadings
}

type proxyReadings struct {
	target   Target
	readings []*scrape
	last     time.Time
	err      string
}

func (p *proxyReadings) info() ScrapeInfo {
	return ScrapeInfo{Class: p.target.Class, Proxy: p.target.Proxy, URL: p.target.StatsURL, Last: p.last, Error: p.err, Readings: len(p.readings)}
}

// NewScraper returns a scraper; Run reads.
func NewScraper(opts ScraperOptions) *Scraper {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 3 * time.Second
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 32 << 20
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}
	}
	return &Scraper{opts: opts, proxies: map[string]*proxyReadings{}}
}

// Run reads every target each interval until ctx ends.
func (s *Scraper) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		s.Round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Round reads every target once, now, a few at a time: a slow or
// unreachable pod costs its timeout, not everyone's.
func (s *Scraper) Round(ctx context.Context) {
	targets := s.opts.Targets()
	seen := map[string]bool{}
	var g errgroup.Group
	g.SetLimit(8)
	for _, tg := range targets {
		key := tg.Class + "\x00" + tg.Proxy + "\x00" + tg.StatsURL
		if seen[key] {
			continue
		}
		seen[key] = true
		g.Go(func() error {
			sc, err := s.read(ctx, tg)
			s.record(key, tg, sc, err)
			return nil
		})
	}
	g.Wait()
	s.mu.Lock()
	for k := range s.proxies {
		if !seen[k] {
			delete(s.proxies, k) // the proxy went away
		}
	}
	s.mu.Unlock()
}

func (s *Scraper) record(key string, tg Target, sc *scrape, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pr := s.proxies[key]
	if pr == nil {
		pr = &proxyReadings{target: tg}
		s.proxies[key] = pr
	}
	pr.target = tg
	if err != nil {
		if pr.err != err.Error() {
			s.opts.Log.V(1).Info("cannot read a proxy's stats for the topology page", "proxy", tg.Proxy, "url", tg.StatsURL, "error", err.Error())
		}
		pr.err = err.Error()
		return
	}
	pr.err = ""
	pr.last = sc.at
	pr.readings = append(pr.readings, sc)
	// Keep the newest reading at least Window old, so rates span the
	// whole window; drop older ones.
	for len(pr.readings) > 2 && sc.at.Sub(pr.readings[1].at) >= s.opts.Window {
		pr.readings = pr.readings[1:]
	}
}

func (s *Scraper) read(ctx context.Context, tg Target) (*scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	at := time.Now()
	body, err := s.get(ctx, tg.StatsURL)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	sc, err := parsePrometheus(body, at)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", tg.StatsURL, err)
	}
	if tg.ClustersURL != "" {
		cb, err := s.get(ctx, tg.ClustersURL)
		if err != nil {
			return nil, err
		}
		defer cb.Close()
		if err := parseClusters(cb, sc.hosts); err != nil {
			return nil, fmt.Errorf("reading %s: %w", tg.ClustersURL, err)
		}
	}
	return sc, nil
}

type limitedBody struct {
	io.Reader
	io.Closer
}

var errTooLarge = errors.New("response larger than the scrape limit")

func (s *Scraper) get(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("reading %s: %s", url, resp.Status)
	}
	return limitedBody{Reader: &capReader{r: resp.Body, left: s.opts.MaxBytes}, Closer: resp.Body}, nil
}

// capReader fails (rather than truncates) past its limit, so a cut
// reading is never taken for a complete one.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		if n, _ := c.r.Read(one[:]); n > 0 {
			return 0, errTooLarge
		}
		return c.r.Read(p)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// Window returns what the readings say now.
func (s *Scraper) Window() *Window {
	s.mu.Lock()
	defer s.mu.Unlock()
	return newWindow(s.opts.Window, s.proxies)
}

// KubernetesTargets finds the gateway pods of each proxy class from the
// resources the controller already watches: Services whose selector the
// class's labels satisfy, and the ready addresses of their EndpointSlices,
// read on the status port (/stats/prometheus — what the deployment's
// prometheus.io annotations name): the slice's port named "status-port"
// (Istio's name for it), else statusPort (15021 when 0). The admin port
// listens on the pod's loopback only, so there are no per-endpoint counts.
func KubernetesTargets(res *resource.Resources, classes map[string]map[string]string, statusPort int32) []Target {
	if res == nil {
		return nil
	}
	if statusPort == 0 {
		statusPort = 15021
	}
	var out []Target
	seen := map[string]bool{}
	for _, className := range sortedKeys(classes) {
		labels := classes[className]
		for _, svc := range res.Services {
			sel := svc.Spec.Selector
			if len(sel) == 0 || !subset(sel, labels) {
				continue
			}
			for _, es := range res.EndpointSlices {
				if es.Namespace != svc.Namespace || es.Labels["kubernetes.io/service-name"] != svc.Name {
					continue
				}
				port := statusPort
				for _, p := range es.Ports {
					if p.Name != nil && *p.Name == "status-port" && p.Port != nil {
						port = *p.Port
					}
				}
				for _, ep := range es.Endpoints {
					if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
						continue
					}
					name := svc.Namespace + "/" + svc.Name
					if ep.TargetRef != nil {
						name = ep.TargetRef.Namespace + "/" + ep.TargetRef.Name
					}
					for _, a := range ep.Addresses {
						u := "http://" + net.JoinHostPort(a, strconv.Itoa(int(port))) + "/stats/prometheus"
						if seen[className+u] {
							continue
						}
						seen[className+u] = true
						out = append(out, Target{Class: className, Proxy: name, StatsURL: u})
					}
				}
			}
		}
	}
	return out
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
