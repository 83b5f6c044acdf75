package hostile

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2client speaks raw HTTP/2 frames: it can send what a well-behaved
// client never would (invalid pseudo-headers, uppercase names, frames on
// the wrong streams) and reports what the server answered.
type h2client struct {
	nc  net.Conn
	fr  *http2.Framer
	env *Env
	enc *hpack.Encoder
	buf bytes.Buffer

	// wmu serialises frame writes; replies the reader owes the server
	// (PING and SETTINGS acknowledgements, window updates) are written by
	// goroutines counted in replies, so the reader never blocks on a
	// write while the server waits for it to read.
	wmu      sync.Mutex
	replies  sync.WaitGroup
	readOnce sync.Once

	// What the reader saw.
	mu      sync.Mutex
	events  map[uint32][]string // per stream: "200", "RST(CODE)", "end"
	goaway  string              // "goaway(CODE)" once received
	lastID  uint32              // the GOAWAY's last stream id
	closed  bool                // the connection ended
	pingAck map[[8]byte]bool
	changed chan struct{} // signalled on every event
	done    chan struct{} // closed when the reader exits
}

// dialH2 connects (over TLS with ALPN h2 when useTLS) and sends the
// preface and an empty SETTINGS frame. A reader goroutine records what
// the server sends, answering its PINGs and SETTINGS; Close stops it.
func dialH2(ctx context.Context, env *Env, useTLS bool) (*h2client, error) {
	c, err := dialH2Conn(ctx, env, useTLS)
	if err != nil {
		return nil, err
	}
	c.startReader()
	return c, nil
}

// dialH2Raw is dialH2 over h2c without the reader: the server's frames
// pile up unread until startReader (a client that never reads).
func dialH2Raw(ctx context.Context, env *Env) (*h2client, error) {
	return dialH2Conn(ctx, env, false)
}

// startReader starts recording what the server sends (once).
func (c *h2client) startReader() {
	c.readOnce.Do(func() { go c.read() })
}

func dialH2Conn(ctx context.Context, env *Env, useTLS bool) (*h2client, error) {
	addr := env.H2C
	if useTLS {
		addr = env.TLS
	}
	nc, err := dial(ctx, env, addr, false)
	if err != nil {
		return nil, err
	}
	if useTLS {
		tc := tls.Client(nc, &tls.Config{ServerName: "a.example.com", RootCAs: env.CA, NextProtos: []string{"h2"}})
		tc.SetDeadline(time.Now().Add(env.Wait))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		tc.SetDeadline(time.Time{})
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			tc.Close()
			return nil, fmt.Errorf("ALPN negotiated %q, not h2", p)
		}
		nc = tc
	}
	c := &h2client{nc: nc, env: env, events: map[uint32][]string{}, pingAck: map[[8]byte]bool{},
		changed: make(chan struct{}, 1), done: make(chan struct{})}
	c.fr = http2.NewFramer(nc, nc)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(65536, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.enc = hpack.NewEncoder(&c.buf)
	nc.SetWriteDeadline(time.Now().Add(env.Wait))
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		nc.Close()
		return nil, err
	}
	if err := c.fr.WriteSettings(); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *h2client) Close() {
	c.nc.Close()
	c.startReader() // so that done is closed
	<-c.done
	c.replies.Wait()
}

// reply writes a frame the reader owes the server, without blocking it.
func (c *h2client) reply(f func() error) {
	c.replies.Add(1)
	go func() {
		defer c.replies.Done()
		c.write(f)
	}()
}

func (c *h2client) note(f func()) {
	c.mu.Lock()
	f()
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *h2client) read() {
	defer close(c.done)
	defer c.note(func() { c.closed = true })
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status := f.PseudoValue("status")
			if status == "" {
				status = "?"
			}
			c.note(func() { c.events[f.StreamID] = append(c.events[f.StreamID], status) })
			if f.StreamEnded() {
				c.note(func() { c.events[f.StreamID] = append(c.events[f.StreamID], "end") })
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				c.note(func() { c.events[f.StreamID] = append(c.events[f.StreamID], "end") })
			}
			if n := len(f.Data()); n > 0 { // keep the server able to send
				c.reply(func() error {
					if err := c.fr.WriteWindowUpdate(0, uint32(n)); err != nil {
						return err
					}
					return c.fr.WriteWindowUpdate(f.StreamID, uint32(n))
				})
			}
		case *http2.RSTStreamFrame:
			c.note(func() { c.events[f.StreamID] = append(c.events[f.StreamID], "RST("+f.ErrCode.String()+")") })
		case *http2.GoAwayFrame:
			c.note(func() {
				if c.goaway == "" {
					c.goaway = "goaway(" + f.ErrCode.String() + ")"
					c.lastID = f.LastStreamID
				}
			})
		case *http2.PingFrame:
			if f.IsAck() {
				c.note(func() { c.pingAck[f.Data] = true })
			} else {
				c.reply(func() error { return c.fr.WritePing(true, f.Data) })
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.reply(func() error { return c.fr.WriteSettingsAck() })
			}
		}
	}
}

// write serialises frame writes.
func (c *h2client) write(f func() error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(c.env.Wait))
	return f()
}

// block encodes header fields as given: names are not lowercased or
// checked, so anything can be sent. Fields are literals never indexed,
// so a block can be sent any number of times without the server's HPACK
// table drifting from the encoder's.
func (c *h2client) block(fields [][2]string) []byte {
	c.buf.Reset()
	for _, f := range fields {
		c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true})
	}
	return append([]byte(nil), c.buf.Bytes()...)
}

// headers sends a HEADERS frame (with CONTINUATIONs when the block is
// larger than a frame).
func (c *h2client) headers(id uint32, fields [][2]string, endStream bool) error {
	return c.headerBlock(id, c.block(fields), endStream)
}

func (c *h2client) headerBlock(id uint32, blk []byte, endStream bool) error {
	return c.write(func() error {
		const max = 16384
		first := blk
		if len(first) > max {
			first = blk[:max]
		}
		rest := blk[len(first):]
		if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(rest) == 0}); err != nil {
			return err
		}
		for len(rest) > 0 {
			n := min(len(rest), max)
			if err := c.fr.WriteContinuation(id, n == len(rest), rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
}

func (c *h2client) data(id uint32, b string, endStream bool) error {
	return c.write(func() error { return c.fr.WriteData(id, endStream, []byte(b)) })
}

// rawFrame writes a frame header and payload as given (for frames the
// Framer refuses to produce).
func (c *h2client) rawFrame(typ http2.FrameType, flags http2.Flags, id uint32, payload []byte) error {
	return c.write(func() error {
		var h [9]byte
		h[0], h[1], h[2] = byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))
		h[3], h[4] = byte(typ), byte(flags)
		binary.BigEndian.PutUint32(h[5:], id&0x7fffffff)
		_, err := c.nc.Write(append(h[:], payload...))
		return err
	})
}

// streamOutcome waits for the server's answer on a stream: its status
// (and whether the stream then ended) or RST_STREAM, or for the
// connection to end: "400", "RST(PROTOCOL_ERROR)", "-" (no answer).
func (c *h2client) streamOutcome(id uint32, wait time.Duration) string {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ev := c.events[id]
		closed, goaway, lastID := c.closed, c.goaway != "", c.lastID
		c.mu.Unlock()
		for _, e := range ev {
			if e != "end" && (e == "?" || !strings.HasPrefix(e, "1")) { // skip 1xx
				return e
			}
		}
		if closed || goaway && id > lastID {
			// The connection ended, or the GOAWAY says this stream was
			// never processed: no answer will come.
			return "-"
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			return "-"
		case <-c.done:
		}
	}
}

// connState pings the connection: "keep" when answered, "goaway(CODE)"
// when the server sent GOAWAY, "close" when the connection ended, "hang"
// when nothing came back.
func (c *h2client) connState(wait time.Duration) string {
	data := [8]byte{'h', 'o', 's', 't', 'i', 'l', 'e', '!'}
	c.write(func() error { return c.fr.WritePing(false, data) })
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		acked, goaway, closed := c.pingAck[data], c.goaway, c.closed
		c.mu.Unlock()
		switch {
		case goaway != "":
			return goaway
		case acked:
			return "keep"
		case closed:
			return "close"
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			return "hang"
		case <-c.done:
		}
	}
}

// waitUntil waits until cond holds (re-checked at every event) or wait
// passes.
func (c *h2client) waitUntil(wait time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-c.changed:
		case <-deadline.C:
			return cond()
		case <-c.done:
			return cond()
		}
	}
	return true
}

// waitClosed waits until the server closes the connection or sends
// GOAWAY (or wait passes).
func (c *h2client) waitClosed(wait time.Duration) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		over := c.closed || c.goaway != ""
		c.mu.Unlock()
		if over {
			return
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			return
		case <-c.done:
		}
	}
}

// waitEvent waits until the server sent e on a stream (or wait passes).
func (c *h2client) waitEvent(id uint32, e string, wait time.Duration) bool {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		for _, x := range c.eventsOf(id) {
			if x == e {
				return true
			}
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			return false
		case <-c.done:
			return false
		}
	}
}

// events returns what the server sent on a stream so far.
func (c *h2client) eventsOf(id uint32) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.events[id]...)
}

// h2case plays steps on a fresh connection, then reports the answer on
// the stream steps returned (0: none, only the connection's state) and
// the connection's state: "400 keep", "RST(PROTOCOL_ERROR) keep",
// "- goaway(PROTOCOL_ERROR)".
type h2case struct {
	tls   bool
	steps func(c *h2client, env *Env) (uint32, error)
	// after runs once the stream was answered (e.g. DATA on the closed
	// stream); its extra events on the stream are reported too.
	after func(c *h2client, id uint32) error
}

func (s h2case) run(ctx context.Context, env *Env) (string, error) {
	c, err := dialH2(ctx, env, s.tls)
	if err != nil {
		return "", err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	defer stop()
	id, err := s.steps(c, env)
	if err != nil && !isWriteAfterClose(err) {
		return "", err
	}
	out := "-"
	if id != 0 {
		out = c.streamOutcome(id, env.Wait)
	}
	if s.after != nil && id != 0 {
		n := len(c.eventsOf(id))
		if err := s.after(c, id); err != nil && !isWriteAfterClose(err) {
			return "", err
		}
		// Wait for the server's reaction on the stream (or on the
		// connection) before pinging: a PING's acknowledgement may be
		// written before a RST_STREAM. A server that ignores the frame
		// is given half its idle timeout, so that the ping still finds
		// the connection open.
		c.waitUntil(min(env.Wait, env.Timeout/2), func() bool {
			for _, e := range c.eventsOf(id)[n:] {
				if strings.HasPrefix(e, "RST(") {
					return true
				}
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.closed || c.goaway != ""
		})
		for _, e := range c.eventsOf(id)[n:] {
			if strings.HasPrefix(e, "RST(") {
				out += " " + e
			}
		}
	}
	return out + " " + c.connState(env.Wait), nil
}

func isWriteAfterClose(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "broken pipe") ||
		strings.Contains(err.Error(), "connection reset")
}

// req is an ordinary request's header fields plus extra ones.
func req(method, path string, extra ...string) [][2]string {
	f := [][2]string{{":method", method}, {":scheme", "http"}, {":authority", "a.example.com"}, {":path", path}}
	return append(f, pairs(extra...)...)
}

func pairs(kv ...string) [][2]string {
	var out [][2]string
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, [2]string{kv[i], kv[i+1]})
	}
	return out
}

// expandFields replaces {T} and {P} in names and values.
func expandFields(f [][2]string, env *Env) [][2]string {
	out := make([][2]string, len(f))
	for i, kv := range f {
		out[i] = [2]string{expand(kv[0], env), expand(kv[1], env)}
	}
	return out
}

// h2one sends one request: header fields (expanded), then optional DATA.
func h2one(fields [][2]string, endStream bool, body ...string) func(context.Context, *Env) (string, error) {
	return h2case{steps: func(c *h2client, env *Env) (uint32, error) {
		if err := c.headers(1, expandFields(fields, env), endStream); err != nil {
			return 1, err
		}
		for i, b := range body {
			if err := c.data(1, b, i == len(body)-1); err != nil {
				return 1, err
			}
		}
		return 1, nil
	}}.run
}
