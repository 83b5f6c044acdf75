package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// Errors from getting a connection. The forwarder maps them to Envoy's
// response flags: overflow → UO, connect failure → UF.
var (
	ErrOverflow       = errors.New("upstream connection pool overflow")
	ErrConnectFailure = errors.New("upstream connection failure")
	// ErrHostEjected: the host was ejected while the request waited for a
	// connection to it; the request should pick another host.
	ErrHostEjected = errors.New("upstream host ejected while waiting for a connection")
)

// Conn is a pooled HTTP/1.1 upstream connection.
type Conn struct {
	NC       net.Conn
	BR       *bufio.Reader
	BW       *bufio.Writer
	Host     *Host
	requests uint32
	created  time.Time
	lastUsed time.Time
	// Reused is set when the connection served an earlier request: a
	// failure before any response byte may then be the server having
	// closed it while idle, and the request can be replayed once.
	Reused bool
	// deadline is what SetDeadline last gave NC.
	deadline time.Time
}

// SetDeadline sets NC's read and write deadline, unless it has it
// already: requests without a timeout then cost a pooled connection no
// runtime timer updates (each is a lock and a timer heap operation).
// Deadlines on NC must be set through it.
func (c *Conn) SetDeadline(t time.Time) error {
	if t.Equal(c.deadline) {
		return nil
	}
	c.deadline = t
	return c.NC.SetDeadline(t)
}

// bufSize is each upstream connection's read and write buffer. Heads fit
// in it; bodies larger than it move through the proxy's copy buffers
// without it. Every connection holds both for its lifetime, also while a
// client trickles a request body to it, so they are kept small.
const bufSize = 8 << 10

// pool holds a host's idle connections.
type pool struct {
	host   *Host
	mu     sync.Mutex
	idle   []*Conn
	closed bool
}

func newPool(h *Host) *pool { return &pool{host: h} }

// waiter is a request waiting for a connection when max_connections is
// reached (a pending request, in Envoy's terms).
type waiter struct {
	host *Host
	// ch receives a connection for host, or nil: permission to dial (the
	// capacity was reserved for the waiter).
	ch chan *Conn
}

type waitQueue struct {
	mu      sync.Mutex
	waiters []*waiter
}

// Get returns a connection to h: an idle one, a new one, or (when the
// cluster is at max_connections) the next one released, waiting at most
// until ctx ends. Pending requests beyond max_pending_requests overflow.
func (c *Cluster) Get(ctx context.Context, h *Host) (*Conn, error) { return c.get(ctx, h, false) }

// GetUnlessEjected is Get for a request that can still choose another
// host: if h is ejected while the request waits for a connection, it gets
// ErrHostEjected instead of one. Hosts are picked before waiting, so
// without this every request queued behind a failing host's first error
// would still be sent to it (seed 002: v2 must see about one request).
func (c *Cluster) GetUnlessEjected(ctx context.Context, h *Host) (*Conn, error) {
	return c.get(ctx, h, true)
}

func (c *Cluster) get(ctx context.Context, h *Host, unlessEjected bool) (*Conn, error) {
	p := h.pool
	now := time.Now()
	var stale []*Conn
	// A cluster replaced by a configuration push still serves the requests
	// that already chose it: it just keeps no idle connections.
	p.mu.Lock()
	for len(p.idle) > 0 {
		conn := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(conn.lastUsed) > c.cfg.IdleTimeout {
			stale = append(stale, conn)
			continue
		}
		p.mu.Unlock()
		c.discardAll(stale, true)
		return conn, nil
	}
	p.mu.Unlock()
	c.discardAll(stale, true)

	if c.connections.Add(1) <= c.cfg.Limits.MaxConnections {
		return c.dial(ctx, h)
	}
	c.connections.Add(-1)
	// At the limit, an idle connection to another host is worth less than
	// this request: close it and use its capacity.
	if c.reclaimIdle(h) {
		if c.connections.Add(1) <= c.cfg.Limits.MaxConnections {
			return c.dial(ctx, h)
		}
		c.connections.Add(-1) // another request took it first
	}
	c.Stats.CxOverflow.Inc()
	c.Stats.CBCxOpen.Set(1)
	return c.wait(ctx, h, unlessEjected)
}

func (c *Cluster) wait(ctx context.Context, h *Host, unlessEjected bool) (*Conn, error) {
	if c.pendingRequests.Add(1) > c.cfg.Limits.MaxPendingRequests {
		c.pendingRequests.Add(-1)
		c.Stats.RqPendingOverflow.Inc()
		c.Stats.CBRqPendingOpen.Set(1)
		return nil, ErrOverflow
	}
	c.Stats.RqPendingTotal.Inc()
	c.Stats.RqPendingActive.Inc()
	defer func() {
		c.pendingRequests.Add(-1)
		c.Stats.RqPendingActive.Dec()
		c.Stats.CBRqPendingOpen.Set(0)
	}()
	w := &waiter{host: h, ch: make(chan *Conn, 1)}
	q := &c.queue
	q.mu.Lock()
	q.waiters = append(q.waiters, w)
	q.mu.Unlock()
	select {
	case conn := <-w.ch:
		if unlessEjected && h.Ejected() {
			// Its connections are of no use now: close this one, or
			// give back the capacity to dial one.
			if conn != nil {
				c.discard(conn, false)
			} else {
				c.connections.Add(-1)
				c.wakeOne()
			}
			return nil, ErrHostEjected
		}
		if conn == nil {
			return c.dial(ctx, h)
		}
		return conn, nil
	case <-ctx.Done():
		q.mu.Lock()
		for i, x := range q.waiters {
			if x == w {
				q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
				q.mu.Unlock()
				return nil, ctx.Err()
			}
		}
		q.mu.Unlock()
		// Handed something concurrently: give it back.
		if conn := <-w.ch; conn != nil {
			c.Release(conn, true)
		} else {
			c.connections.Add(-1)
			c.wakeOne()
		}
		return nil, ctx.Err()
	}
}

func (c *Cluster) dial(ctx context.Context, h *Host) (*Conn, error) {
	d := net.Dialer{Timeout: c.cfg.ConnectTimeout, KeepAlive: -1}
	if c.cfg.KeepaliveTime > 0 || c.cfg.KeepaliveProbes > 0 {
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: c.cfg.KeepaliveTime, Interval: c.cfg.KeepaliveInterval, Count: int(c.cfg.KeepaliveProbes)}
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", h.Addr)
	if err == nil && c.cfg.TLS != nil {
		nc, err = c.handshake(dctx, nc, h)
	}
	if err != nil {
		c.connections.Add(-1)
		c.Stats.CxConnectFail.Inc()
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			c.Stats.CxConnectTimeout.Inc()
		}
		c.wakeOne()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrConnectFailure, h.Addr, err)
	}
	c.Stats.CxTotal.Inc()
	c.Stats.CxActive.Inc()
	now := time.Now()
	return &Conn{NC: nc, BR: bufio.NewReaderSize(nc, bufSize), BW: bufio.NewWriterSize(nc, bufSize), Host: h, created: now, lastUsed: now}, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *Cluster) handshake(ctx context.Context, nc net.Conn, h *Host) (net.Conn, error) {
	cfg, err := c.mgr.tlsConfig(c.cfg.TLS, h)
	if err != nil {
		nc.Close()
		return nil, err
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// Release returns a connection after a request. reusable is false when
// the exchange left it in an unknown state (body not fully read, error).
func (c *Cluster) Release(conn *Conn, reusable bool) {
	conn.requests++
	conn.Reused = true
	conn.lastUsed = time.Now()
	if max := c.cfg.MaxRequestsPerConnection; reusable && max > 0 && conn.requests >= max {
		c.Stats.CxMaxRequests.Inc()
		reusable = false
	}
	if reusable && c.cfg.MaxConnectionDuration > 0 && time.Since(conn.created) > c.cfg.MaxConnectionDuration {
		reusable = false
	}
	if reusable {
		// Hand the connection straight to a request waiting for this host.
		q := &c.queue
		q.mu.Lock()
		for i, w := range q.waiters {
			if w.host == conn.Host {
				q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
				q.mu.Unlock()
				w.ch <- conn
				return
			}
		}
		q.mu.Unlock()
		p := conn.Host.pool
		p.mu.Lock()
		if !p.closed {
			p.idle = append(p.idle, conn)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
	c.discard(conn, false)
}

// reclaimIdle closes one idle connection held by a host other than h,
// without waking a waiter (the caller takes the capacity). It reports
// whether it found one.
func (c *Cluster) reclaimIdle(h *Host) bool {
	hs := c.hosts.Load()
	if hs == nil {
		return false
	}
	for _, other := range hs.all {
		if other == h {
			continue
		}
		p := other.pool
		p.mu.Lock()
		if n := len(p.idle); n > 0 {
			conn := p.idle[0]
			p.idle = append(p.idle[:0], p.idle[1:]...)
			p.mu.Unlock()
			conn.NC.Close()
			c.Stats.CxDestroy.Inc()
			c.Stats.CxActive.Dec()
			c.connections.Add(-1)
			return true
		}
		p.mu.Unlock()
	}
	return false
}

// closeIdle closes a host's idle connections.
func (c *Cluster) closeIdle(h *Host) {
	p := h.pool
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, conn := range idle {
		c.discard(conn, false)
	}
}

func (c *Cluster) discardAll(conns []*Conn, idle bool) {
	for _, conn := range conns {
		if idle {
			c.Stats.CxIdleTimeout.Inc()
		}
		c.discard(conn, false)
	}
}

// discard closes a connection and passes its capacity to a waiter.
func (c *Cluster) discard(conn *Conn, remote bool) {
	conn.NC.Close()
	c.Stats.CxDestroy.Inc()
	if remote {
		c.Stats.CxDestroyRemote.Inc()
	}
	c.Stats.CxActive.Dec()
	c.connections.Add(-1)
	c.Stats.CBCxOpen.Set(0)
	c.wakeOne()
}

// wakeOne lets the first waiter dial, if capacity allows.
func (c *Cluster) wakeOne() {
	q := &c.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiters) == 0 {
		return
	}
	if c.connections.Add(1) > c.cfg.Limits.MaxConnections {
		c.connections.Add(-1)
		return
	}
	w := q.waiters[0]
	q.waiters = q.waiters[1:]
	w.ch <- nil
}

// close drops idle connections; busy ones are closed when released.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, conn := range idle {
		conn.NC.Close()
		conn.Host.cluster.Stats.CxActive.Dec()
		conn.Host.cluster.connections.Add(-1)
		conn.Host.cluster.Stats.CxDestroy.Inc()
	}
}

// IsReset reports whether err is the peer resetting or closing.
func IsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// DialRaw opens a TCP (or TLS, when the cluster originates TLS) connection
// to h for a TCP proxy, under the cluster's max_connections. Closing the
// returned connection releases the capacity.
func (c *Cluster) DialRaw(ctx context.Context, h *Host) (net.Conn, error) {
	if c.connections.Add(1) > c.cfg.Limits.MaxConnections {
		c.connections.Add(-1)
		c.Stats.CxOverflow.Inc()
		c.Stats.CBCxOpen.Set(1)
		return nil, ErrOverflow
	}
	conn, err := c.dial(ctx, h)
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: conn.NC, c: c}, nil
}

type rawConn struct {
	net.Conn
	c    *Cluster
	once sync.Once
}

func (r *rawConn) Close() error {
	r.once.Do(func() {
		r.c.Stats.CxActive.Dec()
		r.c.Stats.CxDestroy.Inc()
		r.c.connections.Add(-1)
		r.c.Stats.CBCxOpen.Set(0)
		r.c.wakeOne()
	})
	return r.Conn.Close()
}

// CloseWrite half-closes the connection when the transport allows it.
func (r *rawConn) CloseWrite() error {
	if cw, ok := r.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
