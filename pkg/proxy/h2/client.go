package h2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ClientConfig bounds one upstream HTTP/2 connection.
type ClientConfig struct {
	// InitialStreamWindow and InitialConnectionWindow are the receive
	// windows advertised for response bodies (defaults 64 KiB and 1 MiB):
	// at most that much of a response is buffered before the consumer
	// reads it (backpressure).
	InitialStreamWindow     uint32
	InitialConnectionWindow uint32
	// MaxHeaderListSize bounds a response header list (default 60 KiB);
	// a larger one fails its request.
	MaxHeaderListSize uint32
	// IdleTimeout closes the connection after that long without streams
	// (0: 1 h).
	IdleTimeout time.Duration
	// PingInterval and PingTimeout are the keepalive: after PingInterval
	// without a frame from the upstream a PING is sent, and when no frame
	// at all arrives within PingTimeout after it the upstream is taken
	// for dead (a host that vanished, a black-holed route, a peer that
	// stopped reading) and the connection is closed, failing its streams,
	// so that requests go to a new connection rather than waiting on a
	// socket that will never answer. Defaults 60 s and 20 s (Envoy's
	// connection_keepalive is the same mechanism); a negative
	// PingInterval turns the keepalive off.
	PingInterval time.Duration
	PingTimeout  time.Duration
	Log          logr.Logger
	// OnClose is called once, when the connection has ended.
	OnClose func()
}

// ErrRetryable marks requests that the upstream never processed: sent on
// a connection that was going away or closed before the request's stream
// was accepted (GOAWAY above its last stream id, REFUSED_STREAM). They
// may be retried on another connection.
var ErrRetryable = errors.New("http2: request not processed by the upstream")

var (
	errClientClosed    = errors.New("http2: upstream connection closed")
	errStreamCancelled = errors.New("http2: stream cancelled")
)

// ClientConn is one upstream HTTP/2 connection. It owns two goroutines,
// the reader and the batching writer, which end when the connection does
// (Close, a connection error, the peer's GOAWAY once its streams are
// done, or the idle timeout); plus one per request body being sent, which
// ends when the body does or its stream closes.
type ClientConn struct {
	nc  net.Conn
	cfg ClientConfig
	br  *bufio.Reader
	cr  countingReader
	rfr *frameReader

	out        *frameQueue // frames for the peer; buf and fr guarded by mu
	readerDone chan struct{}
	finished   chan struct{} // closed when everything has ended
	idleTimer  *time.Timer
	closeOnce  sync.Once

	// The keepalive: the reader counts frames, the ping timer (nil when
	// the keepalive is off) compares the count with the one it saw last.
	framesRead atomic.Uint64
	pingTimer  *time.Timer
	pingAcks   atomic.Uint64

	mu sync.Mutex
	// Guarded by mu.
	henc              *hpack.Encoder
	hbuf              bytes.Buffer
	streams           map[uint32]*clientStream
	nextID            uint32
	reserved          int // streams promised to callers of Reserve
	peerMaxStreams    uint32
	sendWindow        int64
	recv              inflow
	peerInitialWindow int64
	peerMaxFrame      uint32
	goAway            bool
	closed            bool
	err               error
	changed           chan struct{} // closed and replaced on window or buffer changes
	lastActive        time.Time
	pingSeen          uint64 // framesRead at the ping timer's last run
	pingOut           bool   // a keepalive PING is outstanding
}

// clientStream is one request and its response.
type clientStream struct {
	c    *ClientConn
	id   uint32
	resp *httpx.Response
	// Guarded by c.mu.
	headers    chan struct{} // closed when the response headers arrived or the stream failed
	gotHeaders bool
	respReady  bool // the response headers arrived
	sendWindow int64
	recv       inflow
	buf        []byte
	off        int
	ended      bool // END_STREAM received
	sentEnd    bool
	trailer    *httpx.Header
	err        error
	done       bool // removed from the connection
	readWake   chan struct{}
}

// NewClientConn starts an HTTP/2 connection over nc (already dialed and,
// for TLS, handshaken with ALPN h2): the client preface and SETTINGS are
// queued and the reader and writer started.
func NewClientConn(nc net.Conn, cfg ClientConfig) *ClientConn {
	defaultLimits(&cfg.InitialStreamWindow, &cfg.InitialConnectionWindow, &cfg.MaxHeaderListSize)
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Hour
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = 60 * time.Second
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 20 * time.Second
	}
	c := &ClientConn{nc: nc, cfg: cfg, streams: map[uint32]*clientStream{}, nextID: 1,
		out: newFrameQueue(), readerDone: make(chan struct{}), finished: make(chan struct{}),
		// Until the peer's SETTINGS say otherwise (RFC 9113 leaves the
		// default unlimited; 100 is what servers advertise in practice).
		peerMaxStreams: 100, sendWindow: 65535, recv: inflow{avail: 65535}, peerInitialWindow: 65535, peerMaxFrame: 16384,
		changed: make(chan struct{}), lastActive: time.Now(),
	}
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(nc)
	c.rfr = newFrameReader(&c.cr, c.br, cfg.MaxHeaderListSize)

	c.out.buf.WriteString(http2.ClientPreface)
	c.out.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: cfg.InitialStreamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: cfg.MaxHeaderListSize},
	)
	c.out.openConnWindowLocked(&c.recv, cfg.InitialConnectionWindow)
	// The timer exists before the goroutines that may stop it.
	c.idleTimer = time.AfterFunc(cfg.IdleTimeout, c.checkIdle)
	if cfg.PingInterval > 0 {
		c.pingTimer = time.AfterFunc(cfg.PingInterval, c.keepalive)
	}
	go c.writeLoop()
	go c.readLoop()
	c.out.kick()
	return c
}

// Reserve claims a stream slot for one request: false when the
// connection is closing, went away, or has as many streams as the peer
// allows. A successful Reserve must be followed by RoundTrip.
func (c *ClientConn) Reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.goAway || c.nextID > 1<<31-1-2*uint32(c.reserved+1) {
		return false
	}
	if uint32(len(c.streams)+c.reserved) >= c.peerMaxStreams {
		return false
	}
	c.reserved++
	return true
}

// Usable reports whether new requests may still use the connection.
func (c *ClientConn) Usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.goAway
}

// Done is closed when the connection has ended, its socket is closed and
// all its goroutines but request-body senders have returned (those end
// as their body's next read returns).
func (c *ClientConn) Done() <-chan struct{} { return c.finished }

// broadcastLocked wakes everyone waiting for a window or buffer change.
func (c *ClientConn) broadcastLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// writeLoop runs the connection's batching writer until fail stops it.
func (c *ClientConn) writeLoop() {
	c.out.writeLoop(&c.mu, c.nc, writeHooks{
		// After a failure only the last batch (a GOAWAY) is still sent.
		prepareLocked: func(stopping bool) bool { return c.err == nil || stopping },
		failed: func(err error) {
			c.fail(fmt.Errorf("http2: writing to upstream: %w", err))
		},
		drainedLocked: c.broadcastLocked,
	})
}

// fail ends the connection with err: every stream fails, the socket is
// closed (which ends the reader), and the writer stops.
func (c *ClientConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.closed = true
	for _, s := range c.streams {
		c.closeStreamLocked(s, c.err)
	}
	c.broadcastLocked()
	c.mu.Unlock()
	c.closeOnce.Do(func() {
		c.idleTimer.Stop()
		if c.pingTimer != nil {
			c.pingTimer.Stop()
		}
		// Frames still queued (a GOAWAY) get a bounded chance to go out.
		c.nc.SetWriteDeadline(time.Now().Add(lingerTime))
		close(c.out.stop)
		go func() {
			// Owned by the connection: ends when the writer has.
			<-c.out.done
			c.nc.Close()
			<-c.readerDone
			if c.cfg.OnClose != nil {
				c.cfg.OnClose()
			}
			close(c.finished)
		}()
		c.nc.SetReadDeadline(time.Now())
	})
}

// Close ends the connection at once; streams in flight fail.
func (c *ClientConn) Close() { c.fail(errClientClosed) }

// checkIdle closes the connection when it had no streams for IdleTimeout.
func (c *ClientConn) checkIdle() {
	c.mu.Lock()
	idle := len(c.streams) == 0 && c.reserved == 0
	wait := c.cfg.IdleTimeout - time.Since(c.lastActive)
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return
	}
	if idle && wait <= 0 {
		c.fail(errClientClosed)
		return
	}
	c.idleTimer.Reset(max(wait, time.Second))
}

// keepaliveData is the payload of the keepalive's PINGs.
var keepaliveData = [8]byte{'p', 'o', 'r', 't', 'i', 'c', 'o', 'k'}

// keepalive runs on the ping timer: a connection that read frames since
// the last run is alive; one that did not gets a PING, and one that read
// nothing within the PING's timeout either is closed.
func (c *ClientConn) keepalive() {
	n := c.framesRead.Load()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	active := n != c.pingSeen
	c.pingSeen = n
	switch {
	case active:
		c.pingOut = false
		c.pingTimer.Reset(c.cfg.PingInterval)
	case !c.pingOut:
		c.out.fr.WritePing(false, keepaliveData)
		c.pingOut = true
		c.pingTimer.Reset(c.cfg.PingTimeout)
		c.out.kick()
	default:
		c.mu.Unlock()
		c.cfg.Log.V(1).Info("upstream HTTP/2 connection did not answer a keepalive PING", "timeout", c.cfg.PingTimeout.String(), "remote", c.nc.RemoteAddr().String())
		c.fail(fmt.Errorf("http2: upstream did not answer a keepalive PING within %v", c.cfg.PingTimeout))
		return
	}
	c.mu.Unlock()
}

// readLoop reads frames until the connection fails.
func (c *ClientConn) readLoop() {
	defer close(c.readerDone)
	defer func() {
		c.br.Reset(nil)
		readerPool.Put(c.br)
	}()
	for {
		c.cr.n = 0
		f, err := c.rfr.ReadFrame()
		if err == nil {
			c.framesRead.Add(1)
			err = c.processFrame(f)
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.mu.Lock()
				if s := c.streams[se.StreamID]; s != nil {
					c.resetLocked(s, se.Code, fmt.Errorf("http2: upstream protocol error on stream: %w", se))
				}
				c.mu.Unlock()
				c.out.kick()
				continue
			}
			if code, ok := connErrCode(err); ok {
				c.mu.Lock()
				c.out.fr.WriteGoAway(0, code, nil)
				c.mu.Unlock()
				c.out.kick()
				c.cfg.Log.V(1).Info("upstream HTTP/2 connection error", "code", code.String(), "error", err.Error(), "remote", c.nc.RemoteAddr().String())
				err = fmt.Errorf("http2: upstream connection error %v: %w", code, err)
			} else {
				err = fmt.Errorf("http2: reading from upstream: %w", err)
			}
			c.fail(err)
			return
		}
	}
}

func (c *ClientConn) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if s := c.streams[f.StreamID]; s != nil {
			err := fmt.Errorf("http2: upstream reset the stream: %v", f.ErrCode)
			if f.ErrCode == http2.ErrCodeRefusedStream {
				err = fmt.Errorf("%w: stream refused", ErrRetryable)
			}
			c.closeStreamLocked(s, err)
		}
		return nil
	case *http2.PingFrame:
		if !f.IsAck() {
			c.mu.Lock()
			c.out.fr.WritePing(true, f.Data)
			err := c.out.controlRoomLocked()
			c.mu.Unlock()
			c.out.kick()
			return err
		}
		if f.Data == keepaliveData {
			c.pingAcks.Add(1)
			// Answered: the next check is an interval from now, not
			// when the timeout would have run out.
			c.mu.Lock()
			if c.pingOut && !c.closed {
				c.pingOut = false
				c.pingSeen = c.framesRead.Load()
				c.pingTimer.Reset(c.cfg.PingInterval)
			}
			c.mu.Unlock()
		}
		return nil
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goAway = true
		for id, s := range c.streams {
			if id > f.LastStreamID {
				c.closeStreamLocked(s, fmt.Errorf("%w: GOAWAY above stream %d", ErrRetryable, f.LastStreamID))
			}
		}
		idle := len(c.streams) == 0
		c.mu.Unlock()
		switch {
		case f.ErrCode != http2.ErrCodeNo:
			// Streams up to its last stream id may have been processed:
			// their failure is not marked retryable.
			c.fail(fmt.Errorf("http2: upstream sent GOAWAY %v", f.ErrCode))
		case idle:
			c.fail(fmt.Errorf("%w: upstream went away", ErrRetryable))
		}
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // PRIORITY, unknown frames: ignored
}

func (c *ClientConn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = s.Val
		case http2.SettingInitialWindowSize:
			d := int64(s.Val) - c.peerInitialWindow
			c.peerInitialWindow = int64(s.Val)
			for _, st := range c.streams {
				if !growWindow(&st.sendWindow, d) {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = s.Val
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.out.fr.WriteSettingsAck()
	c.broadcastLocked()
	if err := c.out.controlRoomLocked(); err != nil {
		return err
	}
	c.out.kick()
	return nil
}

func (c *ClientConn) processHeaders(f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID >= c.nextID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // a stream we reset meanwhile
	}
	if f.Truncated {
		c.resetLocked(s, http2.ErrCodeProtocol, fmt.Errorf("http2: upstream header list larger than %d bytes", c.cfg.MaxHeaderListSize))
		return nil
	}
	if s.gotHeaders {
		// Trailers.
		if !f.StreamEnded() || f.PseudoFields() != nil && len(f.PseudoFields()) > 0 {
			c.resetLocked(s, http2.ErrCodeProtocol, errors.New("http2: upstream sent malformed trailers"))
			return nil
		}
		s.trailer = &httpx.Header{Fields: make([]httpx.Field, 0, len(f.Fields))}
		for _, hf := range f.RegularFields() {
			s.trailer.Add(hf.Name, hf.Value)
		}
		c.endRecvLocked(s)
		return nil
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		c.resetLocked(s, http2.ErrCodeProtocol, errors.New("http2: upstream response without a valid :status"))
		return nil
	}
	if status < 200 {
		return nil // 1xx: the final response follows
	}
	resp := s.resp
	resp.Status = status
	resp.Header.Fields = make([]httpx.Field, 0, len(f.Fields))
	resp.ContentLength = -1
	for _, hf := range f.RegularFields() {
		if isConnectionSpecific(hf.Name) {
			c.resetLocked(s, http2.ErrCodeProtocol, fmt.Errorf("http2: upstream sent connection-specific field %q", hf.Name))
			return nil
		}
		resp.Header.Add(hf.Name, hf.Value)
	}
	if v := resp.Header.Get("content-length"); v != "" {
		if n, ok := parseLength(v); ok {
			resp.ContentLength = n
		}
	}
	s.gotHeaders, s.respReady = true, true
	if f.StreamEnded() {
		if resp.ContentLength < 0 {
			resp.ContentLength = 0
		}
		c.endRecvLocked(s)
	}
	close(s.headers)
	return nil
}

// endRecvLocked: the response ended (END_STREAM).
func (c *ClientConn) endRecvLocked(s *clientStream) {
	s.ended = true
	s.signalRead()
	if s.sentEnd {
		c.removeLocked(s)
	}
}

func (c *ClientConn) processData(f *http2.DataFrame) error {
	n := int64(f.Length)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.recv.take(n) {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	s := c.streams[f.StreamID]
	if s == nil || !s.gotHeaders || s.ended {
		// A stream we reset, or DATA where none belongs: the bytes are
		// given back to the connection window at once.
		c.grantConnLocked(n)
		if f.StreamID >= c.nextID || f.StreamID == 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if s != nil {
			c.resetLocked(s, http2.ErrCodeStreamClosed, errors.New("http2: upstream sent DATA out of place"))
		}
		return nil
	}
	if !s.recv.take(n) {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	data := f.Data()
	if pad := n - int64(len(data)); pad > 0 {
		c.grantConnLocked(pad)
		c.grantStreamLocked(s, pad)
	}
	if len(data) > 0 {
		if s.buf == nil {
			s.buf = make([]byte, 0, min(len(data)*2, int(c.cfg.InitialStreamWindow)))
		}
		s.buf = append(s.buf, data...)
	}
	if f.StreamEnded() {
		c.endRecvLocked(s)
	}
	s.signalRead()
	return nil
}

func (c *ClientConn) grantConnLocked(n int64) {
	if inc := c.recv.consumed(n, int64(c.cfg.InitialConnectionWindow)/4); inc > 0 {
		c.out.fr.WriteWindowUpdate(0, inc)
		c.out.kick()
	}
}

func (c *ClientConn) grantStreamLocked(s *clientStream, n int64) {
	if s.ended || s.done {
		return
	}
	if inc := s.recv.consumed(n, int64(c.cfg.InitialStreamWindow)/4); inc > 0 {
		c.out.fr.WriteWindowUpdate(s.id, inc)
		c.out.kick()
	}
}

func (c *ClientConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if !growWindow(&c.sendWindow, int64(f.Increment)) {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	} else if s := c.streams[f.StreamID]; s != nil {
		if !growWindow(&s.sendWindow, int64(f.Increment)) {
			c.resetLocked(s, http2.ErrCodeFlowControl, errors.New("http2: upstream overflowed a stream window"))
			return nil
		}
	}
	c.broadcastLocked()
	return nil
}

// resetLocked sends RST_STREAM and fails the stream with err.
func (c *ClientConn) resetLocked(s *clientStream, code http2.ErrCode, err error) {
	if s.done {
		return
	}
	c.out.fr.WriteRSTStream(s.id, code)
	c.closeStreamLocked(s, err)
	c.out.kick()
}

// closeStreamLocked fails a stream (when err != nil) and forgets it.
func (c *ClientConn) closeStreamLocked(s *clientStream, err error) {
	if s.done {
		return
	}
	if s.err == nil && err != nil && !(s.ended && s.sentEnd) {
		s.err = err
	}
	if !s.gotHeaders {
		s.gotHeaders = true
		close(s.headers)
	}
	c.removeLocked(s)
	s.signalRead()
	c.broadcastLocked()
}

func (c *ClientConn) removeLocked(s *clientStream) {
	if s.done {
		return
	}
	s.done = true
	// Unread bytes no longer count against the connection window (they
	// stay readable: what arrived before an end or a reset is still the
	// response, and reads grant nothing more).
	if unread := int64(len(s.buf) - s.off); unread > 0 && !c.closed {
		c.grantConnLocked(unread)
	}
	delete(c.streams, s.id)
	c.lastActive = time.Now()
	if len(c.streams) == 0 && c.goAway && !c.closed {
		go c.fail(fmt.Errorf("%w: upstream went away", ErrRetryable)) // fail takes mu
	}
}

func (s *clientStream) signalRead() {
	if s.readWake != nil {
		select {
		case s.readWake <- struct{}{}:
		default:
		}
	}
}

// RoundTrip sends req on a stream claimed with Reserve and returns the
// response once its headers arrived. The request is the proxy's own model
// (httpx): Method, Scheme, Authority, Target, Header (lowercase names),
// ContentLength (-1 unknown, 0 none) and Body are used. The request body is
// sent by a goroutine of the stream, within the peer's windows; the
// response body (a *ResponseBody, which the caller must Close) is buffered
// within the windows advertised and granted back as it is read; the
// response's Trailer is set once its body returned io.EOF. Cancelling ctx
// resets the stream. Closing the response body before its end resets the
// stream too.
func (c *ClientConn) RoundTrip(ctx context.Context, req *httpx.Request) (*httpx.Response, error) {
	scheme := req.Scheme
	if scheme == "" {
		scheme = "http"
	}
	path := req.Target
	if path == "" {
		path = "/"
	}
	hasBody := req.Body != nil && req.ContentLength != 0

	c.mu.Lock()
	c.reserved--
	if c.closed || c.goAway {
		err := c.err
		c.mu.Unlock()
		if err == nil || !errors.Is(err, ErrRetryable) {
			err = fmt.Errorf("%w: connection closing", ErrRetryable)
		}
		closeBody(req.Body)
		return nil, err
	}
	s := &clientStream{c: c, id: c.nextID, headers: make(chan struct{}),
		sendWindow: c.peerInitialWindow, recv: inflow{avail: int64(c.cfg.InitialStreamWindow)},
		resp: &httpx.Response{Proto: "HTTP/2"}}
	c.nextID += 2
	c.streams[s.id] = s
	c.hbuf.Reset()
	enc := func(name, value string) { c.henc.WriteField(hpack.HeaderField{Name: name, Value: value}) }
	enc(":method", req.Method)
	enc(":scheme", scheme)
	enc(":authority", req.Authority)
	enc(":path", path)
	hasLength := false
	for _, f := range req.Header.Fields {
		// httpx header names are lowercase already.
		switch {
		case isConnectionSpecific(f.Name), f.Name == "host":
			continue
		case f.Name == "te":
			if !strings.EqualFold(f.Value, "trailers") {
				continue
			}
		case f.Name == "content-length":
			hasLength = true
		}
		enc(f.Name, f.Value)
	}
	if hasBody && req.ContentLength > 0 && !hasLength {
		enc("content-length", strconv.FormatInt(req.ContentLength, 10))
	}
	writeHeaderBlock(c.out.fr, s.id, c.hbuf.Bytes(), !hasBody, int(c.peerMaxFrame))
	if !hasBody {
		s.sentEnd = true
		defer closeBody(req.Body)
	}
	c.mu.Unlock()
	c.out.kick()

	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.resetLocked(s, http2.ErrCodeCancel, ctx.Err())
		c.mu.Unlock()
	})
	if hasBody {
		go s.sendBody(ctx, req.Body)
	}
	select {
	case <-s.headers:
	case <-ctx.Done():
	}
	c.mu.Lock()
	var err error
	if !s.respReady {
		err = s.err
	}
	if err == nil && !s.respReady {
		err = ctx.Err()
		if err == nil {
			err = errStreamCancelled
		}
		c.resetLocked(s, http2.ErrCodeCancel, err)
	}
	c.mu.Unlock()
	if err != nil {
		stop()
		return nil, err
	}
	resp := s.resp
	resp.Body = &ResponseBody{s: s, stop: stop}
	return resp, nil
}

// closeBody closes a request body that is also a Closer.
func closeBody(r io.Reader) {
	if c, ok := r.(io.Closer); ok {
		c.Close()
	}
}

// writeHeaderBlock writes HEADERS and as many CONTINUATION frames as the
// peer's frame size needs.
func writeHeaderBlock(fr *http2.Framer, id uint32, block []byte, end bool, maxFrame int) {
	first := true
	for first || len(block) > 0 {
		chunk := block
		if len(chunk) > maxFrame {
			chunk = chunk[:maxFrame]
		}
		block = block[len(chunk):]
		if first {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			fr.WriteContinuation(id, len(block) == 0, chunk)
		}
	}
}

// sendBody copies the request body into DATA frames, each waiting for
// the peer's stream and connection windows and for room in the write
// queue. It ends with the body, or when the stream closes.
func (s *clientStream) sendBody(ctx context.Context, body io.Reader) {
	c := s.c
	defer closeBody(body)
	bp := bodyBufPool.Get().(*[]byte)
	// Returned when this goroutine ends: only it reads or writes the
	// buffer (WriteData copies into the write queue).
	defer bodyBufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := body.Read(buf)
		if rerr != nil && rerr != io.EOF {
			c.mu.Lock()
			c.resetLocked(s, http2.ErrCodeCancel, fmt.Errorf("reading request body: %w", rerr))
			c.mu.Unlock()
			return
		}
		p := buf[:n]
		for {
			c.mu.Lock()
			if s.done || c.closed {
				// Reset, or the response ended before the request body
				// did: the upstream does not want the rest.
				c.mu.Unlock()
				return
			}
			allowed := min(int64(len(p)), s.sendWindow, c.sendWindow, int64(c.peerMaxFrame))
			if (allowed > 0 || len(p) == 0) && c.out.buf.Len() < maxPendingData {
				end := rerr == io.EOF && int64(len(p)) == allowed
				if len(p) == 0 {
					end, allowed = rerr == io.EOF, 0
					if !end {
						c.mu.Unlock()
						break
					}
				}
				c.out.writeDataLocked(s.id, p[:allowed], end)
				s.sendWindow -= allowed
				c.sendWindow -= allowed
				p = p[allowed:]
				if end {
					s.sentEnd = true
					if s.ended {
						c.removeLocked(s)
					}
				}
				c.mu.Unlock()
				c.out.kick()
				if end {
					return
				}
				if len(p) == 0 {
					break
				}
				continue
			}
			wake := c.changed
			c.mu.Unlock()
			select {
			case <-wake:
			case <-ctx.Done():
				return // the context's AfterFunc resets the stream
			case <-c.readerDone:
				return
			}
		}
		if rerr == io.EOF {
			return
		}
	}
}

var bodyBufPool = sync.Pool{New: func() any { b := make([]byte, maxFrameSize); return &b }}

// ResponseBody is an upstream response body: read it to its end or Close
// it (which resets a stream still running).
type ResponseBody struct {
	s    *clientStream
	stop func() bool
	eof  bool
}

func (b *ResponseBody) Read(p []byte) (int, error) {
	s := b.s
	c := s.c
	c.mu.Lock()
	for {
		if s.off < len(s.buf) {
			n := copy(p, s.buf[s.off:])
			s.off += n
			if s.off == len(s.buf) {
				s.buf, s.off = s.buf[:0], 0
			}
			if !s.done {
				c.grantConnLocked(int64(n))
				c.grantStreamLocked(s, int64(n))
			}
			c.mu.Unlock()
			return n, nil
		}
		if s.err != nil {
			err := s.err
			c.mu.Unlock()
			return 0, err
		}
		if s.ended {
			if s.trailer != nil && !b.eof {
				s.resp.Trailer = s.trailer
			}
			b.eof = true
			c.mu.Unlock()
			return 0, io.EOF
		}
		if s.readWake == nil {
			s.readWake = make(chan struct{}, 1)
		}
		wake := s.readWake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-c.readerDone:
		}
		c.mu.Lock()
		if c.closed && s.err == nil && !s.ended {
			s.err = c.err
		}
	}
}

// Close ends the stream: one whose response has not ended is reset
// (CANCEL), which stops the upstream and releases its buffered bytes.
func (b *ResponseBody) Close() error {
	s := b.s
	c := s.c
	b.stop()
	c.mu.Lock()
	if !s.done {
		if s.ended && !s.sentEnd {
			c.resetLocked(s, http2.ErrCodeNo, errStreamCancelled)
		} else {
			c.resetLocked(s, http2.ErrCodeCancel, errStreamCancelled)
		}
	}
	c.mu.Unlock()
	return nil
}
