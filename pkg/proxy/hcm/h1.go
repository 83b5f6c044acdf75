package hcm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/idlepark"
	"github.com/portico-gateway/portico/pkg/proxy/overload"
	"github.com/portico-gateway/portico/pkg/proxy/readahead"
)

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// readerSize is the downstream read buffer. Small, because an idle or
// slow connection holds it: heads larger than this are assembled across
// reads (up to the header limit), and large body reads bypass the buffer.
const readerSize = 4 << 10

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerSize) }}
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// ServeConn serves one downstream connection until it closes. tlsConn is
// the TLS connection when TLS was terminated (nc is then the same value);
// oc is the connection's overload slot (nil when not accounted). end,
// if not nil, runs once when the connection is over: ServeConn may
// return before that, when an idle connection parks (see h1conn.park)
// and is served later by another goroutine.
func (h *Handler) ServeConn(ctx context.Context, nc net.Conn, tlsConn *tls.Conn, oc *overload.Conn, end func()) {
	h.st.cxTotal.Inc()
	h.st.cxActive.Inc()
	done := func() {
		h.st.cxActive.Dec()
		h.st.cxDestroy.Inc()
		if end != nil {
			end()
		}
	}
	var state *tls.ConnectionState
	if tlsConn != nil {
		cs := tlsConn.ConnectionState()
		state = &cs
		if cs.NegotiatedProtocol == "h2" {
			defer done()
			oc.Busy() // HTTP/2 idleness is the HTTP/2 server's to judge
			h.st.cxHTTP2.Inc()
			h.serveH2(ctx, tlsConn, state)
			return
		}
	}
	tc := &timedConn{Conn: nc}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(tc)
	if state == nil {
		tc.readBy(time.Now().Add(h.idleTimeout()))
		if b, err := br.Peek(3); err == nil && string(b) == "PRI" {
			if b, err := br.Peek(len(h2Preface)); err == nil && bytes.Equal(b, h2Preface) {
				// The reader goes back to the pool here: the HTTP/2
				// connection gets its own copy of what was read ahead.
				defer done()
				tc.setReadDeadline(time.Time{}) // nc serves on, without tc
				oc.Busy()
				h.st.cxHTTP2.Inc()
				ahead := make([]byte, br.Buffered())
				br.Read(ahead)
				br.Reset(nil)
				readerPool.Put(br)
				h.serveH2(ctx, &readahead.Conn{Conn: nc, Ahead: ahead}, nil)
				return
			}
		}
	}
	h.st.cxHTTP1.Inc()
	c := &h1conn{h: h, ctx: ctx, nc: nc, tc: tc, br: br, state: state, oc: oc, done: done}
	c.start()
}

// idleTimeout is how long a connection may wait for a request.
func (h *Handler) idleTimeout() time.Duration {
	if h.cfg.IdleTimeout > 0 {
		return h.cfg.IdleTimeout
	}
	return 24 * time.Hour // "disabled": bounded anyway, and evictable under pressure
}

// timedConn arms a connection's deadlines for the connection manager's
// timeouts: an exact read deadline while a request head is awaited
// (idle timeout, then request headers timeout), and sliding deadlines
// (stream idle timeout) while a request's body and response move.
//
// Deadlines reach the socket only when a read or write needs them, and
// a sliding deadline is pushed forward at most once per slack: every
// SetDeadline is a runtime timer update, and a keep-alive request that
// has no body and whose head arrived in one read would otherwise pay
// four of them (idle, head, and both directions' stream idle timeout)
// for one read and one write. Now it pays for the read that waits for it.
type timedConn struct {
	net.Conn
	// readAt is the exact read deadline wanted (zero: none) while
	// readIdle is 0; readArmed is the one the socket has.
	readAt, readArmed   time.Time
	readIdle, writeIdle time.Duration
	// readPushed and writePushed are when the sliding deadlines were
	// last armed (zero: not yet for this request, or never).
	readPushed  time.Time
	writePushed time.Time
	// writeArmed: the socket has a write deadline.
	writeArmed bool
	// aborted is set, from another goroutine, when a reader that may be
	// blocked in Read must return (see abortReads).
	aborted atomic.Bool
}

var errReadsAborted = errors.New("connection reads aborted")

// abortReads makes every pending and future Read fail at once. It may be
// called from any goroutine; the connection cannot serve another request
// afterwards.
func (c *timedConn) abortReads() {
	c.aborted.Store(true)
	c.Conn.SetReadDeadline(time.Now())
}

// readBy makes reads fail at t (zero: never) and stops sliding.
func (c *timedConn) readBy(t time.Time) {
	c.readIdle = 0
	c.readAt = t
}

// armRead gives the socket the read deadline readBy asked for, for a
// reader that does not go through Read (waitReadable).
func (c *timedConn) armRead() {
	if c.readIdle == 0 && !c.readAt.Equal(c.readArmed) {
		c.setReadDeadline(c.readAt)
	}
}

func (c *timedConn) setReadDeadline(t time.Time) {
	c.readArmed = t
	c.Conn.SetReadDeadline(t)
}

// slide makes reads and writes fail after d without progress (0: never).
func (c *timedConn) slide(d time.Duration) {
	if d > 0 {
		c.readIdle, c.readPushed = d, time.Time{}
	} else {
		c.readBy(time.Time{})
	}
	if d != c.writeIdle {
		// An armed write deadline stays valid across requests while the
		// timeout is the same: Write pushes it once it is older than
		// slack.
		c.writeIdle, c.writePushed = d, time.Time{}
	}
}

func slack(d time.Duration) time.Duration { return min(d/8, time.Second) }

func (c *timedConn) Read(p []byte) (int, error) {
	if c.aborted.Load() {
		return 0, errReadsAborted
	}
	if c.readIdle > 0 {
		// time.Since reads only the monotonic clock: half of time.Now.
		if c.readPushed.IsZero() || time.Since(c.readPushed) > slack(c.readIdle) {
			now := time.Now()
			c.readPushed = now
			c.setReadDeadline(now.Add(c.readIdle))
		}
	} else if !c.readAt.Equal(c.readArmed) {
		c.setReadDeadline(c.readAt)
	} else {
		return c.Conn.Read(p)
	}
	// A deadline was just armed: abortReads may have run between the
	// check above and arming, and its deadline (now) been overwritten.
	if c.aborted.Load() {
		return 0, errReadsAborted
	}
	return c.Conn.Read(p)
}

func (c *timedConn) Write(p []byte) (int, error) {
	if c.writeIdle > 0 {
		if c.writePushed.IsZero() || time.Since(c.writePushed) > slack(c.writeIdle) {
			now := time.Now()
			c.writePushed, c.writeArmed = now, true
			c.Conn.SetWriteDeadline(now.Add(c.writeIdle))
		}
	} else if c.writeArmed {
		c.writeArmed = false
		c.Conn.SetWriteDeadline(time.Time{})
	}
	return c.Conn.Write(p)
}

// h1conn is one HTTP/1.1 connection: everything its loop needs, kept
// outside any goroutine's stack so that an idle connection can park
// without one (park) and be served on by a new goroutine (resume).
type h1conn struct {
	h     *Handler
	ctx   context.Context
	nc    net.Conn
	tc    *timedConn
	br    *bufio.Reader  // the connection's reader; nil while parked
	req   *httpx.Request // reused across requests; nil while parked
	w     h1Writer
	state *tls.ConnectionState
	oc    *overload.Conn
	// done ends the connection's accounting, once.
	done          func()
	remote, local netip.AddrPort
	remoteHost    string
	scheme        string
	parked        idlepark.Waiter
	resumeFn      func(error)
	abortFn       func()
}

// start serves the connection, or parks it; whoever serves it last
// finishes it.
func (c *h1conn) start() {
	h := c.h
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	// Evicting a parked connection must unpark it before closing it.
	c.oc.SetCloser(c)
	c.remote, c.local = addrPort(c.nc.RemoteAddr()), addrPort(c.nc.LocalAddr())
	c.remoteHost = hostText(c.remote) // once, not per request (x-forwarded-for)
	c.scheme = "http"
	if c.state != nil {
		c.scheme = "https"
	}
	c.req = &httpx.Request{}
	c.w = h1Writer{conn: c.tc, br: c.br}
	c.resumeFn = c.resume
	c.abortFn = c.tc.abortReads // once: a method value allocates
	if !c.serve(false) {
		c.finish()
	}
}

// finish closes the connection and gives back what it holds.
func (c *h1conn) finish() {
	c.h.mu.Lock()
	delete(c.h.conns, c)
	c.h.mu.Unlock()
	c.nc.Close()
	c.w.release()
	if c.br != nil {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br = nil
	}
	c.done()
}

// Close closes the connection from another goroutine (drain deadline,
// overload eviction); a parked connection is unparked first, and its
// resumption finishes it.
func (c *h1conn) Close() error {
	if p := c.h.env.Parker; p != nil {
		p.Cancel(&c.parked, net.ErrClosed)
	}
	return c.nc.Close()
}

// serve serves requests until the connection ends (false) or parks
// (true: another goroutine owns c from then on). resumed says that the
// connection has just been woken with bytes to read.
func (c *h1conn) serve(resumed bool) (parked bool) {
	h, tc, oc := c.h, c.tc, c.oc
	idle := h.idleTimeout()
	// A draining handler still serves the next request on every
	// connection, new or pooled, and answers it with Connection: close:
	// closing an idle connection instead would race the client's next
	// request. Connections still idle at the drain deadline are closed.
	for {
		if resumed {
			resumed = false
		} else if c.br.Buffered() == 0 {
			// Wait for a request: idle, and evictable under overload.
			// A request that follows soon is read the usual way; a
			// connection still idle after idleRelease waits without
			// its goroutine and buffers (park), or at least without its
			// read buffer (waitRequest): that costs system calls, and
			// so is kept off the busy path.
			now := time.Now()
			tc.readBy(now.Add(min(idle, idleRelease)))
			oc.Idle(now)
			_, err := c.br.Peek(1)
			if err != nil && isTimeout(err) && idle > idleRelease && !tc.aborted.Load() {
				deadline := now.Add(idle)
				tc.readBy(deadline)
				if c.park(deadline) {
					return true
				}
				if err = waitRequest(tc, &c.br, &c.w); err == nil {
					_, err = c.br.Peek(1)
				}
			}
			if err != nil {
				if isTimeout(err) {
					h.st.cxIdleTimeout.Inc()
				}
				return false
			}
		}
		// The request's clock starts when its first bytes are here (as
		// Envoy's does); the same reading serves the head's deadline.
		received := time.Now()
		oc.Head(received)
		if t := h.cfg.RequestHeadersTimeout; t > 0 {
			tc.readBy(received.Add(t))
		} else {
			tc.readBy(time.Time{})
		}
		req, w := c.req, &c.w
		sp := scratchPool.Get().(*[]byte)
		err := h.cfg.Limits.ReadRequest(c.br, req, (*sp)[:0])
		scratchPool.Put(sp)
		if err != nil {
			h.headError(w, err)
			return false
		}
		oc.Busy()
		tc.slide(h.cfg.StreamIdleTimeout)
		req.Scheme, req.RemoteAddr, req.LocalAddr, req.TLS = c.scheme, c.remote, c.local, c.state
		req.RemoteHost = c.remoteHost
		req.AbortBody, req.Received = c.abortFn, received
		w.reset(req.Proto, req.Close || h.draining.Load())
		h.st.rqHTTP1.Inc()
		keep := h.ServeRequest(c.ctx, req, w)
		if err := w.flushAndRelease(); err != nil {
			return false
		}
		if !keep || w.close || req.Close {
			return false
		}
		if req.Body != nil && !httpx.Drained(req.Body) {
			// Read what the client still sends, within reason, so the
			// connection stays usable.
			if !httpx.Discard(req.Body, 256<<10) {
				return false
			}
		}
	}
}

// park hands an idle connection to the handler's Parker, giving back its
// read buffer and request, until bytes arrive or deadline passes; it
// reports false, holding everything as before, when the connection
// cannot park (no socket under it, no Parker). After it returns true, c
// belongs to the goroutine resume runs in.
//
// It is called only after a read timed out with nothing buffered, so a
// TLS connection holds no plaintext to deliver (at most part of a
// record, which needs more bytes from the socket) and a read-ahead
// wrapper has replayed what it held: from then on only the socket
// becoming readable can make progress, and watching it is enough.
func (c *h1conn) park(deadline time.Time) bool {
	p := c.h.env.Parker
	if p == nil || c.tc.aborted.Load() {
		return false
	}
	sc := socketOf(c.tc.Conn)
	if sc == nil {
		return false
	}
	br := c.br
	c.br, c.w.br, c.req = nil, nil, nil
	br.Reset(nil)
	readerPool.Put(br)
	if err := p.Park(&c.parked, sc, deadline, c.resumeFn); err != nil {
		c.rearm()
		return false
	}
	return true
}

// socketOf finds the socket under TLS and read-ahead wrappers (nil if
// there is none).
func socketOf(nc net.Conn) syscall.Conn {
	for {
		switch c := nc.(type) {
		case *tls.Conn:
			nc = c.NetConn()
		case *readahead.Conn:
			if len(c.Ahead) > 0 {
				return nil
			}
			nc = c.Conn
		case syscall.Conn:
			return c
		default:
			return nil
		}
	}
}

// rearm takes a read buffer and a request again after parking.
func (c *h1conn) rearm() {
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(c.tc)
	c.w.br = c.br
	c.req = &httpx.Request{}
}

// resume serves a parked connection on: err is nil when it has bytes to
// read (or its peer hung up), otherwise why the park ended.
func (c *h1conn) resume(err error) {
	if err == nil {
		c.rearm()
		_, err = c.br.Peek(1)
	}
	if err != nil {
		if isTimeout(err) {
			c.h.st.cxIdleTimeout.Inc()
		}
		c.finish()
		return
	}
	if !c.serve(true) {
		c.finish()
	}
}

// idleRelease is how long a keep-alive connection waits for its next
// request in its goroutine, holding its read buffer, before it parks.
// Parking and resuming cost ~9 µs of CPU more than a blocked read
// (BenchmarkParkResume), paid once per request by clients that pause
// longer than this; a goroutine and its buffer waiting cost ~12 KiB for
// as long as they wait. At 1 s, ten thousand keep-alive connections
// opened in a burst held ~16 KiB each; at 50 ms, ~4 KiB (nginx: ~0.6).
const idleRelease = 50 * time.Millisecond

// waitRequest waits for the next request on an idle connection. On a
// plain socket it lets the read buffer go back to the pool while it
// waits (waitReadable) and takes one again when bytes arrive; otherwise
// (TLS, read-ahead) the caller's Peek waits, holding the buffer. The
// reader in *brp, and the writer's reference for hijacking, are the one
// to use afterwards.
func waitRequest(tc *timedConn, brp **bufio.Reader, w *h1Writer) error {
	if _, ok := tc.Conn.(syscall.Conn); !ok || tc.aborted.Load() {
		return nil
	}
	br := *brp
	br.Reset(nil)
	readerPool.Put(br)
	tc.armRead()
	err := waitReadable(tc.Conn)
	br = readerPool.Get().(*bufio.Reader)
	br.Reset(tc)
	*brp, w.br = br, br
	if errors.Is(err, errNoWait) {
		return nil
	}
	return err
}

// headError answers a request head that could not be read, as Envoy does:
// 400 for a malformed head, 431 beyond the size or count limits, 501 for a
// transfer coding it does not implement, 408 when the head did not arrive
// within the request headers timeout, and nothing when the client left.
func (h *Handler) headError(w *h1Writer, err error) {
	status := 0
	switch {
	case errors.Is(err, httpx.ErrHeaderTooLarge), errors.Is(err, httpx.ErrTooManyHeaders):
		status = 431
	case errors.Is(err, httpx.ErrUnsupportedCoding):
		status = 501
	case errors.Is(err, httpx.ErrMalformed):
		status = 400
	case isTimeout(err):
		h.st.rqHeadersTimeout.Inc()
		status = 408
	}
	if status == 0 {
		return
	}
	if status != 408 {
		h.st.cxProtocolError.Inc()
	}
	w.conn.slide(5 * time.Second) // the reply must not hang on a client that stopped reading
	w.reset("HTTP/1.1", true)
	h.localReply(w, &httpx.Request{Proto: "HTTP/1.1"}, status, "", nil)
	if w.flushAndRelease() == nil {
		delayedClose(w.conn.Conn)
	}
}

// delayedClose half-closes a connection after an error reply and reads
// what the client still sends, for at most a second, before the caller
// closes it: closing with unread bytes makes the kernel reset the
// connection, and a reset can destroy the reply before the client reads
// it (Envoy's delayed_close_timeout is 1 s too).
func delayedClose(nc net.Conn) {
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	nc.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, nc, 256<<10)
}

// hostText is a peer's address as text (an IPv4-mapped one unmapped), as
// requests carry it in httpx.Request.RemoteHost; empty if it has none.
func hostText(ap netip.AddrPort) string {
	if a := ap.Addr().Unmap(); a.IsValid() {
		return a.String()
	}
	return ""
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// h1Writer writes an HTTP/1.1 response. Its buffer is taken from a pool
// for one response and given back once the response is flushed, so a
// connection waiting for its next request holds none.
type h1Writer struct {
	conn    *timedConn
	br      *bufio.Reader // the connection's reader, for hijack
	bw      *bufio.Writer
	proto   string
	close   bool
	chunked bool
	started bool
	written int64
	noBody  bool
}

func (w *h1Writer) reset(proto string, close bool) {
	w.proto, w.close, w.chunked, w.started, w.written, w.noBody = proto, close, false, false, 0, false
}

func (w *h1Writer) buf() *bufio.Writer {
	if w.bw == nil {
		w.bw = writerPool.Get().(*bufio.Writer)
		w.bw.Reset(w.conn)
	}
	return w.bw
}

func (w *h1Writer) release() {
	if w.bw != nil {
		w.bw.Reset(nil)
		writerPool.Put(w.bw)
		w.bw = nil
	}
}

func (w *h1Writer) flushAndRelease() error {
	if w.bw == nil {
		return nil
	}
	err := w.bw.Flush()
	w.release()
	return err
}

// Continue sends an interim 100 Continue.
func (w *h1Writer) Continue() error {
	bw := w.buf()
	bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return bw.Flush()
}

func (w *h1Writer) WriteHeader(status int, hdr *httpx.Header, length int64, noBody bool) error {
	w.started, w.noBody = true, noBody
	if length < 0 && w.proto != "HTTP/1.1" && !noBody {
		w.close = true
	}
	w.chunked = httpx.WriteResponseHead(w.buf(), status, hdr, length, w.proto, w.close, noBody)
	return nil
}

func (w *h1Writer) Write(p []byte) (int, error) {
	if w.noBody {
		return len(p), nil
	}
	var n int
	var err error
	if w.chunked {
		n, err = httpx.ChunkedWriter{W: w.buf()}.Write(p)
	} else {
		n, err = w.buf().Write(p)
	}
	w.written += int64(n)
	return n, err
}

func (w *h1Writer) Finish(*httpx.Header) error {
	if w.chunked {
		return httpx.ChunkedWriter{W: w.buf()}.Close()
	}
	return nil
}

// hijack hands the connection (without the connection manager's
// deadline handling) and what was read ahead of it to an upgraded
// stream; the caller closes the connection once the stream is over.
func (w *h1Writer) hijack() (net.Conn, *bufio.Reader) {
	w.close = true
	return w.conn.Conn, w.br
}

func (w *h1Writer) Flush() error             { return w.buf().Flush() }
func (w *h1Writer) Started() bool            { return w.started }
func (w *h1Writer) Written() int64           { return w.written }
func (w *h1Writer) CloseAfter()              { w.close = true }
func (w *h1Writer) Context() context.Context { return nil }

// ResponseWriter abstracts HTTP/1.1 and HTTP/2 responses.
type ResponseWriter interface {
	// WriteHeader sends status and headers; length is -1 when unknown.
	WriteHeader(status int, hdr *httpx.Header, length int64, noBody bool) error
	Write(p []byte) (int, error)
	// Finish ends the body, with trailers where the protocol has them.
	Finish(trailers *httpx.Header) error
	Flush() error
	Started() bool
	Written() int64
	// CloseAfter asks for the connection to close after this response.
	CloseAfter()
	// Context is cancelled when the client goes away (HTTP/2), or nil.
	Context() context.Context
}
