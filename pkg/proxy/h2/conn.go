// Package h2 is the proxy's downstream HTTP/2 server: the connection state
// machine of RFC 9113 on golang.org/x/net/http2's Framer and HPACK codec.
//
// Each connection has exactly three kinds of goroutine, all owned by
// Conn.Serve, which returns only after every one of them has ended:
//
//   - the reader (Serve's own goroutine) reads and handles every frame:
//     stream states, SETTINGS, PING, WINDOW_UPDATE, RST_STREAM, GOAWAY;
//   - the writer writes what is queued for the connection, everything
//     queued since its last write in one write (frames are batched, never
//     flushed one by one);
//   - one handler goroutine per stream that reaches the handler. Streams
//     are handed to handlers only when the reader has nothing more
//     buffered to read, so a stream that its client opens and resets in
//     the same burst (the rapid-reset attack) never costs a goroutine,
//     and at most MaxConcurrentStreams streams wait for or run in a
//     handler at once: beyond that new streams are refused with
//     REFUSED_STREAM.
//
// Flow control runs both ways: a response body waits for the peer's
// stream and connection windows, and a request body is buffered only
// within the windows the server advertised, with WINDOW_UPDATE sent as
// the handler consumes it (backpressure). A stream reset by the client
// releases its buffers and wakes its handler at once.
package h2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Config bounds what one connection may hold.
type Config struct {
	// MaxConcurrentStreams is advertised, and bounds the streams waiting
	// for or running in a handler (default 100).
	MaxConcurrentStreams uint32
	// InitialStreamWindow and InitialConnectionWindow are the receive
	// windows advertised for request bodies (defaults 64 KiB and 1 MiB).
	InitialStreamWindow     uint32
	InitialConnectionWindow uint32
	// MaxHeaderListSize bounds a decoded header list (RFC 9113's size:
	// name + value + 32 per field); larger lists are truncated and the
	// request marked so (default 60 KiB).
	MaxHeaderListSize uint32
	// IdleTimeout closes a connection without streams that long (0: 24 h).
	IdleTimeout time.Duration
	// StreamIdleTimeout fails a request body read or a response write that
	// makes no progress that long, and bounds a connection write (0: none).
	StreamIdleTimeout time.Duration
	// PrefaceTimeout bounds the wait for the client preface (default 10 s).
	PrefaceTimeout time.Duration
	// TLS is the connection's TLS state (nil for h2c).
	TLS *tls.ConnectionState
	Log logr.Logger
	// OnPrematureResetClose is called when the connection is closed for
	// resetting most of its streams before their responses.
	OnPrematureResetClose func(streams, resets int64)
}

// Handler serves one stream; the stream ends when it returns.
type Handler func(s *Stream)

// Premature resets: a client that resets at least prematureResetMin
// streams before their response, and half of all it opened, is flooding
// (CVE-2023-44487) and its connection is closed, as Envoy does
// (premature_reset_total_stream_count).
const prematureResetMin = 100

const (
	// maxPendingData is how much of response bodies may wait for the
	// writer before writers block (the writer holds one more batch).
	maxPendingData = 64 << 10
	// maxPendingControl bounds frames the server owes the peer (SETTINGS
	// and PING acknowledgements, RST_STREAM) while the peer does not read:
	// beyond it the connection is closed (SETTINGS and PING floods).
	maxPendingControl = 256 << 10
	// readerSize is the connection's read buffer.
	readerSize = 16 << 10
	// maxFrameSize is the largest frame read or written.
	maxFrameSize = 16 << 10
	// lingerTime is how long a closing connection reads what its peer
	// still sends, so the kernel does not reset the connection and destroy
	// the GOAWAY before the client reads it.
	lingerTime = time.Second
)

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerSize) }}

var (
	errConnClosed   = errors.New("http2: connection closed")
	errStreamReset  = errors.New("http2: stream reset by the client")
	errStreamClosed = errors.New("http2: stream closed")
	errBodyAborted  = errors.New("http2: request body aborted")
	// errHeaderFlood: a header block kept coming (CONTINUATION frames)
	// far beyond what the header list limit allows.
	errHeaderFlood = errors.New("http2: header block too long")
)

// Conn is one downstream HTTP/2 connection.
type Conn struct {
	nc      net.Conn
	cfg     Config
	handler Handler

	ctx    context.Context
	cancel context.CancelFunc
	br     *bufio.Reader
	cr     countingReader
	rfr    *frameReader

	handlers sync.WaitGroup // handler goroutines (workers)
	// work hands streams to idle workers (a nil stream retires one). A
	// worker that finished a stream waits here for the next instead of
	// ending: a new goroutine per stream grew its stack through the
	// request pipeline every time (copystack was ~7% of the proxy's CPU
	// at 10 streams per connection). Its capacity bounds idle workers,
	// so a send never blocks.
	work      chan *Stream
	out       *frameQueue // frames for the peer; buf and fr guarded by mu
	idleTimer *time.Timer

	mu sync.Mutex
	// Everything below is guarded by mu.
	henc    *hpack.Encoder
	hbuf    bytes.Buffer
	streams map[uint32]*Stream
	pending []*Stream // opened, not yet handed to a handler
	busy    int       // streams pending or in a handler
	// idleWorkers wait on work, at most maxIdleWorkers, each for at most
	// workerIdle.
	idleWorkers int
	maxID       uint32 // highest client stream id seen
	closedIDs   [16]uint32
	closedAt    int
	// Windows: what the peer may still send (recv*), what it allows us
	// to send (send*), and consumed bytes not yet granted back.
	recv                   inflow
	sendWindow             int64
	peerInitialWindow      int64
	peerMaxFrame           uint32
	streamRecvInitial      int64
	settingsAcked          bool
	sawSettings            bool
	goAwaySent, peerGoAway bool
	goAwayLastID           uint32
	closing                bool
	closed                 bool
	writeErr               error
	streamsEnded, resets   int64
	lastActive             time.Time
	writePushed            time.Time
	started, shutdownAsked bool
}

// NewConn prepares a connection; Serve runs it.
func NewConn(nc net.Conn, cfg Config, h Handler) *Conn {
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = 100
	}
	defaultLimits(&cfg.InitialStreamWindow, &cfg.InitialConnectionWindow, &cfg.MaxHeaderListSize)
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 24 * time.Hour
	}
	if cfg.PrefaceTimeout <= 0 {
		cfg.PrefaceTimeout = 10 * time.Second
	}
	c := &Conn{nc: nc, cfg: cfg, handler: h, streams: map[uint32]*Stream{}, work: make(chan *Stream, maxIdleWorkers),
		out: newFrameQueue(), recv: inflow{avail: 65535}, sendWindow: 65535, peerInitialWindow: 65535, peerMaxFrame: 16384,
		// Until the client acknowledges our SETTINGS it may use the
		// default stream window.
		streamRecvInitial: max(int64(cfg.InitialStreamWindow), 65535),
	}
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// countingReader counts the bytes one frame read takes, so a header
// block that never ends (CONTINUATION frames, even empty ones) is cut off.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n > r.limit {
		return 0, errHeaderFlood
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}

// Serve runs the connection until it ends, and returns only when every
// goroutine it started has ended and the connection is closed.
func (c *Conn) Serve(ctx context.Context) {
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(c.nc)
	defer func() {
		// The reader goroutine is this one, and it is done: nothing can
		// read through the buffer any more.
		c.br.Reset(nil)
		readerPool.Put(c.br)
	}()
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()
	if !c.readPreface() {
		c.cancel()
		c.nc.Close()
		return
	}
	c.rfr = newFrameReader(&c.cr, c.br, c.cfg.MaxHeaderListSize)

	c.mu.Lock()
	c.out.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: c.cfg.InitialStreamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.cfg.MaxHeaderListSize},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
	)
	c.out.openConnWindowLocked(&c.recv, c.cfg.InitialConnectionWindow)
	c.lastActive = time.Now()
	c.started = true
	if c.shutdownAsked {
		c.goAwayLocked(http2.ErrCodeNo)
	}
	c.mu.Unlock()
	go c.writeLoop()
	c.out.kick()
	c.idleTimer = time.AfterFunc(c.cfg.IdleTimeout, c.checkIdle)

	err := c.readLoop()
	c.teardown(err)
}

// readPreface reads the client connection preface within PrefaceTimeout.
func (c *Conn) readPreface() bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.nc.SetReadDeadline(time.Now().Add(c.cfg.PrefaceTimeout))
	c.mu.Unlock()
	var buf [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, buf[:]); err != nil || string(buf[:]) != http2.ClientPreface {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.nc.SetReadDeadline(time.Time{})
	return true
}

// readLoop reads and handles frames until the connection fails or is
// closed; it returns the connection error to report with GOAWAY (nil
// when there is none to send).
func (c *Conn) readLoop() error {
	for {
		c.cr.n = 0
		f, err := c.rfr.ReadFrame()
		if err == nil {
			err = c.processFrame(f)
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.mu.Lock()
				c.streamError(se.StreamID, se.Code)
				c.mu.Unlock()
			} else {
				return err
			}
		}
		if c.br.Buffered() == 0 || len(c.pending) >= 16 {
			// Nothing more to read at once: hand the streams opened in
			// this burst to handlers (those reset meanwhile are dropped)
			// and write what the burst owes the peer in one go.
			if c.dispatch() {
				c.out.kick()
			}
		}
	}
}

// teardown ends the connection: GOAWAY for a connection error, every
// stream failed, every handler waited for, the writer flushed and
// stopped, a short linger, and the socket closed.
func (c *Conn) teardown(readErr error) {
	c.mu.Lock()
	code, send := connErrCode(readErr)
	if send && !c.goAwaySent {
		c.goAwaySent = true
		c.out.fr.WriteGoAway(c.maxID, code, nil)
		c.cfg.Log.V(1).Info("HTTP/2 connection error", "code", code.String(), "error", readErr.Error(), "remote", c.nc.RemoteAddr().String())
	}
	// Linger after a GOAWAY either way: closing with the peer's last
	// frames unread (a PING behind its GOAWAY) resets the connection,
	// and the peer may lose what was sent before (h2spec 3.8/1).
	linger := (c.goAwaySent || c.peerGoAway) && c.writeErr == nil
	c.closing, c.closed = true, true
	for _, s := range c.streams {
		c.closeStream(s, errConnClosed)
	}
	for _, s := range c.pending {
		c.busy--
		s.pendingDropped = true
	}
	c.pending = nil
	c.retireWorkersLocked(0) // closing: busy workers end after their stream
	c.mu.Unlock()
	c.cancel()
	c.idleTimer.Stop()
	c.handlers.Wait()
	// Frames still queued (GOAWAY, final responses) go out, within a
	// bounded time even if the peer stopped reading.
	c.nc.SetWriteDeadline(time.Now().Add(lingerTime))
	close(c.out.stop)
	<-c.out.done
	if linger {
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			c.nc.SetReadDeadline(time.Now().Add(lingerTime))
			io.CopyN(io.Discard, c.nc, 256<<10)
		}
	}
	c.nc.Close()
}

// connErrCode maps a read-loop error to the GOAWAY to send.
func connErrCode(err error) (http2.ErrCode, bool) {
	var ce http2.ConnectionError
	switch {
	case err == nil:
		return 0, false
	case errors.As(err, &ce):
		return http2.ErrCode(ce), true
	case errors.Is(err, http2.ErrFrameTooLarge):
		return http2.ErrCodeFrameSize, true
	case errors.Is(err, errHeaderFlood):
		return http2.ErrCodeEnhanceYourCalm, true
	}
	return 0, false
}

// writeLoop runs the connection's batching writer until teardown.
func (c *Conn) writeLoop() {
	c.out.writeLoop(&c.mu, c.nc, writeHooks{
		prepareLocked: func(stopping bool) bool {
			if c.writeErr != nil {
				return false
			}
			c.pushWriteDeadline(stopping || c.closed)
			return true
		},
		failed: func(err error) {
			c.mu.Lock()
			c.writeErr = err
			c.closeLocked()
			c.mu.Unlock()
		},
		drainedLocked: c.wakeWritersLocked,
	})
}

// pushWriteDeadline bounds a write by the stream idle timeout, moving
// the deadline at most once per slack (a timer update per write costs).
func (c *Conn) pushWriteDeadline(stopping bool) {
	d := c.cfg.StreamIdleTimeout
	if d <= 0 || stopping {
		return
	}
	if now := time.Now(); now.Sub(c.writePushed) > min(d/8, time.Second) {
		c.writePushed = now
		c.nc.SetWriteDeadline(now.Add(d))
	}
}

// closeLocked makes the reader stop (it is blocked in a read) so that
// Serve tears the connection down.
func (c *Conn) closeLocked() {
	if c.closing {
		return
	}
	c.closing = true
	c.nc.SetReadDeadline(time.Now())
}

// Close ends the connection at once: handlers see their streams fail.
func (c *Conn) Close() {
	c.mu.Lock()
	c.closeLocked()
	c.mu.Unlock()
}

// Shutdown starts a graceful close: GOAWAY(NO_ERROR) naming the last
// stream that will be served, and the connection closes once those are
// done.
func (c *Conn) Shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		c.shutdownAsked = true // after the server preface
		return
	}
	c.goAwayLocked(http2.ErrCodeNo)
	c.out.kick()
}

func (c *Conn) goAwayLocked(code http2.ErrCode) {
	if !c.goAwaySent && !c.closing {
		c.goAwaySent = true
		c.goAwayLastID = c.maxID
		c.out.fr.WriteGoAway(c.maxID, code, nil)
	}
	if code != http2.ErrCodeNo || c.idleLocked() {
		c.closeLocked()
	}
}

func (c *Conn) idleLocked() bool { return len(c.streams) == 0 && c.busy == 0 }

// checkIdle closes a connection that had no streams for the idle
// timeout. The timer is not reset per stream: it re-arms itself for what
// is left of the timeout since the connection was last active.
func (c *Conn) checkIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if c.idleLocked() {
		if left := c.cfg.IdleTimeout - time.Since(c.lastActive); left > 0 {
			c.idleTimer.Reset(left)
			return
		}
		c.goAwayLocked(http2.ErrCodeNo)
		c.out.kick()
		return
	}
	c.idleTimer.Reset(c.cfg.IdleTimeout)
}

// dispatch hands the streams opened since the last call to handlers. It
// reports whether frames wait for the writer: a burst that queued nothing
// (most bursts of requests) does not wake it, and a handler's response
// is not cut in two by a wake-up meant for nobody.
func (c *Conn) dispatch() (owed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	owed = c.out.buf.Len() > 0
	for i, s := range c.pending {
		c.pending[i] = nil
		if s.state == stateClosed {
			c.busy-- // reset before a handler saw it: nothing to run
			s.pendingDropped = true
			continue
		}
		s.ctx, s.cancel = context.WithCancel(c.ctx)
		if c.idleWorkers > 0 {
			c.idleWorkers--
			c.work <- s
			continue
		}
		c.handlers.Add(1)
		go c.worker(s)
	}
	c.pending = c.pending[:0]
	c.afterStreamEndLocked()
	return owed
}

// maxIdleWorkers bounds the handler goroutines a connection keeps
// waiting for streams (each holds a grown stack, ~8 KiB), and workerIdle
// is how long one waits before it ends. At 4, ten streams in flight per
// connection still started a new goroutine for most streams.
const (
	maxIdleWorkers = 16
	workerIdle     = time.Second
)

// worker runs handlers: s, then the streams dispatch hands it while it
// waits idle, until it is retired (a nil stream), has waited workerIdle,
// too many wait, or the connection closes.
func (c *Conn) worker(s *Stream) {
	defer c.handlers.Done()
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for s != nil {
		c.runHandler(s)
		c.mu.Lock()
		if c.closing || c.idleWorkers >= maxIdleWorkers {
			c.mu.Unlock()
			return
		}
		c.idleWorkers++
		c.mu.Unlock()
		if t == nil {
			t = time.NewTimer(workerIdle)
		} else {
			t.Reset(workerIdle)
		}
		select {
		case s = <-c.work:
		case <-t.C:
			// Items on work match idle slots: leave if a slot is still
			// counted, else a stream (or nil) is on its way for this one.
			c.mu.Lock()
			if c.idleWorkers > 0 {
				c.idleWorkers--
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			s = <-c.work
		}
	}
}

// retireWorkersLocked lets idle workers beyond keep end.
func (c *Conn) retireWorkersLocked(keep int) {
	for c.idleWorkers > keep {
		c.idleWorkers--
		c.work <- nil
	}
}

func (c *Conn) runHandler(s *Stream) {
	c.handler(s)
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.state != stateClosed {
		if !s.endSent {
			if s.failed || !s.headersSent {
				c.resetLocked(s, http2.ErrCodeCancel)
			} else {
				c.endLocked(s, nil)
			}
		}
		if s.state != stateClosed {
			// The response is complete and the client is still sending:
			// ask it to stop without error (RFC 9113 section 8.1).
			c.resetLocked(s, http2.ErrCodeNo)
		}
	}
	s.cancel()
	c.busy--
	c.afterStreamEndLocked()
	c.out.kick()
}

// afterStreamEndLocked closes a draining connection with nothing left,
// and notes when the connection became idle.
func (c *Conn) afterStreamEndLocked() {
	if !c.idleLocked() {
		return
	}
	c.lastActive = time.Now()
	if c.goAwaySent || c.peerGoAway {
		c.closeLocked()
	}
}

func (c *Conn) processFrame(f http2.Frame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return errConnClosed
	}
	if !c.sawSettings {
		// RFC 9113 section 3.4: the preface's SETTINGS comes first.
		if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.sawSettings = true
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			if err := c.out.controlRoomLocked(); err != nil {
				return err
			}
			c.out.fr.WritePing(true, f.Data)
		}
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.PriorityFrame:
		// Priorities are ignored, as Envoy does; only a stream that
		// depends on itself is an error (RFC 9113 section 5.3.1).
		if f.StreamDep == f.StreamID {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
	case *http2.GoAwayFrame:
		c.peerGoAway = true
		if c.idleLocked() {
			c.closeLocked()
		}
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // clients never push
	case *http2.ContinuationFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // the Framer joins valid ones
	}
	// Frames of unknown types are ignored (RFC 9113 section 4.1).
	return nil
}

func (c *Conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		if !c.settingsAcked {
			c.settingsAcked = true
			c.streamRecvInitial = int64(c.cfg.InitialStreamWindow)
		}
		return nil
	}
	if err := c.out.controlRoomLocked(); err != nil {
		return err
	}
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingInitialWindowSize:
			// RFC 9113 section 6.9.2: the change applies to every
			// stream's send window, which may go negative.
			delta := int64(s.Val) - c.peerInitialWindow
			c.peerInitialWindow = int64(s.Val)
			for _, st := range c.streams {
				if !growWindow(&st.sendWindow, delta) {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.wakeWritersLocked()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.out.fr.WriteSettingsAck()
	return nil
}

// processHeaders opens a stream, or takes a request's trailers.
func (c *Conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if s := c.streams[id]; s != nil {
		return c.processTrailers(s, f)
	}
	if id <= c.maxID {
		if c.recentlyClosed(id) {
			return http2.ConnectionError(http2.ErrCodeStreamClosed)
		}
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.maxID = id
	if c.goAwaySent || c.closing {
		return nil // after GOAWAY: ignored (RFC 9113 section 6.8)
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	req := Request{ContentLength: -1, Truncated: f.Truncated}
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			req.Method = hf.Value
		case ":scheme":
			req.Scheme = hf.Value
		case ":authority":
			req.Authority = hf.Value
		case ":path":
			req.Path = hf.Value
		default:
			// :protocol (extended CONNECT is not offered) or :status.
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
		}
	}
	if req.Method == "CONNECT" {
		if req.Path != "" || req.Scheme != "" || req.Authority == "" {
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
		}
	} else if req.Method == "" || req.Path == "" || req.Scheme != "http" && req.Scheme != "https" {
		// RFC 9113 section 8.3.1: exactly one :method, :scheme, :path.
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	// The frame reader reuses its field list: the stream keeps a copy.
	req.Fields = append([]hpack.HeaderField(nil), f.RegularFields()...)
	if c.busy >= int(c.cfg.MaxConcurrentStreams) {
		// Over the limit, or handlers of streams the client already
		// reset are still finishing: refused, so the client may retry
		// (RFC 9113 section 5.1.2).
		c.queueReset(id, http2.ErrCodeRefusedStream)
		c.noteClosed(id)
		return nil
	}
	s := &Stream{c: c, id: id, Request: req, state: stateOpen, sendWindow: c.peerInitialWindow,
		recv: inflow{avail: c.streamRecvInitial}, declared: -1}
	if f.StreamEnded() {
		s.state = stateHalfClosedRemote
		s.bodyEnded = true
		s.Request.ContentLength = 0
	} else {
		s.hasBody = true
		for _, hf := range req.Fields {
			if hf.Name == "content-length" {
				if n, ok := parseLength(hf.Value); ok {
					s.declared = n
					s.Request.ContentLength = n
				} else {
					s.Request.ContentLength = 0
				}
				break
			}
		}
	}
	c.streams[id] = s
	c.pending = append(c.pending, s)
	c.busy++
	return nil
}

func parseLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	return n, true
}

// processTrailers handles a second HEADERS on an open stream: trailers,
// which must end the stream and carry no pseudo-header (RFC 9113 8.1).
func (c *Conn) processTrailers(s *Stream, f *http2.MetaHeadersFrame) error {
	if s.state == stateHalfClosedRemote || s.bodyEnded {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeStreamClosed}
	}
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 || f.Truncated {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	return c.endBody(s)
}

// endBody records END_STREAM on a request body.
func (c *Conn) endBody(s *Stream) error {
	if s.declared >= 0 && s.received != s.declared {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	s.bodyEnded = true
	s.signalRead()
	if s.endSent {
		c.closeStream(s, nil)
	} else {
		s.state = stateHalfClosedRemote
	}
	return nil
}

func (c *Conn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length)
	if !c.recv.take(n) {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	s := c.streams[id]
	if s == nil || s.state == stateHalfClosedRemote || s.bodyEnded {
		if id > c.maxID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		// Closed or half-closed (remote): the bytes still count against
		// the connection window, which gets them back.
		c.grantConn(n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	if !s.recv.take(n) {
		c.grantConn(n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	}
	data := f.Data()
	if pad := n - int64(len(data)); pad > 0 {
		c.grantConn(pad)
		c.grantStream(s, pad)
	}
	s.received += int64(len(data))
	if s.declared >= 0 && s.received > s.declared {
		c.grantConn(int64(len(data)))
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	}
	if len(data) > 0 {
		if s.readAborted {
			c.grantConn(int64(len(data)))
		} else {
			if s.off > 0 && s.off >= len(s.buf)-s.off {
				// Move the unread bytes down before appending, so a body
				// read a little behind its arrival does not grow the
				// buffer past twice the window.
				s.buf = s.buf[:copy(s.buf, s.buf[s.off:])]
				s.off = 0
			}
			s.buf = append(s.buf, data...)
			s.maxBuf = max(s.maxBuf, cap(s.buf))
			s.signalRead()
		}
	}
	if f.StreamEnded() {
		return c.endBody(s)
	}
	return nil
}

func (c *Conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if !growWindow(&c.sendWindow, inc) {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.wakeWritersLocked()
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.maxID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		return nil // closed: allowed in flight
	}
	if !growWindow(&s.sendWindow, inc) {
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeFlowControl}
	}
	s.signalWrite()
	return nil
}

func (c *Conn) processReset(f *http2.RSTStreamFrame) error {
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.maxID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		return nil
	}
	if !s.headersSent {
		c.resets++
	}
	c.closeStream(s, errStreamReset)
	if c.resets >= prematureResetMin && 2*c.resets >= c.streamsEnded && !c.closing {
		if c.cfg.OnPrematureResetClose != nil {
			c.cfg.OnPrematureResetClose(c.streamsEnded, c.resets)
		}
		c.cfg.Log.V(1).Info("closing an HTTP/2 connection that resets most of its streams", "streams", c.streamsEnded, "resets", c.resets)
		c.goAwayLocked(http2.ErrCodeEnhanceYourCalm)
	}
	return nil
}

// streamError answers a stream error: RST_STREAM, and the stream's
// resources released.
func (c *Conn) streamError(id uint32, code http2.ErrCode) {
	if s := c.streams[id]; s != nil {
		c.resetLocked(s, code)
		return
	}
	c.queueReset(id, code)
	if id > c.maxID && id%2 == 1 {
		c.maxID = id // a stream refused as it opened is closed, not idle
	}
	c.noteClosed(id)
}

func (c *Conn) queueReset(id uint32, code http2.ErrCode) {
	if !c.closed {
		c.out.fr.WriteRSTStream(id, code)
	}
}

// resetLocked sends RST_STREAM and closes the stream.
func (c *Conn) resetLocked(s *Stream, code http2.ErrCode) {
	c.queueReset(s.id, code)
	c.closeStream(s, errStreamClosed)
}

// closeStream moves a stream to closed: it leaves the stream table, its
// unread body bytes go back to the connection window, and its handler's
// blocked reads and writes fail (err non-nil) or end.
func (c *Conn) closeStream(s *Stream, err error) {
	if s.state == stateClosed {
		return
	}
	s.state = stateClosed
	delete(c.streams, s.id)
	c.noteClosed(s.id)
	c.streamsEnded++
	if err != nil {
		s.err = err
		if unread := int64(len(s.buf) - s.off); unread > 0 {
			c.grantConn(unread)
		}
		s.buf, s.off = nil, 0
		if s.cancel != nil {
			s.cancel()
		}
	} else if unread := int64(len(s.buf) - s.off); unread > 0 {
		// Complete on both sides: what the handler has not read it may
		// still read, but the connection window has it back now.
		c.grantConn(unread)
	}
	s.signalRead()
	s.signalWrite()
	if !s.pendingDropped && s.ctx == nil {
		return // still pending: dispatch drops it
	}
	c.afterStreamEndLocked()
}

func (c *Conn) noteClosed(id uint32) {
	c.closedIDs[c.closedAt%len(c.closedIDs)] = id
	c.closedAt++
}

// recentlyClosed reports whether id is one of the last streams closed
// (frames on them are STREAM_CLOSED errors rather than PROTOCOL_ERROR).
func (c *Conn) recentlyClosed(id uint32) bool {
	for _, x := range c.closedIDs {
		if x == id {
			return true
		}
	}
	return false
}

// grantConn gives consumed bytes back to the connection window, with
// WINDOW_UPDATE once half the window is owed.
func (c *Conn) grantConn(n int64) {
	if c.closed {
		c.recv.unacked += n
		return
	}
	if inc := c.recv.consumed(n, int64(c.cfg.InitialConnectionWindow)/2); inc > 0 {
		c.out.fr.WriteWindowUpdate(0, inc)
	}
}

// grantStream gives consumed bytes back to a stream's window.
func (c *Conn) grantStream(s *Stream, n int64) {
	if s.bodyEnded || s.state == stateClosed {
		return // the client will send nothing more
	}
	if inc := s.recv.consumed(n, int64(c.cfg.InitialStreamWindow)/2); inc > 0 {
		c.out.fr.WriteWindowUpdate(s.id, inc)
	}
}

// wakeWritersLocked wakes the handlers waiting to write (windows grew,
// the writer drained its queue, or the connection is closing).
func (c *Conn) wakeWritersLocked() {
	for _, s := range c.streams {
		if s.writeBlocked {
			s.signalWrite()
		}
	}
}

func (c *Conn) String() string { return fmt.Sprintf("h2 %v", c.nc.RemoteAddr()) }
