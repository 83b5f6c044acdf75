package h2

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

// Request is a request as its HEADERS carried it. The Framer has checked
// the field names and values and the pseudo-header order; the server has
// checked that :method, :scheme and :path are there once each.
type Request struct {
	Method, Scheme, Authority, Path string
	// Fields are the regular fields in wire order (lowercase names).
	Fields []hpack.HeaderField
	// ContentLength is the first content-length when the body is open
	// (0 when it does not parse), -1 for an open body without one, and 0
	// when HEADERS ended the stream.
	ContentLength int64
	// Truncated: the header list was larger than MaxHeaderListSize and
	// Fields holds only its start.
	Truncated bool
}

type streamState uint8

const (
	stateOpen streamState = iota
	stateHalfClosedRemote
	stateClosed
)

// Stream is one request and its response. Its body is read with Read
// (from any one goroutine) and its response written with WriteHeader,
// Write and End (from one goroutine, possibly another than the reader).
type Stream struct {
	Request
	c  *Conn
	id uint32
	// ctx is cancelled when the client resets the stream or the
	// connection ends (set when the stream is handed to its handler).
	ctx     context.Context
	cancel  context.CancelFunc
	hasBody bool

	// Guarded by c.mu.
	state          streamState
	err            error // why the stream closed abnormally
	sendWindow     int64
	recv           inflow
	buf            []byte // received body bytes not yet read
	off            int
	maxBuf         int // the buffer's largest capacity (for tests)
	bodyEnded      bool
	declared       int64
	received       int64
	headersSent    bool
	endSent        bool
	failed         bool // a write timed out: the stream is reset at the end
	readAborted    bool
	writeBlocked   bool
	pendingDropped bool
	readWake       chan struct{}
	writeWake      chan struct{}
}

// ID is the stream identifier.
func (s *Stream) ID() uint32 { return s.id }

// Context is cancelled when the client resets the stream or the
// connection ends.
func (s *Stream) Context() context.Context { return s.ctx }

// HasBody reports whether the request has a body (HEADERS did not end
// the stream).
func (s *Stream) HasBody() bool { return s.hasBody }

// TLS is the connection's TLS state (nil for h2c).
func (s *Stream) TLS() *tls.ConnectionState { return s.c.cfg.TLS }

// RemoteAddr and LocalAddr are the connection's addresses.
func (s *Stream) RemoteAddr() net.Addr { return s.c.nc.RemoteAddr() }
func (s *Stream) LocalAddr() net.Addr  { return s.c.nc.LocalAddr() }

func (s *Stream) signalRead() {
	if s.readWake != nil {
		select {
		case s.readWake <- struct{}{}:
		default:
		}
	}
}

func (s *Stream) signalWrite() {
	if s.writeWake != nil {
		select {
		case s.writeWake <- struct{}{}:
		default:
		}
	}
}

// wait blocks until wake fires, the stream idle timeout passes (false),
// or the connection's context ends.
func (s *Stream) wait(wake chan struct{}, t **time.Timer) bool {
	d := s.c.cfg.StreamIdleTimeout
	if d <= 0 {
		select {
		case <-wake:
		case <-s.c.ctx.Done():
		}
		return true
	}
	if *t == nil {
		*t = time.NewTimer(d)
	} else {
		(*t).Reset(d)
	}
	select {
	case <-wake:
		return true
	case <-s.c.ctx.Done():
		return true
	case <-(*t).C:
		return false
	}
}

// Read reads the request body. It returns io.EOF at its end, and
// os.ErrDeadlineExceeded when no byte arrived within the stream idle
// timeout. Bytes read are granted back to the client's windows.
func (s *Stream) Read(p []byte) (int, error) {
	c := s.c
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	c.mu.Lock()
	for {
		if s.readAborted {
			c.mu.Unlock()
			return 0, errBodyAborted
		}
		if s.off < len(s.buf) {
			n := copy(p, s.buf[s.off:])
			s.off += n
			if s.off == len(s.buf) {
				s.buf, s.off = s.buf[:0], 0
			}
			if s.state != stateClosed {
				c.grantConn(int64(n))
				c.grantStream(s, int64(n))
			}
			c.mu.Unlock()
			c.out.kick()
			return n, nil
		}
		if s.err != nil {
			c.mu.Unlock()
			return 0, s.err
		}
		if s.bodyEnded {
			c.mu.Unlock()
			return 0, io.EOF
		}
		if c.closed {
			c.mu.Unlock()
			return 0, errConnClosed
		}
		if s.readWake == nil {
			s.readWake = make(chan struct{}, 1)
		}
		c.mu.Unlock()
		if !s.wait(s.readWake, &t) {
			return 0, os.ErrDeadlineExceeded
		}
		c.mu.Lock()
	}
}

// Drained reports whether the whole body was read.
func (s *Stream) Drained() bool {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.bodyEnded && s.off == len(s.buf)
}

// AbortRead makes a blocked Read, and every later one, fail at once; the
// body's bytes still arriving are dropped. It may be called from any
// goroutine.
func (s *Stream) AbortRead() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.readAborted {
		return
	}
	s.readAborted = true
	if unread := int64(len(s.buf) - s.off); unread > 0 && s.state != stateClosed {
		c.grantConn(unread)
	}
	s.buf, s.off = nil, 0
	s.signalRead()
	c.out.kick()
}

// writable reports why the response cannot be written, if it cannot.
func (s *Stream) writable() error {
	switch {
	case s.endSent:
		return errStreamClosed
	case s.err != nil:
		return s.err
	case s.c.closing:
		return errConnClosed
	}
	return nil
}

// isConnectionSpecific: fields that have no place in an HTTP/2 message
// (RFC 9113 section 8.2.2).
func isConnectionSpecific(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// writeHeadersLocked encodes a header block and queues it as HEADERS
// and CONTINUATION frames, contiguous in the queue.
func (c *Conn) writeHeadersLocked(id uint32, status int, fields, more []httpx.Field, end bool) {
	c.hbuf.Reset()
	if status > 0 {
		c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(status)})
	}
	for _, list := range [2][]httpx.Field{fields, more} {
		for _, f := range list {
			if isConnectionSpecific(f.Name) || f.Name == "" || f.Name[0] == ':' || !httpx.ValidFieldValue(f.Value) {
				continue
			}
			c.henc.WriteField(hpack.HeaderField{Name: f.Name, Value: f.Value})
		}
	}
	blk := c.hbuf.Bytes()
	frame := int(min(c.peerMaxFrame, maxFrameSize))
	first := blk[:min(len(blk), frame)]
	rest := blk[len(first):]
	c.out.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(rest) == 0})
	for len(rest) > 0 {
		n := min(len(rest), frame)
		c.out.fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
}

// statusTexts are the :status values, made once: strconv.Itoa allocates
// for every number over 99.
var statusTexts = func() (t [1000]string) {
	for i := 100; i < len(t); i++ {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusText(status int) string {
	if status >= 100 && status <= 999 {
		return statusTexts[status]
	}
	return "500"
}

// Continue sends an interim 100 (Continue) response.
func (s *Stream) Continue() error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.writable(); err != nil || s.headersSent {
		return err
	}
	c.writeHeadersLocked(s.id, 100, nil, nil, false)
	c.out.kick()
	return nil
}

// WriteHeader queues the response head, fields and then more (fields a
// caller adds without copying the first list); end ends the stream with
// it. Nothing is written to the connection until Write, Flush or End: a
// head and a small body leave together.
func (s *Stream) WriteHeader(status int, fields, more []httpx.Field, end bool) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	if s.headersSent {
		return errStreamClosed
	}
	s.headersSent = true
	c.writeHeadersLocked(s.id, status, fields, more, end)
	if end {
		c.afterEndLocked(s)
		c.out.kick()
	}
	return nil
}

// Write queues body bytes as DATA frames, waiting for the peer's windows
// and for room in the connection's queue. It fails with
// os.ErrDeadlineExceeded when it could not move for the stream idle
// timeout.
func (s *Stream) Write(p []byte) (int, error) {
	c := s.c
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	written := 0
	c.mu.Lock()
	for len(p) > 0 {
		if err := s.writable(); err != nil {
			c.mu.Unlock()
			return written, err
		}
		if s.sendWindow <= 0 || c.sendWindow <= 0 || c.out.buf.Len() >= maxPendingData {
			if s.writeWake == nil {
				s.writeWake = make(chan struct{}, 1)
			}
			s.writeBlocked = true
			c.mu.Unlock()
			c.out.kick() // what is queued must go for room to come
			ok := s.wait(s.writeWake, &t)
			c.mu.Lock()
			s.writeBlocked = false
			if !ok {
				s.failed = true
				c.mu.Unlock()
				return written, os.ErrDeadlineExceeded
			}
			continue
		}
		n := int64(len(p))
		n = min(n, s.sendWindow, c.sendWindow, int64(min(c.peerMaxFrame, maxFrameSize)))
		c.out.writeDataLocked(s.id, p[:n], false)
		s.sendWindow -= n
		c.sendWindow -= n
		written += int(n)
		p = p[n:]
	}
	big := c.out.buf.Len() >= maxPendingData/2
	c.mu.Unlock()
	if big {
		c.out.kick()
	}
	return written, nil
}

// Flush hands what the stream queued to the writer.
func (s *Stream) Flush() { s.c.out.kick() }

// End ends the response: with trailers when there are any, else with an
// empty DATA frame carrying END_STREAM.
func (s *Stream) End(trailers []httpx.Field) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	c.endLocked(s, trailers)
	c.out.kick()
	return nil
}

func (c *Conn) endLocked(s *Stream, trailers []httpx.Field) {
	if !s.headersSent {
		s.headersSent = true
		c.writeHeadersLocked(s.id, 200, nil, nil, len(trailers) == 0)
		if len(trailers) == 0 {
			c.afterEndLocked(s)
			return
		}
	}
	if len(trailers) > 0 {
		c.writeHeadersLocked(s.id, 0, trailers, nil, true)
	} else {
		c.out.writeDataLocked(s.id, nil, true)
	}
	c.afterEndLocked(s)
}

// afterEndLocked: END_STREAM was queued.
func (c *Conn) afterEndLocked(s *Stream) {
	s.endSent = true
	if s.bodyEnded {
		c.closeStream(s, nil)
	}
}

// Reset ends the stream with RST_STREAM (e.g. a response that cannot be
// completed).
func (s *Stream) Reset(code http2.ErrCode) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.state != stateClosed {
		c.resetLocked(s, code)
		c.out.kick()
	}
}
