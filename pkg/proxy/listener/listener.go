// Package listener opens, changes and closes listeners as LDS says, picks a
// filter chain per connection (by SNI, read from the ClientHello without
// consuming it), terminates TLS with certificates chosen by SNI, and hands
// the connection to an HTTP connection manager or a TCP proxy. Replaced
// filter chains drain: their connections finish while new connections get
// the new configuration on the same socket.
package listener

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"

	"github.com/portico-gateway/portico/pkg/proxy/filters/rbac"
	"github.com/portico-gateway/portico/pkg/proxy/hcm"
	"github.com/portico-gateway/portico/pkg/proxy/overload"
	"github.com/portico-gateway/portico/pkg/proxy/readahead"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
	"github.com/portico-gateway/portico/pkg/proxy/tcpproxy"
	ptls "github.com/portico-gateway/portico/pkg/tls"
)

// ChainSpec is a compiled filter chain (before handlers exist).
type ChainSpec struct {
	Name        string
	ServerNames []string
	TLS         *TLSSpec
	HTTP        *hcm.Config
	TCP         *tcpproxy.Config
	Hash        string
	// Secrets lists SDS names the chain needs before it can serve.
	Secrets []string
}

// TLSSpec terminates TLS.
type TLSSpec struct {
	CertSecrets       []string
	ValidationSecret  string
	RequireClientCert bool
	SANs              []string
	MinVersion        uint16
	MaxVersion        uint16
	CipherSuites      []uint16
	ALPN              []string
}

// Spec is a compiled listener.
type Spec struct {
	Name         string
	Address      string
	Port         uint32
	TLSInspector bool
	Chains       []*ChainSpec
}

// RouteConfigs lists the route configurations the listener's connection
// managers use.
func (s *Spec) RouteConfigs() []string {
	var out []string
	for _, c := range s.Chains {
		if c.HTTP != nil {
			out = append(out, c.HTTP.RouteConfig)
		}
	}
	return out
}

// Clusters lists the clusters TCP proxies of the listener use.
func (s *Spec) Clusters() []string {
	var out []string
	for _, c := range s.Chains {
		if c.TCP != nil {
			for _, wc := range c.TCP.Clusters {
				out = append(out, wc.Name)
			}
		}
	}
	return out
}

// Secrets lists the SDS names the listener needs.
func (s *Spec) Secrets() []string {
	var out []string
	for _, c := range s.Chains {
		out = append(out, c.Secrets...)
	}
	return out
}

var tlsVersions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10,
	tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12,
	tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// Compile converts a Listener.
func Compile(l *listenerv3.Listener) (*Spec, error) {
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, fmt.Errorf("listener %s: only socket addresses are supported", l.Name)
	}
	s := &Spec{Name: l.Name, Address: sa.Address, Port: sa.GetPortValue()}
	for _, lf := range l.ListenerFilters {
		if lf.Name != "envoy.filters.listener.tls_inspector" {
			return nil, fmt.Errorf("listener %s: unsupported listener filter %q", l.Name, lf.Name)
		}
		s.TLSInspector = true
	}
	if len(l.FilterChains) == 0 {
		return nil, fmt.Errorf("listener %s: no filter chains", l.Name)
	}
	seen := map[string]string{}
	for i, fc := range l.FilterChains {
		c, err := compileChain(fc)
		if err != nil {
			return nil, fmt.Errorf("listener %s filter chain %d (%s): %w", l.Name, i, fc.Name, err)
		}
		// The listener's buffer limit bounds what the chain's connections
		// hold in memory; a new limit is a new chain.
		limit := hcm.DefaultBufferLimit
		if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
			limit = int(v.Value)
		}
		c.Hash += "/" + strconv.Itoa(limit)
		if c.HTTP != nil {
			c.HTTP.BufferLimit = limit
		}
		if c.TCP != nil {
			c.TCP.BufferLimit = limit
			c.TCP.ListenerPort = s.Port
		}
		if c.HTTP != nil {
			c.HTTP.ListenerPort = s.Port
		}
		keys := c.ServerNames
		if len(keys) == 0 {
			keys = []string{""}
		}
		for _, k := range keys {
			if prev, dup := seen[k]; dup {
				return nil, fmt.Errorf("listener %s: filter chains %s and %s match the same server name %q", l.Name, prev, fc.Name, k)
			}
			seen[k] = fc.Name
		}
		if (len(c.ServerNames) > 0 || c.TLS != nil) && !s.TLSInspector {
			return nil, fmt.Errorf("listener %s: filter chain %s matches server names but the listener has no tls_inspector", l.Name, fc.Name)
		}
		s.Chains = append(s.Chains, c)
	}
	return s, nil
}

func compileChain(fc *listenerv3.FilterChain) (*ChainSpec, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(fc)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	c := &ChainSpec{Name: fc.Name, Hash: hex.EncodeToString(sum[:8])}
	for _, n := range fc.GetFilterChainMatch().GetServerNames() {
		c.ServerNames = append(c.ServerNames, strings.ToLower(n))
	}
	if ts := fc.TransportSocket; ts != nil {
		if ts.Name != "envoy.transport_sockets.tls" {
			return nil, fmt.Errorf("unsupported transport socket %q", ts.Name)
		}
		ctx := &tlsv3.DownstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			return nil, fmt.Errorf("tls context: %w", err)
		}
		t, secrets, err := compileTLS(ctx)
		if err != nil {
			return nil, err
		}
		c.TLS, c.Secrets = t, secrets
	}
	if len(fc.Filters) == 0 {
		return nil, errors.New("a filter chain needs a network filter")
	}
	// envoy.filters.network.rbac filters may precede tcp_proxy.
	var netRBAC []*rbac.Network
	for i, f := range fc.Filters[:len(fc.Filters)-1] {
		if f.Name != rbac.NetworkName {
			return nil, fmt.Errorf("network filter %d: only %s may precede the last filter, got %q", i, rbac.NetworkName, f.Name)
		}
		m := &netrbacv3.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("network rbac: %w", err)
		}
		n, err := rbac.CompileNetwork(m)
		if err != nil {
			return nil, err
		}
		netRBAC = append(netRBAC, n)
	}
	f := fc.Filters[len(fc.Filters)-1]
	if len(netRBAC) > 0 && f.Name != "envoy.filters.network.tcp_proxy" {
		return nil, fmt.Errorf("%s is supported only before envoy.filters.network.tcp_proxy", rbac.NetworkName)
	}
	switch f.Name {
	case "envoy.filters.network.http_connection_manager":
		m := &hcmv3.HttpConnectionManager{}
		if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("http connection manager: %w", err)
		}
		if c.HTTP, err = hcm.Compile(m); err != nil {
			return nil, err
		}
	case "envoy.filters.network.tcp_proxy":
		tp := &tcpproxyv3.TcpProxy{}
		if err := f.GetTypedConfig().UnmarshalTo(tp); err != nil {
			return nil, fmt.Errorf("tcp proxy: %w", err)
		}
		if c.TCP, err = tcpproxy.Compile(tp); err != nil {
			return nil, err
		}
		c.TCP.RBAC = netRBAC
	default:
		return nil, fmt.Errorf("unsupported network filter %q", f.Name)
	}
	return c, nil
}

func compileTLS(ctx *tlsv3.DownstreamTlsContext) (*TLSSpec, []string, error) {
	common := ctx.CommonTlsContext
	t := &TLSSpec{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, ALPN: common.GetAlpnProtocols(),
		RequireClientCert: ctx.GetRequireClientCertificate().GetValue()}
	if p := common.GetTlsParams(); p != nil {
		if v, ok := tlsVersions[p.TlsMinimumProtocolVersion]; ok {
			t.MinVersion = v
		}
		if v, ok := tlsVersions[p.TlsMaximumProtocolVersion]; ok {
			t.MaxVersion = v
		}
		if len(p.CipherSuites) > 0 {
			ids, unknown := ptls.CipherSuiteIDs(p.CipherSuites)
			if len(unknown) > 0 {
				return nil, nil, fmt.Errorf("unsupported cipher suites %v", unknown)
			}
			t.CipherSuites = ids
		}
	}
	var secrets []string
	for _, sds := range common.GetTlsCertificateSdsSecretConfigs() {
		t.CertSecrets = append(t.CertSecrets, sds.Name)
		secrets = append(secrets, sds.Name)
	}
	if len(t.CertSecrets) == 0 {
		return nil, nil, errors.New("a TLS filter chain needs a certificate (tls_certificate_sds_secret_configs)")
	}
	if cv := common.GetCombinedValidationContext(); cv != nil {
		t.ValidationSecret = cv.GetValidationContextSdsSecretConfig().GetName()
		for _, m := range cv.GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
			t.SANs = append(t.SANs, m.GetMatcher().GetExact())
		}
		secrets = append(secrets, t.ValidationSecret)
	} else if common.GetValidationContextType() != nil {
		return nil, nil, errors.New("downstream validation must use combined_validation_context")
	}
	if t.RequireClientCert && t.ValidationSecret == "" {
		return nil, nil, errors.New("require_client_certificate needs a validation context")
	}
	return t, secrets, nil
}

// chain is a running filter chain.
type chain struct {
	spec *ChainSpec
	http *hcm.Handler
	tcp  *tcpproxy.Handler
	tls  *tls.Config
}

func (c *chain) drain(d time.Duration) {
	if c.http != nil {
		c.http.Drain(d)
	}
	if c.tcp != nil {
		c.tcp.Drain(d)
	}
}

// generation is an immutable set of chains new connections use.
type generation struct {
	spec   *Spec
	chains []*chain
	exact  map[string]*chain
	wild   []wildChain // "*.suffix", longest first
	def    *chain
}

type wildChain struct {
	suffix string
	c      *chain
}

// selectChain applies Envoy's server_names matching: exact, then the
// longest wildcard, then the chain without server names.
func (g *generation) selectChain(sni string) *chain {
	if sni != "" {
		if c, ok := g.exact[sni]; ok {
			return c
		}
		for _, w := range g.wild {
			if strings.HasSuffix(sni, w.suffix) && len(sni) > len(w.suffix) {
				return w.c
			}
		}
	}
	return g.def
}

// Deps are what listeners need to build handlers.
type Deps struct {
	HTTP    *hcm.Env
	Secrets *ptls.Store
	Stats   *stats.Store
	Log     logr.Logger
	// Overload caps downstream connections across listeners (nil: none).
	Overload *overload.Manager
}

type listenerStats struct {
	cxTotal, noChain, destroy, sslHandshake, sslError, overflow *stats.Counter
	cxActive                                                    *stats.Gauge
}

// running is a bound listener.
type running struct {
	name   string
	addr   string // bound address
	ln     net.Listener
	gen    atomic.Pointer[generation]
	stats  listenerStats
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Manager runs the listeners.
type Manager struct {
	ctx     context.Context
	deps    Deps
	drain   time.Duration
	portMap map[uint32]uint32
	now     func() time.Time

	mu        sync.Mutex
	listeners map[string]*running
	// bindFailures remembers, per listener, an address that could not be
	// bound and when to try again, so a port another process holds is
	// retried with backoff instead of at every reconcile.
	bindFailures map[string]*bindFailure
}

type bindFailure struct {
	addr     string
	err      error
	next     time.Time
	delay    time.Duration
	attempts int
}

// BindAttempts counts the failed attempts to bind a listener's current
// address since it last bound (for diagnostics and tests).
func (m *Manager) BindAttempts(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.bindFailures[name]; f != nil {
		return f.attempts
	}
	return 0
}

// Bind retries back off from the first to the last delay.
const (
	firstBindRetry = 250 * time.Millisecond
	maxBindRetry   = 2 * time.Second // a freed port serves within 2 s; a bind attempt is cheap
)

// NewManager returns a manager. portMap remaps listener ports when binding
// (e.g. 80 → 31380 to run without privileges); config keeps the original.
func NewManager(ctx context.Context, deps Deps, drain time.Duration, portMap map[uint32]uint32) *Manager {
	return &Manager{ctx: ctx, deps: deps, drain: drain, portMap: portMap, now: time.Now,
		listeners: map[string]*running{}, bindFailures: map[string]*bindFailure{}}
}

// BoundAddress returns where a listener actually listens.
func (m *Manager) BoundAddress(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.listeners[name]; ok {
		return r.ln.Addr().String()
	}
	return ""
}

// Spec returns the active spec of a listener.
func (m *Manager) Spec(name string) *Spec {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.listeners[name]; ok {
		return r.gen.Load().spec
	}
	return nil
}

// Names lists running listeners.
func (m *Manager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.listeners))
	for n := range m.listeners {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// BindAddress is where a listener spec is bound: its address, with the
// port remapped.
func (m *Manager) BindAddress(s *Spec) string {
	port := s.Port
	if p, ok := m.portMap[port]; ok {
		port = p
	}
	return net.JoinHostPort(s.Address, strconv.Itoa(int(port)))
}

// BindError is a listener whose address could not be bound. It says why
// in words a user can act on.
type BindError struct {
	Listener string
	Address  string
	Err      error
	Hint     string
}

func (e *BindError) Error() string {
	msg := fmt.Sprintf("cannot bind %s: %v", e.Address, e.Err)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

func (e *BindError) Unwrap() error { return e.Err }

// Apply makes the running listeners what specs say, each on its own, as
// Envoy's listener manager does: a listener whose address cannot be bound
// is not started (a running listener of that name keeps its socket and
// configuration) and does not keep the others from starting. It returns
// the failures by listener name. Addresses that failed are retried with
// backoff, not at every call.
func (m *Manager) Apply(specs map[string]*Spec) map[string]error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	failed := map[string]error{}
	for name := range m.bindFailures {
		if _, ok := specs[name]; !ok {
			delete(m.bindFailures, name)
		}
	}
	// Listeners that go away or move release their addresses first, so
	// a listener renamed on the same port can bind it.
	leaving := map[string]*running{}
	for name, r := range m.listeners {
		if s, keep := specs[name]; !keep || m.BindAddress(s) != r.addr {
			leaving[r.addr] = r
		}
	}
	fresh := map[string]net.Listener{}
	names := make([]string, 0, len(specs))
	for name := range specs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := specs[name]
		addr := m.BindAddress(s)
		if r, ok := m.listeners[name]; ok && r.addr == addr {
			continue
		}
		if f := m.bindFailures[name]; f != nil && f.addr == addr && now.Before(f.next) {
			failed[name] = f.err
			continue
		}
		if r, ok := leaving[addr]; ok {
			// Only the replaced listener stops before its successor
			// binds: elsewhere a failed bind must change nothing.
			m.stop(r)
			delete(m.listeners, r.name)
			delete(leaving, addr)
		}
		ln, err := m.listen(addr)
		if err != nil {
			berr := &BindError{Listener: name, Address: addr, Err: err, Hint: m.bindHint(s, addr, err)}
			f := m.bindFailures[name]
			if f == nil || f.addr != addr {
				f = &bindFailure{addr: addr}
				m.bindFailures[name] = f
			}
			f.err = berr
			f.attempts++
			f.delay = min(max(f.delay*2, firstBindRetry), maxBindRetry)
			f.next = now.Add(f.delay)
			failed[name] = berr
			continue
		}
		delete(m.bindFailures, name)
		fresh[name] = ln
	}
	for name, r := range m.listeners {
		s, keep := specs[name]
		switch {
		case !keep:
			m.stop(r)
			delete(m.listeners, name)
		case fresh[name] != nil:
			m.stop(r) // moved: the new socket takes over
			delete(m.listeners, name)
		case failed[name] != nil:
			// The new address cannot be bound: the listener keeps its
			// old socket and configuration.
		case r.gen.Load().spec != s:
			m.update(r, s)
		}
	}
	for name, ln := range fresh {
		r := &running{name: name, addr: m.BindAddress(specs[name]), ln: ln}
		sc := stats.ListenerScope(specs[name].Address + "_" + strconv.Itoa(int(specs[name].Port)))
		r.stats = listenerStats{
			cxTotal: m.deps.Stats.Counter(sc, "downstream_cx_total"), noChain: m.deps.Stats.Counter(sc, "no_filter_chain_match"),
			destroy: m.deps.Stats.Counter(sc, "downstream_cx_destroy"), sslHandshake: m.deps.Stats.Counter(sc, "ssl.handshake"),
			sslError: m.deps.Stats.Counter(sc, "ssl.connection_error"), cxActive: m.deps.Stats.Gauge(sc, "downstream_cx_active"),
			overflow: m.deps.Stats.Counter(sc, "downstream_global_cx_overflow"),
		}
		m.update(r, specs[name])
		ctx, cancel := context.WithCancel(m.ctx)
		r.cancel = cancel
		m.listeners[name] = r
		r.wg.Add(1)
		go m.accept(ctx, r)
		m.deps.Log.Info("listener started", "listener", name, "address", ln.Addr().String())
	}
	return failed
}

// bindHint says what to do about a bind failure.
func (m *Manager) bindHint(s *Spec, addr string, err error) string {
	_, port, _ := net.SplitHostPort(addr)
	remap := fmt.Sprintf("bind another port with --port-map %d:<port>", s.Port)
	if to, ok := m.portMap[s.Port]; ok {
		remap = fmt.Sprintf("--port-map maps %d to %d; map it to a free port instead", s.Port, to)
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Sprintf("port %s is in use by another process: stop it, or %s", port, remap)
	case errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("port %s is privileged: run with CAP_NET_BIND_SERVICE (or net.ipv4.ip_unprivileged_port_start=0), or %s", port, remap)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Sprintf("address %s is not on this machine", s.Address)
	}
	return ""
}

// listen binds an address. Nothing waits here: a port that is busy now is
// retried by a later Apply, after a backoff.
func (m *Manager) listen(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	// 0.0.0.0 means IPv4 only, as in Envoy; Go would otherwise listen on
	// both stacks.
	network := "tcp"
	if host, _, _ := net.SplitHostPort(addr); net.ParseIP(host).To4() != nil {
		network = "tcp4"
	}
	return lc.Listen(m.ctx, network, addr)
}

// update installs a new generation: unchanged chains keep their handlers
// (no drain); changed and removed ones drain.
func (m *Manager) update(r *running, s *Spec) {
	old := r.gen.Load()
	prev := map[string]*chain{}
	if old != nil {
		for _, c := range old.chains {
			prev[c.spec.Name+"\x00"+c.spec.Hash] = c
		}
	}
	g := &generation{spec: s, exact: map[string]*chain{}}
	for _, cs := range s.Chains {
		key := cs.Name + "\x00" + cs.Hash
		c, ok := prev[key]
		if ok {
			delete(prev, key)
		} else {
			c = m.newChain(cs)
		}
		g.chains = append(g.chains, c)
		if len(cs.ServerNames) == 0 {
			g.def = c
		}
		for _, n := range cs.ServerNames {
			if strings.HasPrefix(n, "*") {
				g.wild = append(g.wild, wildChain{suffix: n[1:], c: c})
			} else {
				g.exact[n] = c
			}
		}
	}
	sort.SliceStable(g.wild, func(i, j int) bool { return len(g.wild[i].suffix) > len(g.wild[j].suffix) })
	r.gen.Store(g)
	for _, c := range prev {
		c.drain(m.drain)
	}
}

func (m *Manager) newChain(cs *ChainSpec) *chain {
	c := &chain{spec: cs}
	if cs.HTTP != nil {
		c.http = hcm.NewHandler(cs.HTTP, m.deps.HTTP)
	}
	if cs.TCP != nil {
		c.tcp = tcpproxy.NewHandler(cs.TCP, m.deps.HTTP.Clusters, m.deps.Stats, m.deps.HTTP.AccessLog, m.deps.HTTP.Log).WithIstioMetrics(m.deps.HTTP.Istio)
	}
	if cs.TLS != nil {
		c.tls = serverTLS(cs.TLS, m.deps.Secrets)
	}
	return c
}

// stop closes a listener's socket; its connections drain.
func (m *Manager) stop(r *running) {
	r.ln.Close()
	if g := r.gen.Load(); g != nil {
		for _, c := range g.chains {
			c.drain(m.drain)
		}
	}
	m.deps.Log.Info("listener stopped; connections draining", "listener", r.name, "drain", m.drain)
	go func() {
		// Connections get the drain time to finish, then everything stops.
		t := time.NewTimer(m.drain + time.Second)
		defer t.Stop()
		select {
		case <-t.C:
		case <-m.ctx.Done():
		}
		r.cancel()
	}()
}

// Close stops every listener immediately.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, r := range m.listeners {
		r.ln.Close()
		r.cancel()
		delete(m.listeners, name)
	}
}

// Drain drains every listener's connections for d (0: the listener drain
// time): responses ask clients to reconnect, connections still open at
// the end are closed. Listeners keep accepting meanwhile, since clients
// keep arriving until the load balancer notices the proxy is leaving.
func (m *Manager) Drain(d time.Duration) {
	if d <= 0 {
		d = m.drain
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.listeners {
		if g := r.gen.Load(); g != nil {
			for _, c := range g.chains {
				c.drain(d)
			}
		}
	}
}

func (m *Manager) accept(ctx context.Context, r *running) {
	defer r.wg.Done()
	var delay time.Duration
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			m.deps.Log.Error(err, "accept", "listener", r.name)
			time.Sleep(delay)
			continue
		}
		delay = 0
		r.stats.cxTotal.Inc()
		var oc *overload.Conn
		if m.deps.Overload != nil {
			// Shed at the global cap before file descriptors run out,
			// making room first by closing connections that wait idle.
			if oc = m.deps.Overload.Admit(nc); oc == nil {
				r.stats.overflow.Inc()
				nc.Close()
				continue
			}
		}
		r.stats.cxActive.Inc()
		go m.serve(ctx, r, nc, oc, func() {
			oc.Done()
			r.stats.cxActive.Dec()
			r.stats.destroy.Inc()
		})
	}
}

// inspectTimeout bounds waiting for a ClientHello and for the TLS
// handshake (Envoy's listener filter timeout is 15 s).
const inspectTimeout = 15 * time.Second

// serve serves one accepted connection and runs end once it is over:
// itself, or, for HTTP, through the connection manager, which may serve
// an idle connection on from another goroutine after serve returns.
func (m *Manager) serve(ctx context.Context, r *running, nc net.Conn, oc *overload.Conn, end func()) {
	handed := false
	defer func() {
		if !handed {
			end()
		}
	}()
	g := r.gen.Load()
	conn := nc
	sni := ""
	isTLS := false
	if g.spec.TLSInspector {
		nc.SetReadDeadline(time.Now().Add(inspectTimeout))
		hello, ahead, err := ReadClientHello(nc)
		nc.SetReadDeadline(time.Time{})
		if err != nil {
			nc.Close()
			return
		}
		sni, isTLS = hello.ServerName, hello.TLS
		conn = &readahead.Conn{Conn: nc, Ahead: ahead}
	}
	c := g.selectChain(sni)
	if c == nil || c.tls == nil && isTLS && c.tcp == nil || c.tls != nil && !isTLS {
		r.stats.noChain.Inc()
		nc.Close()
		return
	}
	if c.tls == nil {
		if c.http != nil {
			handed = true
			c.http.ServeConn(ctx, conn, nil, oc, end)
		} else {
			oc.Busy()
			c.tcp.ServeConn(ctx, conn, sni)
		}
		return
	}
	oc.Head(time.Now()) // a handshake that takes long may give way under pressure
	tc := tls.Server(conn, c.tls)
	hctx, cancel := context.WithTimeout(ctx, inspectTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		r.stats.sslError.Inc()
		m.deps.Log.V(1).Info("TLS handshake failed", "listener", r.name, "sni", sni, "remote", nc.RemoteAddr().String(), "error", err.Error())
		tc.Close()
		return
	}
	r.stats.sslHandshake.Inc()
	oc.Busy()
	if c.http != nil {
		handed = true
		c.http.ServeConn(ctx, tc, tc, oc, end)
	} else {
		c.tcp.ServeConn(ctx, tc, sni)
	}
}
