package h2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// defaultLimits fills in the defaults both ends use for the receive
// windows they advertise (64 KiB a stream, 1 MiB the connection) and the
// header list size they accept (60 KiB), and keeps the windows within
// what the protocol allows.
func defaultLimits(streamWindow, connWindow, maxHeaderList *uint32) {
	if *streamWindow == 0 {
		*streamWindow = 64 << 10
	}
	if *connWindow == 0 {
		*connWindow = 1 << 20
	}
	*streamWindow = min(*streamWindow, maxWindow)
	*connWindow = min(max(*connWindow, 65535), maxWindow)
	if *maxHeaderList == 0 {
		*maxHeaderList = 60 << 10
	}
}

// newFrameReader reads frames from r through cr, which cuts off a header
// block that keeps coming far beyond maxHeaderList (CONTINUATION floods).
func newFrameReader(cr *countingReader, r io.Reader, maxHeaderList uint32) *frameReader {
	*cr = countingReader{r: r, limit: 4*int64(maxHeaderList) + 64<<10}
	fr := http2.NewFramer(nil, cr)
	fr.SetMaxReadFrameSize(maxFrameSize)
	fr.MaxHeaderListSize = maxHeaderList
	fr.SetReuseFrames()
	rd := &frameReader{Framer: fr, maxList: maxHeaderList}
	rd.dec = hpack.NewDecoder(4096, rd.emit)
	rd.dec.SetMaxStringLength(int(min(maxHeaderList, 1<<30)))
	return rd
}

// frameReader reads frames as x/net's Framer does with ReadMetaHeaders
// set — a HEADERS frame and its CONTINUATIONs come back as one
// MetaHeadersFrame with the block decoded and checked the same way — but
// into a frame and a field list it reuses: x/net allocates the frame and
// a closure per header block and grows a new field list field by field,
// about six allocations per request. What ReadFrame returns is valid
// until the next ReadFrame; a caller keeping fields copies them.
type frameReader struct {
	*http2.Framer
	dec     *hpack.Decoder
	maxList uint32
	meta    http2.MetaHeadersFrame
	// The block being decoded: header list bytes still allowed, whether
	// a regular field was seen (pseudo-fields come first), and the first
	// invalid field's error.
	remain     uint32
	sawRegular bool
	invalid    error
}

var (
	errPseudoAfterRegular = errors.New("pseudo header field after regular")
	errInvalidFieldName   = errors.New("invalid header field name")
	errInvalidFieldValue  = errors.New("invalid header field value")
)

// ReadFrame reads the next frame, a whole header block for HEADERS.
func (r *frameReader) ReadFrame() (http2.Frame, error) {
	f, err := r.Framer.ReadFrame()
	if err != nil {
		return f, err
	}
	if hf, ok := f.(*http2.HeadersFrame); ok {
		return r.readHeaderBlock(hf)
	}
	return f, nil
}

// readHeaderBlock decodes hf's block and the CONTINUATION frames that
// follow it (the Framer checks they do, on the same stream). It answers
// what x/net's readMetaFrame answers: a connection error for a block far
// over the header list size, for more of a block after an invalid field,
// and for HPACK errors; a stream error for an invalid field (the block is
// still decoded, so the HPACK state stays in step) or pseudo-fields that
// are unknown, repeated or of both a request and a response.
func (r *frameReader) readHeaderBlock(hf *http2.HeadersFrame) (http2.Frame, error) {
	// The last block's strings go (a large one would otherwise stay
	// referenced by the connection until as many fields come again).
	clear(r.meta.Fields)
	r.meta = http2.MetaHeadersFrame{HeadersFrame: hf, Fields: r.meta.Fields[:0]}
	r.remain, r.sawRegular, r.invalid = r.maxList, false, nil
	r.dec.SetEmitEnabled(true)
	frag, ended := hf.HeaderBlockFragment(), hf.HeadersEnded()
	for {
		// Do not decode much more than will be kept: a fragment over
		// twice what the list may still hold (any, once it is full)
		// ends the connection.
		if int64(len(frag)) > 2*int64(r.remain) || r.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := r.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := r.Framer.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf := f.(*http2.ContinuationFrame) // the Framer checks the order
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := r.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if r.invalid == nil {
		r.invalid = checkPseudos(r.meta.PseudoFields())
	}
	if r.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: r.invalid}
	}
	return &r.meta, nil
}

// emit takes one decoded field: invalid ones stop the block's decoding
// into fields, and a list over maxList is truncated (MetaHeadersFrame's
// Truncated), as x/net does.
func (r *frameReader) emit(f hpack.HeaderField) {
	switch {
	case !httpguts.ValidHeaderFieldValue(f.Value):
		r.invalid = errInvalidFieldValue // the value may be sensitive: not in the error
	case strings.HasPrefix(f.Name, ":"):
		if r.sawRegular {
			r.invalid = errPseudoAfterRegular
		}
	default:
		r.sawRegular = true
		if !validWireName(f.Name) {
			r.invalid = fmt.Errorf("%w %q", errInvalidFieldName, f.Name)
		}
	}
	if r.invalid != nil {
		r.dec.SetEmitEnabled(false)
		return
	}
	size := f.Size()
	if size > r.remain {
		r.dec.SetEmitEnabled(false)
		r.meta.Truncated = true
		r.remain = 0
		return
	}
	r.remain -= size
	r.meta.Fields = append(r.meta.Fields, f)
}

// validWireName: a token in lower case (RFC 9113 section 8.2.1).
func validWireName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !httpguts.IsTokenRune(rune(c)) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// checkPseudos refuses unknown and repeated pseudo-fields, and a mix of
// request and response ones.
func checkPseudos(pf []hpack.HeaderField) error {
	var request, response bool
	for i, f := range pf {
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("invalid pseudo-header %q", f.Name)
		}
		for _, g := range pf[:i] {
			if f.Name == g.Name {
				return fmt.Errorf("duplicate pseudo-header %q", f.Name)
			}
		}
	}
	if request && response {
		return errors.New("mix of request and response pseudo headers")
	}
	return nil
}

// frameQueue is one connection's outgoing frames, shared by the server
// (Conn) and the client (ClientConn): whoever owes the peer a frame
// appends it under the connection's mutex, and one writer goroutine
// writes everything queued since its last write in one write, so a
// response's HEADERS, DATA and END_STREAM, or a burst of WINDOW_UPDATEs
// and acknowledgements, leave in one system call.
type frameQueue struct {
	// Guarded by the owning connection's mutex.
	buf *bytes.Buffer
	fr  *http2.Framer // writes into buf

	ready chan struct{} // wakes the writer (capacity 1)
	stop  chan struct{} // closed to make the writer write once more and return
	done  chan struct{} // closed when the writer has returned
}

func newFrameQueue() *frameQueue {
	q := &frameQueue{buf: new(bytes.Buffer), ready: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	q.fr = http2.NewFramer(queueWriter{q}, nil)
	return q
}

// queueWriter lets the Framer append to whichever buffer is queued (the
// writer swaps buffers).
type queueWriter struct{ q *frameQueue }

func (w queueWriter) Write(p []byte) (int, error) { return w.q.buf.Write(p) }

// kick wakes the writer.
func (q *frameQueue) kick() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// controlRoomLocked: a peer that makes the connection owe it frames
// (SETTINGS and PING acknowledgements, RST_STREAM) faster than it reads
// them is flooding; past maxPendingControl the connection is closed.
func (q *frameQueue) controlRoomLocked() error {
	if q.buf.Len() > maxPendingControl {
		return http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)
	}
	return nil
}

// writeDataLocked queues one DATA frame. The frame header is written
// here rather than by the Framer so that the payload is copied once,
// straight into the queue.
func (q *frameQueue) writeDataLocked(id uint32, p []byte, end bool) {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	n := len(p)
	q.buf.Write([]byte{byte(n >> 16), byte(n >> 8), byte(n), byte(http2.FrameData), flags,
		byte(id >> 24 & 0x7f), byte(id >> 16), byte(id >> 8), byte(id)})
	q.buf.Write(p)
}

// writeHooks are what differs between the server's and the client's
// writer.
type writeHooks struct {
	// prepareLocked runs under mu before a batch is written; false drops
	// the batch (the connection has already failed). stopping: the
	// last batch.
	prepareLocked func(stopping bool) bool
	// failed is called, without mu, when a write fails.
	failed func(err error)
	// drainedLocked runs under mu after each batch: room in the queue
	// may unblock body writers.
	drainedLocked func()
}

// writeLoop writes whatever is queued, in one write per wake-up, until
// stop is closed (and then once more). mu is the owning connection's.
func (q *frameQueue) writeLoop(mu *sync.Mutex, nc net.Conn, h writeHooks) {
	defer close(q.done)
	spare := new(bytes.Buffer)
	for {
		stopping := false
		select {
		case <-q.ready:
		case <-q.stop:
			stopping = true
		}
		mu.Lock()
		out := q.buf
		q.buf = spare
		write := out.Len() > 0 && h.prepareLocked(stopping)
		mu.Unlock()
		if write {
			if _, err := nc.Write(out.Bytes()); err != nil {
				h.failed(err)
			}
		}
		if out.Cap() > 4*maxPendingData {
			out = new(bytes.Buffer) // let a burst's buffer go
		}
		out.Reset()
		spare = out
		mu.Lock()
		h.drainedLocked()
		mu.Unlock()
		if stopping {
			return
		}
	}
}

// openConnWindowLocked raises the connection's receive window from the
// protocol's 65,535 bytes to size with a WINDOW_UPDATE (the connection
// window has no SETTINGS of its own).
func (q *frameQueue) openConnWindowLocked(w *inflow, size uint32) {
	if d := int64(size) - w.avail; d > 0 {
		q.fr.WriteWindowUpdate(0, uint32(d))
		w.avail += d
	}
}

// inflow is a receive window: what the peer may still send, and bytes
// consumed since the last WINDOW_UPDATE.
type inflow struct {
	avail   int64
	unacked int64
}

// take accounts for n bytes received; false when they exceed the window
// (a FLOW_CONTROL_ERROR).
func (w *inflow) take(n int64) bool {
	if n > w.avail {
		return false
	}
	w.avail -= n
	return true
}

// consumed gives n consumed bytes back; once at least threshold are owed
// it returns the WINDOW_UPDATE increment to send (and counts it as
// available again), else 0. Granting in chunks rather than per read
// saves frames.
func (w *inflow) consumed(n, threshold int64) uint32 {
	w.unacked += n
	if w.unacked < threshold || w.unacked <= 0 {
		return 0
	}
	inc := w.unacked
	w.avail += inc
	w.unacked = 0
	return uint32(inc)
}

// maxWindow is the largest flow-control window (RFC 9113 §6.9.1).
const maxWindow = 1<<31 - 1

// growWindow adds a WINDOW_UPDATE increment (or a SETTINGS change) to a
// send window; false when it passes maxWindow (a FLOW_CONTROL_ERROR).
func growWindow(w *int64, n int64) bool {
	*w += n
	return *w <= maxWindow
}
