package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// Secrets resolves SDS secret names to material (pkg/proxy/secrets).
type Secrets interface {
	Certificate(name string) (*tls.Certificate, error)
	CAPool(name string) (*x509.CertPool, error)
}

// Manager owns every cluster.
type Manager struct {
	log     logr.Logger
	ctx     context.Context
	store   *stats.Store
	secrets Secrets
	dnsRate time.Duration

	mu       sync.Mutex // serialises Apply
	clusters atomic.Pointer[map[string]*Cluster]
	hashes   map[string]string
	// eds caches endpoints by service name, so a cluster recreated by a CDS
	// change starts with the endpoints the server will not resend.
	eds map[string][]EndpointSpec

	caFiles sync.Map // path → *x509.CertPool
}

// NewManager returns an empty manager. Background work (DNS, outlier
// detection) stops when ctx ends.
func NewManager(ctx context.Context, log logr.Logger, store *stats.Store, secrets Secrets) *Manager {
	m := &Manager{log: log, ctx: ctx, store: store, secrets: secrets, dnsRate: 5 * time.Second,
		hashes: map[string]string{}, eds: map[string][]EndpointSpec{}}
	empty := map[string]*Cluster{}
	m.clusters.Store(&empty)
	return m
}

// Get returns the named cluster or nil.
func (m *Manager) Get(name string) *Cluster { return (*m.clusters.Load())[name] }

// Len is the number of running clusters.
func (m *Manager) Len() int { return len(*m.clusters.Load()) }

// Names lists the clusters, sorted.
func (m *Manager) Names() []string {
	cur := *m.clusters.Load()
	out := make([]string, 0, len(cur))
	for n := range cur {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Versioned is a compiled cluster with its content hash.
type Versioned struct {
	Config *ClusterConfig
	Hash   string
}

// Apply makes the set of clusters exactly cfgs (by name). Unchanged
// clusters (same hash) keep running; changed ones are replaced by a new
// cluster and the old one's connections close as requests finish. keep
// (nil: none) lists clusters that must survive even though cfgs lacks
// them (routes still point at them: make-before-break); it is called only
// when cfgs lacks a running cluster. When cfgs are the running clusters
// as they are, nothing is rebuilt. It reports whether it kept clusters
// cfgs lacks: until it last did not, another Apply of the same cfgs
// changes nothing.
func (m *Manager) Apply(cfgs map[string]Versioned, keep func() map[string]bool) (kept bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.clusters.Load()
	if m.unchanged(cur, cfgs) {
		return false // one route change among thousands of clusters: no new table
	}
	var keepSet map[string]bool
	keeps := func(name string) bool {
		if keep == nil {
			return false
		}
		if keepSet == nil {
			keepSet = keep() // only when CDS dropped a cluster still here
		}
		return keepSet[name]
	}
	next := make(map[string]*Cluster, len(cfgs))
	var retired []*Cluster
	for name, v := range cfgs {
		if old, ok := cur[name]; ok && m.hashes[name] == v.Hash {
			next[name] = old
			continue
		}
		c := m.newCluster(v.Config)
		if old, ok := cur[name]; ok {
			retired = append(retired, old)
		}
		next[name] = c
		m.hashes[name] = v.Hash
	}
	for name, old := range cur {
		if _, ok := next[name]; ok {
			continue
		}
		if keeps(name) {
			next[name] = old
			kept = true
			continue
		}
		delete(m.hashes, name)
		retired = append(retired, old)
	}
	m.clusters.Store(&next)
	for _, c := range retired {
		c.close()
	}
	return kept
}

// unchanged reports whether cfgs are exactly the clusters in cur, each
// with the hash it was built from. Called with m.mu.
func (m *Manager) unchanged(cur map[string]*Cluster, cfgs map[string]Versioned) bool {
	if len(cur) != len(cfgs) {
		return false
	}
	for name, v := range cfgs {
		if _, ok := cur[name]; !ok || m.hashes[name] != v.Hash {
			return false
		}
	}
	return true
}

func (m *Manager) newCluster(cfg *ClusterConfig) *Cluster {
	c := &Cluster{cfg: cfg, mgr: m, Stats: newClusterStats(m.store, cfg.Name), closed: make(chan struct{}), warmed: make(chan struct{})}
	c.rebuildLocked(nil)
	if cfg.HTTP2 {
		c.h2 = newH2Client(c)
	}
	switch cfg.Discovery {
	case EDS:
		if eps, ok := m.eds[cfg.EDSServiceName]; ok {
			c.setEndpoints(eps)
		}
	case StrictDNS:
		go m.resolveLoop(c)
	}
	if cfg.Outlier != nil {
		go c.runOutlier()
	}
	return c
}

// SetEndpoints applies an EDS update for a service name.
func (m *Manager) SetEndpoints(service string, eps []EndpointSpec) {
	m.SetEndpointsOf(map[string][]EndpointSpec{service: eps})
}

// SetEndpointsOf applies the EDS updates of many service names in one
// pass over the clusters. One pass per name made an EDS response for N
// clusters cost N² (24,000 load assignments took a minute to apply).
func (m *Manager) SetEndpointsOf(updates map[string][]EndpointSpec) {
	if len(updates) == 0 {
		return
	}
	m.mu.Lock()
	for service, eps := range updates {
		m.eds[service] = eps
	}
	cur := *m.clusters.Load()
	m.mu.Unlock()
	for _, c := range cur {
		if c.cfg.Discovery != EDS {
			continue
		}
		if eps, ok := updates[c.cfg.EDSServiceName]; ok {
			c.setEndpoints(eps)
		}
	}
}

// ForgetEndpoints drops cached endpoints no cluster uses any more.
func (m *Manager) ForgetEndpoints(keep map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.eds {
		if !keep[s] {
			delete(m.eds, s)
		}
	}
}

// resolveLoop resolves a STRICT_DNS cluster's endpoints every dnsRate,
// until the cluster closes.
func (m *Manager) resolveLoop(c *Cluster) {
	t := time.NewTicker(m.dnsRate)
	defer t.Stop()
	for {
		c.setEndpoints(m.resolve(c))
		select {
		case <-c.closed:
			return
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) resolve(c *Cluster) []EndpointSpec {
	var out []EndpointSpec
	for _, ep := range c.cfg.Endpoints {
		if net.ParseIP(ep.Address) != nil {
			out = append(out, ep)
			continue
		}
		ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
		ips, err := net.DefaultResolver.LookupIP(ctx, "ip4", ep.Address)
		cancel()
		if err != nil {
			m.log.V(1).Info("DNS resolution failed", "cluster", c.cfg.Name, "host", ep.Address, "error", err.Error())
			continue
		}
		for _, ip := range ips {
			e := ep
			e.Address = ip.String()
			out = append(out, e)
		}
	}
	return out
}

// tlsConfig builds the client TLS configuration for one connection. It is
// built per connection so rotated secrets apply to new connections.
func (m *Manager) tlsConfig(t *TLSConfig, h *Host) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: t.SNI, NextProtos: t.ALPN, MinVersion: tls.VersionTLS12, MaxVersion: t.MaxVersion}
	if t.MinVersion != 0 {
		cfg.MinVersion = t.MinVersion
	}
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(h.Addr)
		cfg.ServerName = host
	}
	if t.CertSecret != "" {
		cert, err := m.secrets.Certificate(t.CertSecret)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s: %w", t.CertSecret, err)
		}
		cfg.Certificates = []tls.Certificate{*cert}
	}
	if !t.Verify {
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	var pool *x509.CertPool
	var err error
	switch {
	case t.ValidationSecret != "":
		pool, err = m.secrets.CAPool(t.ValidationSecret)
	case t.TrustedCAFile != "":
		pool, err = m.caFile(t.TrustedCAFile)
	}
	if err != nil {
		return nil, err
	}
	// Verify ourselves: the chain against the pool, then the configured
	// SANs instead of the SNI name when SANs are given (as Envoy does).
	cfg.InsecureSkipVerify = true
	sni := cfg.ServerName
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("upstream sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool()}
		for _, ic := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(ic)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(opts); err != nil {
			return fmt.Errorf("verifying upstream certificate: %w", err)
		}
		if len(t.SANs) == 0 {
			return leaf.VerifyHostname(sni)
		}
		for _, san := range t.SANs {
			switch san.Type {
			case tlsv3.SubjectAltNameMatcher_URI:
				for _, u := range leaf.URIs {
					if u.String() == san.Exact {
						return nil
					}
				}
			default:
				if leaf.VerifyHostname(san.Exact) == nil {
					return nil
				}
			}
		}
		return fmt.Errorf("upstream certificate matches none of the subject alt names %v", t.SANs)
	}
	return cfg, nil
}

func (m *Manager) caFile(path string) (*x509.CertPool, error) {
	if p, ok := m.caFiles.Load(path); ok {
		return p.(*x509.CertPool), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificates in %s", path)
	}
	m.caFiles.Store(path, pool)
	return pool, nil
}

// Close stops every cluster.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range *m.clusters.Load() {
		c.close()
	}
}

// HostStatus is one line of /clusters.
type HostStatus struct {
	Cluster string
	Addr    string
	Active  int64
	Success uint64
	Errors  uint64
	Healthy bool
	Ejected bool
	Weight  uint32
}

// Status lists every host of every cluster.
func (m *Manager) Status() []HostStatus {
	var out []HostStatus
	for _, name := range m.Names() {
		c := m.Get(name)
		for _, h := range c.Hosts() {
			out = append(out, HostStatus{Cluster: name, Addr: h.Addr, Active: h.Active.Load(), Success: h.success.Load(),
				Errors: h.errors.Load(), Healthy: h.Healthy, Ejected: h.Ejected(), Weight: h.Weight})
		}
	}
	return out
}
