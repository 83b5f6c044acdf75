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
// oc is the connection's overload slot (nil when not accounted).
func (h *Handler) ServeConn(ctx context.Context, nc net.Conn, tlsConn *tls.Conn, oc *overload.Conn) {
	h.st.cxTotal.Inc()
	h.st.cxActive.Inc()
	defer func() {
		h.st.cxActive.Dec()
		h.st.cxDestroy.Inc()
	}()
	var state *tls.ConnectionState
	if tlsConn != nil {
		cs := tlsConn.ConnectionState()
		state = &cs
		if cs.NegotiatedProtocol == "h2" {
			oc.Busy() // HTTP/2 idleness is the HTTP/2 server's to judge
			h.st.cxHTTP2.Inc()
			h.serveH2(ctx, tlsConn, state)
			return
		}
	}
	tc := &timedConn{Conn: nc}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(tc)
	// The reader goes back to the pool only after everything that could
	// read through it is done: serveH1 reads in this goroutine only, and
	// an HTTP/2 connection gets its own copy of what was read ahead.
	// serveH1 may swap it for another from the pool (it lets it go while
	// the connection is idle): the one held at the end goes back.
	defer func() { br.Reset(nil); readerPool.Put(br) }()
	if state == nil {
		tc.readBy(time.Now().Add(h.idleTimeout()))
		if b, err := br.Peek(3); err == nil && string(b) == "PRI" {
			if b, err := br.Peek(len(h2Preface)); err == nil && bytes.Equal(b, h2Preface) {
				tc.readBy(time.Time{})
				oc.Busy()
				h.st.cxHTTP2.Inc()
				ahead := make([]byte, br.Buffered())
				br.Read(ahead)
				h.serveH2(ctx, &readahead.Conn{Conn: nc, Ahead: ahead}, nil)
				return
			}
		}
	}
	h.st.cxHTTP1.Inc()
	h.serveH1(ctx, nc, tc, &br, state, oc)
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
// (stream idle timeout) while a request's body and response move. A
// sliding deadline is pushed forward at most once per slack, so a busy
// stream does not pay a timer update per read.
type timedConn struct {
	net.Conn
	readIdle, writeIdle time.Duration
	readPushed          time.Time
	writePushed         time.Time
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

// readBy sets an exact read deadline (zero: none) and stops sliding.
func (c *timedConn) readBy(t time.Time) {
	c.readIdle = 0
	c.Conn.SetReadDeadline(t)
}

// slide makes reads and writes fail after d without progress (0: never).
func (c *timedConn) slide(d time.Duration) {
	now := time.Now()
	c.readIdle, c.writeIdle = d, d
	c.readPushed, c.writePushed = now, now
	if d > 0 {
		c.Conn.SetDeadline(now.Add(d))
	} else {
		c.Conn.SetDeadline(time.Time{})
	}
}

func slack(d time.Duration) time.Duration { return min(d/8, time.Second) }

func (c *timedConn) Read(p []byte) (int, error) {
	if c.aborted.Load() {
		return 0, errReadsAborted
	}
	if c.readIdle > 0 {
		if now := time.Now(); now.Sub(c.readPushed) > slack(c.readIdle) {
			c.readPushed = now
			c.Conn.SetReadDeadline(now.Add(c.readIdle))
		}
	}
	return c.Conn.Read(p)
}

func (c *timedConn) Write(p []byte) (int, error) {
	if c.writeIdle > 0 {
		if now := time.Now(); now.Sub(c.writePushed) > slack(c.writeIdle) {
			c.writePushed = now
			c.Conn.SetWriteDeadline(now.Add(c.writeIdle))
		}
	}
	return c.Conn.Write(p)
}

type h1conn struct {
	nc net.Conn
}

// serveH1 serves HTTP/1.1 requests; *brp is the connection's reader,
// which it may replace (see waitRequest).
func (h *Handler) serveH1(ctx context.Context, nc net.Conn, tc *timedConn, brp **bufio.Reader, state *tls.ConnectionState, oc *overload.Conn) {
	br := *brp
	c := &h1conn{nc: nc}
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
		nc.Close()
	}()
	remote, local := addrPort(nc.RemoteAddr()), addrPort(nc.LocalAddr())
	scheme := "http"
	if state != nil {
		scheme = "https"
	}
	req := &httpx.Request{}
	w := &h1Writer{conn: tc, br: br}
	defer w.release()
	idle := h.idleTimeout()
	// A draining handler still serves the next request on every
	// connection, new or pooled, and answers it with Connection: close:
	// closing an idle connection instead would race the client's next
	// request. Connections still idle at the drain deadline are closed.
	for {
		if br.Buffered() == 0 {
			// Wait for a request: idle, and evictable under overload.
			// A request that follows soon is read the usual way; a
			// connection still idle after idleRelease waits without its
			// read buffer (waitRequest), which costs a system call more
			// and so is kept off the busy path.
			now := time.Now()
			tc.readBy(now.Add(min(idle, idleRelease)))
			oc.Idle()
			_, err := br.Peek(1)
			if err != nil && isTimeout(err) && idle > idleRelease && !tc.aborted.Load() {
				tc.readBy(now.Add(idle))
				if err = waitRequest(tc, brp, w); err == nil {
					br = *brp
					_, err = br.Peek(1)
				}
				br = *brp
			}
			if err != nil {
				if isTimeout(err) {
					h.st.cxIdleTimeout.Inc()
				}
				return
			}
		}
		oc.Head()
		if t := h.cfg.RequestHeadersTimeout; t > 0 {
			tc.readBy(time.Now().Add(t))
		} else {
			tc.readBy(time.Time{})
		}
		sp := scratchPool.Get().(*[]byte)
		err := h.cfg.Limits.ReadRequest(br, req, (*sp)[:0])
		scratchPool.Put(sp)
		if err != nil {
			h.headError(w, err)
			return
		}
		oc.Busy()
		tc.slide(h.cfg.StreamIdleTimeout)
		req.Scheme, req.RemoteAddr, req.LocalAddr, req.TLS = scheme, remote, local, state
		req.AbortBody = tc.abortReads
		w.reset(req.Proto, req.Close || h.draining.Load())
		h.st.rqHTTP1.Inc()
		keep := h.ServeRequest(ctx, req, w)
		if err := w.flushAndRelease(); err != nil {
			return
		}
		if !keep || w.close || req.Close {
			return
		}
		if req.Body != nil && !httpx.Drained(req.Body) {
			// Read what the client still sends, within reason, so the
			// connection stays usable.
			if !httpx.Discard(req.Body, 256<<10) {
				return
			}
		}
	}
}

// idleRelease is how long a keep-alive connection waits for its next
// request holding its read buffer.
const idleRelease = time.Second

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
