// Package overload keeps the edge proxy alive when clients ask for more than
// the machine has, as Envoy's overload manager does: a global cap on
// downstream connections, enforced when they are accepted and set below the
// file-descriptor limit so that the proxy never runs out of descriptors for
// its upstream connections, its listeners and its control plane; under
// pressure, connections that wait idle for a request give way to new ones
// (nginx closes keep-alive connections the same way when it runs out of
// connections), then connections whose request head has been arriving for
// over a second (a browser sends its head in one packet; a slowloris
// client holds its slot by never finishing it); and a global budget for
// request bodies held in memory.
//
// Written by hand: it is small, sits on the accept path, and its policy is
// the point.
package overload

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Manager is the overload state shared by every listener of a proxy.
type Manager struct {
	maxConns int64
	active   atomic.Int64

	mu   sync.Mutex
	live map[*Conn]struct{}

	maxBuffered int64
	buffered    atomic.Int64

	// Rejected counts connections shed at the cap; Evicted, idle
	// connections closed to make room.
	Rejected, Evicted atomic.Int64
}

// Options configure a Manager.
type Options struct {
	// MaxConnections caps downstream connections (0: derived from the
	// file-descriptor limit, see DefaultMaxConnections).
	MaxConnections int64
	// MaxBufferedBytes caps request bytes held in memory across all
	// requests (0: DefaultMaxBufferedBytes).
	MaxBufferedBytes int64
}

// DefaultMaxBufferedBytes bounds memory held for request replay (retries,
// mirrors) across the proxy.
const DefaultMaxBufferedBytes = 256 << 20

// reservedFDs are kept for listeners, the admin and status servers, the
// control-plane stream, logs and certificate files.
const reservedFDs = 256

// DefaultMaxConnections leaves half of the descriptors the process may open
// (after a reserve) to upstream connections: every proxied downstream
// connection may need one.
func DefaultMaxConnections() int64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == 0 {
		return 1024
	}
	n := (int64(lim.Cur) - reservedFDs) / 2
	if lim.Cur > 1<<40 { // RLIM_INFINITY
		n = 1 << 20
	}
	return max(n, 64)
}

// New returns a manager.
func New(o Options) *Manager {
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections()
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	return &Manager{maxConns: o.MaxConnections, maxBuffered: o.MaxBufferedBytes, live: map[*Conn]struct{}{}}
}

// MaxConnections is the connection cap.
func (m *Manager) MaxConnections() int64 { return m.maxConns }

// Active is the number of admitted connections.
func (m *Manager) Active() int64 { return m.active.Load() }

// Closer is what the manager closes to evict a connection.
type Closer interface{ Close() error }

// Conn is one admitted connection. Its owner marks it idle while it waits
// for a request (or, new, for its first byte), receiving a request head,
// or busy, and calls Done when it ends.
type Conn struct {
	m *Manager
	// c is what eviction closes; its owner may replace it (SetCloser)
	// while the manager may read it.
	c atomic.Pointer[Closer]
	// state is since when the connection is idle (unix nanos > 0), since
	// when its request head is arriving (negated), or 0: busy.
	state  atomic.Int64
	closed atomic.Bool
}

// HeadGrace is how long a request head may take to arrive before its
// connection may be closed to make room.
const HeadGrace = time.Second

// Admit accounts a new connection. When the cap is reached, the connection
// that has waited idle the longest is closed to make room; when none is
// idle, Admit returns nil and the caller must close c at once (shed).
func (m *Manager) Admit(c Closer) *Conn {
	n := m.active.Add(1)
	if n > m.maxConns && !m.evictIdle() {
		m.active.Add(-1)
		m.Rejected.Add(1)
		return nil
	}
	conn := &Conn{m: m}
	conn.c.Store(&c)
	conn.state.Store(time.Now().UnixNano()) // nothing received yet
	m.mu.Lock()
	m.live[conn] = struct{}{}
	m.mu.Unlock()
	return conn
}

// evictIdle closes the connections that most deserve it: a batch of 1/64
// of the cap (at least one), so that a flood of new connections does not
// scan the table once per connection. Idle connections go first, longest
// idle first; when none is idle, connections whose head has been arriving
// for over HeadGrace, slowest first. It reports whether any was closed.
func (m *Manager) evictIdle() bool {
	batch := max(int(m.maxConns/64), 1)
	now := time.Now().UnixNano()
	type cand struct {
		c     *Conn
		since int64
	}
	var idle, heads []cand
	m.mu.Lock()
	for c := range m.live {
		if c.closed.Load() {
			continue
		}
		switch s := c.state.Load(); {
		case s > 0:
			idle = append(idle, cand{c, s})
		case s < 0 && now+s > int64(HeadGrace):
			heads = append(heads, cand{c, -s})
		}
	}
	pick := idle
	if len(pick) == 0 {
		pick = heads
	}
	if len(pick) > batch {
		// Partial selection of the batch oldest: eviction is rare, and
		// the table is the cap's size.
		for i := 0; i < batch; i++ {
			oldest := i
			for j := i + 1; j < len(pick); j++ {
				if pick[j].since < pick[oldest].since {
					oldest = j
				}
			}
			pick[i], pick[oldest] = pick[oldest], pick[i]
		}
		pick = pick[:batch]
	}
	for _, cd := range pick {
		cd.c.closed.Store(true)
	}
	m.mu.Unlock()
	for _, cd := range pick {
		(*cd.c.c.Load()).Close()
		m.Evicted.Add(1)
	}
	return len(pick) > 0
}

// SetCloser makes eviction close cl instead of what Admit was given: a
// connection whose owner must act before its socket closes (one parked
// without a goroutine) names itself.
func (c *Conn) SetCloser(cl Closer) {
	if c != nil {
		c.c.Store(&cl)
	}
}

// Idle marks the connection as waiting for a request since now (the
// caller's clock reading, which it needs anyway: one fewer per request).
func (c *Conn) Idle(now time.Time) {
	if c != nil {
		c.state.Store(now.UnixNano())
	}
}

// Head marks the connection as receiving a request head (or a TLS
// handshake) since now.
func (c *Conn) Head(now time.Time) {
	if c != nil {
		c.state.Store(-now.UnixNano())
	}
}

// Busy marks the connection as working on a request.
func (c *Conn) Busy() {
	if c != nil {
		c.state.Store(0)
	}
}

// Evicted reports whether the manager closed the connection.
func (c *Conn) Evicted() bool { return c != nil && c.closed.Load() }

// Done releases the connection's slot. It must be called exactly once.
func (c *Conn) Done() {
	if c == nil {
		return
	}
	c.m.mu.Lock()
	delete(c.m.live, c)
	c.m.mu.Unlock()
	c.m.active.Add(-1)
}

// Pressure is the share of the connection cap in use, 0 to 1.
func (m *Manager) Pressure() float64 {
	return min(float64(m.active.Load())/float64(m.maxConns), 1)
}

// ReserveBuffer takes n bytes of the global request-buffer budget. It
// reports false, taking nothing, when the budget cannot cover them: the
// caller then streams instead of buffering (and gives up replays).
func (m *Manager) ReserveBuffer(n int64) bool {
	if m == nil || n <= 0 {
		return true
	}
	if m.buffered.Add(n) > m.maxBuffered {
		m.buffered.Add(-n)
		return false
	}
	return true
}

// ReleaseBuffer returns bytes taken with ReserveBuffer.
func (m *Manager) ReleaseBuffer(n int64) {
	if m != nil && n > 0 {
		m.buffered.Add(-n)
	}
}

// Buffered is the number of request bytes held for replay.
func (m *Manager) Buffered() int64 { return m.buffered.Load() }
