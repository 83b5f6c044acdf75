// Package tcpproxy proxies raw TCP connections (MySQL on 3306, TLS
// passthrough) to weighted clusters, as Envoy's tcp_proxy filter does.
package tcpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/go-logr/logr"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/filters/rbac"
	"github.com/portico-gateway/portico/pkg/proxy/istiometrics"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// WeightedCluster is a destination with its share.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// Config is a compiled TcpProxy.
type Config struct {
	StatPrefix  string
	Clusters    []WeightedCluster
	Total       uint32
	IdleTimeout time.Duration
	// AccessLogs are the compiled access_log entries (none: no logging).
	AccessLogs []accesslog.Target
	// BufferLimit is the listener's per_connection_buffer_limit_bytes: what
	// one direction of a connection holds in flight (at most bufSize).
	BufferLimit int
	// RBAC are the envoy.filters.network.rbac filters before tcp_proxy, in
	// order: a connection one of them denies is closed before anything is
	// dialled or forwarded.
	RBAC []*rbac.Network
	// ListenerPort is the listener's configured port (destination_port).
	ListenerPort uint32
}

// Compile converts a TcpProxy filter.
func Compile(tp *tcpproxyv3.TcpProxy) (*Config, error) {
	cfg := &Config{StatPrefix: tp.StatPrefix, IdleTimeout: time.Hour}
	if tp.IdleTimeout != nil {
		cfg.IdleTimeout = tp.IdleTimeout.AsDuration()
	}
	switch c := tp.ClusterSpecifier.(type) {
	case *tcpproxyv3.TcpProxy_Cluster:
		cfg.Clusters, cfg.Total = []WeightedCluster{{Name: c.Cluster, Weight: 1}}, 1
	case *tcpproxyv3.TcpProxy_WeightedClusters:
		for _, wc := range c.WeightedClusters.Clusters {
			cfg.Clusters = append(cfg.Clusters, WeightedCluster{Name: wc.Name, Weight: wc.Weight})
			cfg.Total += wc.Weight
		}
		if cfg.Total == 0 {
			return nil, fmt.Errorf("tcp proxy %s: weighted clusters have no weight", tp.StatPrefix)
		}
	default:
		return nil, fmt.Errorf("tcp proxy %s: no cluster", tp.StatPrefix)
	}
	logs, err := accesslog.FromEnvoy(tp.AccessLog)
	if err != nil {
		return nil, fmt.Errorf("tcp proxy %s: %w", tp.StatPrefix, err)
	}
	cfg.AccessLogs = logs
	return cfg, nil
}

// Handler proxies connections for one configuration.
type Handler struct {
	cfg      *Config
	clusters *upstream.Manager
	logs     []accesslog.Bound

	cxTotal, noRoute, rx, tx, idle *stats.Counter
	cxActive                       *stats.Gauge
	rbac                           []*rbac.NetworkFilter
	// istio records Istio's TCP metrics (nil: none).
	istio *istiometrics.Metrics

	draining atomic.Bool
}

// NewHandler returns a handler for cfg.
func NewHandler(cfg *Config, clusters *upstream.Manager, store *stats.Store, sinks *accesslog.Sinks, log logr.Logger) *Handler {
	sc := stats.TCPScope(cfg.StatPrefix)
	h := &Handler{cfg: cfg, clusters: clusters, logs: sinks.Resolve(cfg.AccessLogs, log),
		cxTotal: store.Counter(sc, "downstream_cx_total"), noRoute: store.Counter(sc, "downstream_cx_no_route"),
		rx: store.Counter(sc, "downstream_cx_rx_bytes_total"), tx: store.Counter(sc, "downstream_cx_tx_bytes_total"),
		idle: store.Counter(sc, "idle_timeout"), cxActive: store.Gauge(sc, "downstream_cx_active")}
	for _, n := range cfg.RBAC {
		h.rbac = append(h.rbac, n.New(store))
	}
	return h
}

// WithIstioMetrics makes the handler record Istio's standard TCP metrics.
func (h *Handler) WithIstioMetrics(m *istiometrics.Metrics) *Handler {
	h.istio = m
	return h
}

// allowed runs the network RBAC filters on a new connection. sni is the
// server name the listener saw (TLS passthrough); a terminated TLS
// connection also offers its client certificate.
func (h *Handler) allowed(down net.Conn, sni string) bool {
	if len(h.rbac) == 0 {
		return true
	}
	a := &rbac.Attrs{SNI: sni}
	if ra, err := netip.ParseAddrPort(down.RemoteAddr().String()); err == nil {
		a.Peer = ra.Addr().Unmap()
		a.Client = a.Peer
	}
	if la, err := netip.ParseAddrPort(down.LocalAddr().String()); err == nil {
		a.Local = la
		if p := h.cfg.ListenerPort; p != 0 && p <= 0xffff {
			a.Local = netip.AddrPortFrom(la.Addr().Unmap(), uint16(p))
		}
	}
	if tc, ok := down.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		if a.SNI == "" {
			a.SNI = cs.ServerName
		}
		if len(cs.PeerCertificates) > 0 {
			a.Cert = cs.PeerCertificates[0]
		}
	}
	for _, f := range h.rbac {
		if !f.Allow(a) {
			return false
		}
	}
	return true
}

// Config returns the handler's configuration.
func (h *Handler) Config() *Config { return h.cfg }

// Drain marks the handler as replaced. TCP connections carry no requests
// to end gracefully, so they run until either side closes or the listener
// drain deadline closes them.
func (h *Handler) Drain(time.Duration) { h.draining.Store(true) }

func (h *Handler) pick() string {
	if len(h.cfg.Clusters) == 1 {
		return h.cfg.Clusters[0].Name
	}
	n := rand.Uint32N(h.cfg.Total)
	for _, c := range h.cfg.Clusters {
		if n < c.Weight {
			return c.Name
		}
		n -= c.Weight
	}
	return h.cfg.Clusters[len(h.cfg.Clusters)-1].Name
}

// ServeConn proxies one downstream connection until both directions end.
// sni is the server name the listener read from a ClientHello, if any.
func (h *Handler) ServeConn(ctx context.Context, down net.Conn, sni string) {
	start := time.Now()
	h.cxTotal.Inc()
	h.cxActive.Inc()
	defer h.cxActive.Dec()
	entry := accesslog.Entry{Start: start, TCP: true, UpstreamServiceTime: -1}
	var c *upstream.Cluster // where the connection went (nil: nowhere)
	defer func() {
		down.Close()
		if len(h.logs) > 0 {
			entry.Duration = time.Since(start)
			entry.SNI = sni
			entry.DownstreamRemote = down.RemoteAddr().String()
			entry.DownstreamLocal = down.LocalAddr().String()
			if c != nil {
				entry.Cluster = c.Name()
			}
			for i := range h.logs {
				h.logs[i].Log(&entry)
			}
		}
	}()
	if !h.allowed(down, sni) {
		return // closed right after accept: nothing dialled, nothing read
	}
	// A connection is counted in Istio's metrics when its upstream
	// connection opens (with the bytes as they flow), or when it fails
	// before that (opened and closed at once, with the response flags).
	var host *upstream.Host
	var series *istiometrics.TCPSeries
	if h.istio != nil {
		defer func() {
			if series == nil {
				series = h.istio.TCP(c, host, entry.Flags)
				series.Opened.Inc()
			}
			series.Closed.Inc()
		}()
	}
	c = h.clusters.Get(h.pick())
	if c == nil {
		h.noRoute.Inc()
		entry.Flags |= accesslog.NoClusterFound
		return
	}
	host = c.Pick(upstream.PickOptions{})
	if host == nil {
		entry.Flags |= accesslog.NoHealthyUpstream
		return
	}
	entry.UpstreamHost = host.Addr
	up, err := c.DialRaw(ctx, host)
	if err != nil {
		if errors.Is(err, upstream.ErrOverflow) {
			entry.Flags |= accesslog.UpstreamOverflow
		} else {
			entry.Flags |= accesslog.UpstreamConnectionFailure
			c.Report(host, upstream.LocalFailure, 0)
		}
		return
	}
	defer up.Close()
	host.Active.Add(1)
	defer host.Active.Add(-1)
	c.Report(host, upstream.Success, 0)
	rxCounters := []*stats.Counter{h.rx, c.Stats.CxTxBytes}
	txCounters := []*stats.Counter{h.tx, c.Stats.CxRxBytes}
	if h.istio != nil {
		series = h.istio.TCP(c, host, 0)
		series.Opened.Inc()
		rxCounters = append(rxCounters, &series.Received)
		txCounters = append(txCounters, &series.Sent)
	}

	// Two goroutines per connection, one per direction (this one and
	// one more); the idle timeout is each direction's read deadline,
	// extended while the other direction moves, and the proxy stopping
	// closes both sockets.
	var closeOnce sync.Once
	closeBoth := func() { closeOnce.Do(func() { up.Close(); down.Close() }) }
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	p := &piper{limit: h.cfg.BufferLimit, idle: h.cfg.IdleTimeout, closeBoth: closeBoth}
	p.last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() { defer close(done); entry.BytesSent = p.pipe(down, up, txCounters...) }()
	entry.BytesReceived = p.pipe(up, down, rxCounters...)
	<-done
	if p.idled.Load() {
		h.idle.Inc()
	}
}

// bufSize is the copy buffer of each direction.
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// piper is what a connection's two directions share.
type piper struct {
	limit int           // bytes in flight per direction (0: bufSize)
	idle  time.Duration // 0: no idle timeout
	// last is when either direction last moved bytes (unix nanos).
	last      atomic.Int64
	idled     atomic.Bool
	closeBoth func()
}

// pipe copies src to dst through at most limit bytes at a time, then
// half-closes dst so the peer sees EOF while the other direction keeps
// flowing. When neither direction has moved for the idle timeout, it
// closes both sockets.
func (p *piper) pipe(dst, src net.Conn, counters ...*stats.Counter) int64 {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	if p.limit > 0 && p.limit < len(buf) {
		buf = buf[:p.limit]
	}
	if p.idle > 0 {
		src.SetReadDeadline(time.Now().Add(p.idle))
	}
	var total int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				break
			}
			total += int64(n)
			for _, c := range counters {
				c.Add(uint64(n))
			}
		}
		if err != nil {
			if p.idle > 0 && isTimeout(err) {
				// Idle only if the other direction did not move either.
				if rest := p.idle - time.Since(time.Unix(0, p.last.Load())); rest > 0 {
					src.SetReadDeadline(time.Now().Add(rest))
					continue
				}
				p.idled.Store(true)
				p.closeBoth()
				return total
			}
			if err != io.EOF {
				dst.Close()
				src.Close()
				return total
			}
			break
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	return total
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
