package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

// server runs Conn over real loopback sockets, one per accepted
// connection, and counts the server's socket writes.
type server struct {
	addr   string
	writes atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []*Conn
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

func (c countingConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

func startServer(t *testing.T, cfg Config, h Handler) *server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: l.Addr().String()}
	ctx, cancel := context.WithCancel(context.Background())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			c := NewConn(countingConn{nc, &s.writes}, cfg, h)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				c.Serve(ctx)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		cancel()
		s.wg.Wait() // every Serve returned: every goroutine it owned ended
	})
	return s
}

// client is a raw HTTP/2 client on a real socket.
type client struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dial(t *testing.T, s *server) *client {
	t.Helper()
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &client{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.buf)
	io.WriteString(nc, http2.ClientPreface)
	c.fr.WriteSettings()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func (c *client) headers(id uint32, end bool, path string, extra ...string) {
	c.buf.Reset()
	fields := []string{":method", "POST", ":scheme", "http", ":authority", "a", ":path", path}
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	for i := 0; i+1 < len(extra); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.buf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		c.t.Fatal(err)
	}
}

// handshake reads the server's SETTINGS and its acknowledgement of the
// client's: after it, the server owes the client nothing.
func (c *client) handshake() {
	c.t.Helper()
	settings, ack := false, false
	for !settings || !ack {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok {
			if sf.IsAck() {
				ack = true
			} else {
				settings = true
				c.fr.WriteSettingsAck()
			}
		}
	}
}

// next returns the next frame that is not SETTINGS, its ack, or a
// connection WINDOW_UPDATE.
func (c *client) next() http2.Frame {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading a frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
			continue
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				continue
			}
		}
		return f
	}
}

// echo answers with the request body.
func echo(s *Stream) {
	b, err := io.ReadAll(s)
	if err != nil {
		return
	}
	s.WriteHeader(200, []httpx.Field{{Name: "x-len", Value: strconv.Itoa(len(b))}}, nil, false)
	s.Write(b)
	s.End(nil)
}

// A response head, a small body and END_STREAM leave in one socket write.
func TestResponseFramesAreBatched(t *testing.T) {
	s := startServer(t, Config{}, func(s *Stream) {
		s.WriteHeader(200, []httpx.Field{{Name: "content-type", Value: "text/plain"}}, nil, false)
		s.Write([]byte("hello"))
		s.End(nil)
	})
	c := dial(t, s)
	c.handshake()
	before := s.writes.Load()
	c.headers(1, true, "/")
	var frames []string
	for {
		f := c.next()
		frames = append(frames, f.Header().Type.String())
		if f.Header().Flags.Has(http2.FlagDataEndStream) && f.Header().Type == http2.FrameData {
			break
		}
	}
	if got := s.writes.Load() - before; got != 1 {
		t.Errorf("response frames %v took %d socket writes, want 1", frames, got)
	}
}

// A request body is granted back (WINDOW_UPDATE) only as the handler
// reads it; a client that sends past its window gets FLOW_CONTROL_ERROR.
func TestRequestBodyBackpressure(t *testing.T) {
	release := make(chan struct{})
	got := make(chan int, 1)
	s := startServer(t, Config{InitialStreamWindow: 65535, InitialConnectionWindow: 1 << 20}, func(s *Stream) {
		<-release
		b, _ := io.ReadAll(s)
		got <- len(b)
		s.WriteHeader(200, nil, nil, true)
	})
	c := dial(t, s)
	c.headers(1, false, "/")
	chunk := make([]byte, 16383)
	for i := 0; i < 4; i++ { // 65532 bytes: within the stream window
		c.fr.WriteData(1, false, chunk)
	}
	// Nothing was read: no stream WINDOW_UPDATE may come.
	c.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			break // the deadline: nothing more
		}
		if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 1 {
			t.Fatalf("WINDOW_UPDATE for the stream before the handler read anything")
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			c.fr.WriteSettingsAck()
		}
	}
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	close(release)
	// Reading frees the window: the stream gets WINDOW_UPDATE.
	for {
		f := c.next()
		if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == 1 {
			break
		}
	}
	c.fr.WriteData(1, true, []byte("end"))
	if n := <-got; n != 4*16383+3 {
		t.Errorf("handler read %d bytes", n)
	}

	// Past the window: FLOW_CONTROL_ERROR. On a server whose handler
	// never reads: one that reads (as the first server's now does) opens
	// the window as the data arrives, so it never overflows.
	stop := make(chan struct{})
	s2 := startServer(t, Config{InitialStreamWindow: 65535, InitialConnectionWindow: 1 << 20}, func(s *Stream) { <-stop })
	t.Cleanup(func() { close(stop) }) // runs before s2's, which waits for its handlers
	c2 := dial(t, s2)
	c2.headers(1, false, "/")
	big := make([]byte, 16384)
	c2.fr.WriteData(1, false, big[:16383])
	for i := 0; i < 4; i++ {
		c2.fr.WriteData(1, false, big)
	}
	for {
		f := c2.next()
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			if rst.ErrCode != http2.ErrCodeFlowControl {
				t.Errorf("RST_STREAM %v, want FLOW_CONTROL_ERROR", rst.ErrCode)
			}
			break
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatalf("GOAWAY %v, want a stream error", ga.ErrCode)
		}
	}
}

// A body read a little behind its arrival (never drained to empty)
// keeps its buffer within about twice the stream window, however long it
// is. Driven frame by frame, without a socket, so the lag is exact.
func TestBodyBufferStaysBoundedWhenReadBehind(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := NewConn(a, Config{InitialStreamWindow: 65535}, nil)
	st := &Stream{c: c, id: 1, state: stateOpen, recv: inflow{avail: 65535}, sendWindow: 65535, declared: -1}
	c.streams[1] = st
	c.maxID = 1
	c.recv.avail = int64(c.cfg.InitialConnectionWindow) // as Serve grants it
	var wire bytes.Buffer
	wfr := http2.NewFramer(&wire, nil)
	rfr := http2.NewFramer(nil, &wire)
	chunk := make([]byte, 16384)
	feed := func(n int) {
		t.Helper()
		wfr.WriteData(1, false, chunk[:n])
		f, err := rfr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.processData(f.(*http2.DataFrame)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(n int) {
		t.Helper()
		p := make([]byte, n)
		if m, err := io.ReadFull(st, p); err != nil || m != n {
			t.Fatalf("read %d of %d: %v", m, n, err)
		}
	}
	feed(16384)
	feed(16384)
	read(2*16384 - 20000)      // 20,000 bytes stay unread from now on
	for i := 0; i < 300; i++ { // ~5 MB through the stream
		n := min(len(chunk), int(st.recv.avail)) // what the client may send
		if n == 0 {
			t.Fatal("the stream window closed although the handler reads")
		}
		feed(n)
		read(n)
	}
	if st.maxBuf > 3*65535 {
		t.Errorf("the body buffer grew to %d bytes for a 64 KiB window", st.maxBuf)
	}
}

// A response body waits for the client's window and resumes on
// WINDOW_UPDATE.
func TestResponseFlowControl(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100)
	s := startServer(t, Config{}, func(s *Stream) {
		s.WriteHeader(200, nil, nil, false)
		if n, err := s.Write(body); n != len(body) || err != nil {
			t.Errorf("Write: %d %v", n, err)
		}
		s.End(nil)
	})
	c := dial(t, s)
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	c.headers(1, true, "/")
	got := 0
	for got < len(body) {
		f := c.next()
		d, ok := f.(*http2.DataFrame)
		if !ok {
			continue
		}
		if n := len(d.Data()); n > 10 {
			t.Fatalf("DATA of %d bytes with a window of 10", n)
		}
		got += len(d.Data())
		if len(d.Data()) > 0 {
			c.fr.WriteWindowUpdate(1, uint32(len(d.Data())))
		}
	}
}

// A reset stream's handler, blocked reading its body or writing its
// response, returns at once; a stream opened and reset in one burst never
// reaches a handler; a client resetting most of its streams is cut off.
func TestResetFreesStreamsAndFloodsAreClosed(t *testing.T) {
	var started atomic.Int64
	returned := make(chan error, 10)
	s := startServer(t, Config{}, func(s *Stream) {
		started.Add(1)
		if strings.HasPrefix(s.Path, "/read") {
			_, err := io.ReadAll(s)
			report(returned, err)
			return
		}
		s.WriteHeader(200, nil, nil, false)
		_, err := s.Write(make([]byte, 1<<20)) // more than the window
		report(returned, err)
	})
	c := dial(t, s)
	c.headers(1, false, "/read")
	c.headers(3, true, "/write")
	for {
		f := c.next()
		if f.Header().StreamID == 3 {
			break // the writer is running (and will block on the window)
		}
	}
	c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	c.fr.WriteRSTStream(3, http2.ErrCodeCancel)
	for i := 0; i < 2; i++ {
		select {
		case err := <-returned:
			if err == nil {
				t.Errorf("a reset stream's read or write succeeded")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a handler blocked on a reset stream did not return")
		}
	}

	// Rapid reset: HEADERS + RST_STREAM in one burst, 200 times.
	before := started.Load()
	c2 := dial(t, s)
	var burst bytes.Buffer
	fr := http2.NewFramer(&burst, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/rr"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	for i := uint32(0); i < 200; i++ {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2*i + 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
		fr.WriteRSTStream(2*i+1, http2.ErrCodeCancel)
	}
	c2.nc.Write(burst.Bytes())
	for {
		f, err := c2.fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
			}
			break
		}
	}
	if n := started.Load() - before; n > 16 {
		t.Errorf("%d handlers ran for streams reset in the burst that opened them", n)
	}
}

// Streams beyond MaxConcurrentStreams are refused with REFUSED_STREAM
// while the first ones are in their handlers.
func TestStreamsOverTheLimitAreRefused(t *testing.T) {
	block := make(chan struct{})
	s := startServer(t, Config{MaxConcurrentStreams: 3}, func(s *Stream) {
		<-block
		s.WriteHeader(204, nil, nil, true)
	})
	defer close(block)
	c := dial(t, s)
	for i := uint32(0); i < 5; i++ {
		c.headers(2*i+1, true, "/")
	}
	refused := map[uint32]bool{}
	for len(refused) < 2 {
		f := c.next()
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			if rst.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("RST_STREAM %v on %d", rst.ErrCode, rst.StreamID)
			}
			refused[rst.StreamID] = true
		}
	}
	if !refused[7] || !refused[9] {
		t.Errorf("refused %v, want streams 7 and 9", refused)
	}
}

// Shutdown: GOAWAY(NO_ERROR) naming the last stream served; that stream
// completes, a later one is ignored, and the connection closes when done.
func TestShutdownDrainsGracefully(t *testing.T) {
	release := make(chan struct{})
	s := startServer(t, Config{}, func(s *Stream) {
		<-release
		s.WriteHeader(200, nil, nil, false)
		s.Write([]byte("done"))
		s.End(nil)
	})
	c := dial(t, s)
	c.headers(1, true, "/")
	testWait(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 1
	})
	// Wait for the stream to be in its handler before draining.
	testWait(t, func() bool {
		cn := s.conns[0]
		cn.mu.Lock()
		defer cn.mu.Unlock()
		return cn.busy == 1 && len(cn.pending) == 0
	})
	s.conns[0].Shutdown()
	f := c.next()
	ga, ok := f.(*http2.GoAwayFrame)
	if !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
		t.Fatalf("got %v, want GOAWAY(NO_ERROR, last 1)", f)
	}
	c.headers(3, true, "/") // after GOAWAY: ignored
	close(release)
	var status string
	ended := false
	for !ended {
		f := c.next()
		if f.Header().StreamID == 3 {
			t.Fatalf("stream 3 was served after GOAWAY: %v", f)
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			status = h.PseudoValue("status")
		}
		ended = f.Header().Flags.Has(http2.FlagDataEndStream) && f.Header().Type == http2.FrameData
	}
	if status != "200" {
		t.Errorf("drained stream answered %q", status)
	}
	if _, err := c.fr.ReadFrame(); err == nil {
		t.Errorf("the connection stayed open after its last stream")
	}
}

// An idle connection gets GOAWAY(NO_ERROR) and is closed after the idle
// timeout; Serve's goroutines all end.
func TestIdleTimeout(t *testing.T) {
	before := runtime.NumGoroutine()
	s := startServer(t, Config{IdleTimeout: 200 * time.Millisecond}, echo)
	c := dial(t, s)
	start := time.Now()
	f := c.next()
	if ga, ok := f.(*http2.GoAwayFrame); !ok || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("got %v, want GOAWAY(NO_ERROR)", f)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("GOAWAY after %v, before the idle timeout", d)
	}
	c.nc.Close()
	testWait(t, func() bool { return runtime.NumGoroutine() <= before+2 }) // the accept loop and its server
}

// report sends err without blocking (a flood's handlers must never wait
// for the test).
func report(ch chan error, err error) {
	select {
	case ch <- err:
	default:
	}
}

func testWait(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5 s")
		}
	}
}

// goroutineID is the running goroutine's number, from its stack header.
func goroutineID() string {
	var b [64]byte
	n := runtime.Stack(b[:], false)
	f := strings.Fields(string(b[:n]))
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// Handlers run on reused goroutines: a stream's goroutine takes the next
// stream instead of ending (a new one per stream grew its stack again
// every time); once the connection has been idle for workerIdle, none
// waits.
func TestHandlerGoroutinesAreReused(t *testing.T) {
	var mu sync.Mutex
	ids := map[string]bool{}
	s := startServer(t, Config{}, func(st *Stream) {
		mu.Lock()
		ids[goroutineID()] = true
		mu.Unlock()
		echo(st)
	})
	c := dial(t, s)
	c.handshake()
	const waves, perWave = 25, 4
	id := uint32(1)
	for range waves {
		for range perWave {
			c.headers(id, true, "/")
			id += 2
		}
		for ended := 0; ended < perWave; {
			f := c.next()
			if f.Header().Flags.Has(http2.FlagDataEndStream) && f.Header().Type == http2.FrameData ||
				f.Header().Flags.Has(http2.FlagHeadersEndStream) && f.Header().Type == http2.FrameHeaders {
				ended++
			}
		}
	}
	mu.Lock()
	n := len(ids)
	mu.Unlock()
	if n > 2*perWave {
		t.Errorf("%d streams ran on %d goroutines; want them reused (at most %d)", waves*perWave, n, 2*perWave)
	}
	waiting := func() int {
		var b bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&b, 2)
		return strings.Count(b.String(), "h2.(*Conn).worker(")
	}
	if w := waiting(); w == 0 || w > maxIdleWorkers {
		t.Errorf("%d handler goroutines wait right after the streams, want 1..%d", w, maxIdleWorkers)
	}
	deadline := time.Now().Add(10 * time.Second)
	for waiting() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling the goroutine table, with a deadline
	}
	if w := waiting(); w > 0 {
		t.Errorf("%d handler goroutines still wait on a connection idle for %v", w, workerIdle)
	}
}
