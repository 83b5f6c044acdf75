package testenv

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
	"testing"
	"time"
)

// Recorder is an HTTP/1.1 backend that records exactly what it received:
// the raw bytes of every connection, and every request as a typical
// backend would frame it (Transfer-Encoding chunked, else Content-Length,
// else no body). A proxy that forwards ambiguous framing, or a body the
// backend reads differently than the proxy meant, shows up as requests
// nobody sent — which is what request smuggling looks like from behind
// the proxy. It answers every request "200 OK" with a short body naming
// the request, after reading the request's body.
//
// Its parser is deliberately lenient (bare LF, odd whitespace, control
// bytes are recorded, not rejected) so that whatever a proxy forwards is
// seen; the request's Flaws say what a strict backend would have refused.
type Recorder struct {
	Addr string
	Port uint32

	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []*recordedConn
	reqs  []RecordedRequest
}

// RecordedRequest is one request as the recorder framed it.
type RecordedRequest struct {
	Conn   int    // index of the backend connection it came on
	Seq    int    // position on that connection (0: first request)
	Head   []byte // the request line and header lines, verbatim
	Method string
	Target string
	Proto  string
	// Header holds the fields in order, names as sent (not canonicalised).
	Header [][2]string
	// Body holds the first 16 KiB of the body; BodyLen counts all of it.
	Body    []byte
	BodyLen int64
	// Complete is false while the body is still being read (or when the
	// connection ended first).
	Complete bool
	// Flaws lists what a strict HTTP/1.1 parser would refuse: control
	// bytes in the target or a field, both Content-Length and
	// Transfer-Encoding, several Content-Length fields, obs-fold, …
	Flaws []string
}

// Get returns the first value of a header (case-insensitive name).
func (r *RecordedRequest) Get(name string) string {
	for _, f := range r.Header {
		if strings.EqualFold(f[0], name) {
			return f[1]
		}
	}
	return ""
}

// Values returns every value of a header.
func (r *RecordedRequest) Values(name string) []string {
	var out []string
	for _, f := range r.Header {
		if strings.EqualFold(f[0], name) {
			out = append(out, f[1])
		}
	}
	return out
}

type recordedConn struct {
	nc  net.Conn
	mu  sync.Mutex
	raw []byte
}

// keptRaw bounds the raw bytes kept per connection: enough for every
// request head a test sends, not the megabytes of an attack's bodies
// (tests measuring the proxy's memory share the process).
const keptRaw = 16 << 10

func (c *recordedConn) Read(p []byte) (int, error) {
	n, err := c.nc.Read(p)
	if n > 0 {
		c.mu.Lock()
		if room := keptRaw - len(c.raw); room > 0 {
			c.raw = append(c.raw, p[:min(n, room)]...)
		}
		c.mu.Unlock()
	}
	return n, err
}

// NewRecorder listens on addr ("" picks a free loopback port). Close stops
// it.
func NewRecorder(addr string) (*Recorder, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("recorder: listening on %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Recorder{ln: ln, Addr: ln.Addr().String(), Port: uint32(ln.Addr().(*net.TCPAddr).Port), ctx: ctx, cancel: cancel}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// StartRecorder runs a Recorder for the duration of a test.
func StartRecorder(t testing.TB) *Recorder {
	t.Helper()
	r, err := NewRecorder("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// Close stops accepting, closes every connection and waits for the
// connection goroutines.
func (r *Recorder) Close() {
	r.cancel()
	r.ln.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.nc.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Recorder) accept() {
	defer r.wg.Done()
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			return
		}
		c := &recordedConn{nc: nc}
		r.mu.Lock()
		if r.ctx.Err() != nil {
			r.mu.Unlock()
			nc.Close()
			return
		}
		id := len(r.conns)
		r.conns = append(r.conns, c)
		r.wg.Add(1)
		r.mu.Unlock()
		go r.serve(id, c)
	}
}

// Requests returns a copy of every request recorded so far.
func (r *Recorder) Requests() []RecordedRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]RecordedRequest, len(r.reqs))
	for i, q := range r.reqs {
		q.Header = append([][2]string(nil), q.Header...)
		q.Body = append([]byte(nil), q.Body...)
		q.Flaws = append([]string(nil), q.Flaws...)
		out[i] = q
	}
	return out
}

// Matching returns the recorded requests whose head contains token (a
// token inside a body that was forwarded as a body is not a request).
func (r *Recorder) Matching(token string) []RecordedRequest {
	var out []RecordedRequest
	for _, q := range r.Requests() {
		if bytes.Contains(q.Head, []byte(token)) {
			out = append(out, q)
		}
	}
	return out
}

// RawContains reports whether token appears anywhere in the bytes any
// backend connection received (framed as a request or not; the first
// 16 KiB of each connection).
func (r *Recorder) RawContains(token string) bool {
	r.mu.Lock()
	conns := append([]*recordedConn(nil), r.conns...)
	r.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		found := bytes.Contains(c.raw, []byte(token))
		c.mu.Unlock()
		if found {
			return true
		}
	}
	return false
}

// Raw returns the bytes received on every connection whose bytes contain
// token (all connections when token is empty), one entry per connection.
func (r *Recorder) Raw(token string) [][]byte {
	r.mu.Lock()
	conns := append([]*recordedConn(nil), r.conns...)
	r.mu.Unlock()
	var out [][]byte
	for _, c := range conns {
		c.mu.Lock()
		if token == "" || bytes.Contains(c.raw, []byte(token)) {
			out = append(out, append([]byte(nil), c.raw...))
		}
		c.mu.Unlock()
	}
	return out
}

// Conns reports how many connections the recorder accepted.
func (r *Recorder) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// keptBody bounds how much of one request body the recorder keeps (it
// reads, and counts, all of it): attack tests send megabytes.
const keptBody = 16 << 10

func (r *Recorder) serve(id int, c *recordedConn) {
	defer r.wg.Done()
	defer c.nc.Close()
	br := bufio.NewReaderSize(c, 16<<10)
	for seq := 0; ; seq++ {
		head, err := readHead(br)
		if err != nil {
			return
		}
		req := parseRecorded(head)
		req.Conn, req.Seq = id, seq
		r.mu.Lock()
		idx := len(r.reqs)
		r.reqs = append(r.reqs, req)
		r.mu.Unlock()

		if strings.EqualFold(req.Get("expect"), "100-continue") {
			if _, err := io.WriteString(c.nc, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
				return
			}
		}
		var sink bodySink
		err = readBody(br, &req, &sink)
		r.mu.Lock()
		r.reqs[idx].Body, r.reqs[idx].BodyLen = sink.kept, sink.n
		r.reqs[idx].Flaws = req.Flaws
		r.reqs[idx].Complete = err == nil
		r.mu.Unlock()
		if err != nil {
			return
		}
		msg := fmt.Sprintf("recorded %s %q on connection %d\n", req.Method, req.Target, id)
		closeAfter := strings.Contains(strings.ToLower(req.Get("connection")), "close") || req.Proto == "HTTP/1.0"
		resp := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(msg)) + "\r\n"
		if closeAfter {
			resp += "Connection: close\r\n"
		}
		if _, err := io.WriteString(c.nc, resp+"\r\n"+msg); err != nil || closeAfter {
			return
		}
	}
}

// readHead reads up to the empty line ending a request head (bare LF
// accepted), skipping empty lines before the request line.
func readHead(br *bufio.Reader) ([]byte, error) {
	var head []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		if len(head) == 0 && (string(line) == "\r\n" || string(line) == "\n") {
			continue
		}
		head = append(head, line...)
		if len(head) > 1<<20 {
			return nil, errors.New("request head over 1 MiB")
		}
		if err == nil && (string(line) == "\r\n" || string(line) == "\n") {
			return head, nil
		}
	}
}

func parseRecorded(head []byte) RecordedRequest {
	req := RecordedRequest{Head: head}
	lines := strings.Split(strings.TrimRight(string(head), "\r\n"), "\n")
	for i := range lines {
		if strings.HasSuffix(lines[i], "\r") {
			lines[i] = lines[i][:len(lines[i])-1]
		} else if i < len(lines)-1 || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			req.flaw("bare LF ending a line")
		}
	}
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 {
		req.flaw(fmt.Sprintf("request line with %d parts", len(parts)))
	}
	if len(parts) > 0 {
		req.Method = parts[0]
	}
	if len(parts) > 1 {
		req.Target = parts[1]
	}
	if len(parts) > 2 {
		req.Proto = parts[len(parts)-1]
	}
	if hasCTL(lines[0]) {
		req.flaw("control byte in the request line")
	}
	for _, l := range lines[1:] {
		if l == "" {
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			req.flaw("obs-fold")
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			req.flaw(fmt.Sprintf("malformed field line %q", l))
		}
		value = strings.Trim(value, " \t")
		if hasCTL(value) {
			req.flaw(fmt.Sprintf("control byte in field %q", name))
		}
		req.Header = append(req.Header, [2]string{name, value})
	}
	if len(req.Values("content-length")) > 1 {
		req.flaw("several content-length fields")
	}
	if len(req.Values("transfer-encoding")) > 0 && len(req.Values("content-length")) > 0 {
		req.flaw("both transfer-encoding and content-length")
	}
	if len(req.Values("host")) != 1 {
		req.flaw(fmt.Sprintf("%d host fields", len(req.Values("host"))))
	}
	return req
}

func (r *RecordedRequest) flaw(s string) { r.Flaws = append(r.Flaws, s) }

// hasCTL reports control bytes other than horizontal tab (and DEL).
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

// bodySink keeps the first keptBody bytes of a body and counts the rest.
type bodySink struct {
	kept []byte
	n    int64
}

func (b *bodySink) Write(p []byte) (int, error) {
	if room := keptBody - len(b.kept); room > 0 {
		b.kept = append(b.kept, p[:min(room, len(p))]...)
	}
	b.n += int64(len(p))
	return len(p), nil
}

// readBody frames a body as a typical backend does: chunked when the last
// transfer coding is chunked, else Content-Length, else none.
func readBody(br *bufio.Reader, req *RecordedRequest, sink *bodySink) error {
	if te := req.Values("transfer-encoding"); len(te) > 0 {
		codings := strings.Split(strings.Join(te, ","), ",")
		if strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked") {
			return readChunked(br, sink)
		}
		req.flaw("transfer-encoding without final chunked")
	}
	cl := req.Values("content-length")
	if len(cl) == 0 {
		return nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(cl[0]), 10, 64)
	if err != nil || n < 0 {
		req.flaw(fmt.Sprintf("invalid content-length %q", cl[0]))
		return nil
	}
	got, err := io.CopyN(sink, br, n)
	if err == nil && got < n {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func readChunked(br *bufio.Reader, sink *bodySink) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("chunk size line: %w", err)
		}
		size := strings.TrimRight(string(line), "\r\n")
		if i := strings.IndexByte(size, ';'); i >= 0 {
			size = size[:i]
		}
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("bad chunk size line %q", line)
		}
		if n == 0 {
			for { // trailers
				t, err := br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if string(t) == "\r\n" || string(t) == "\n" {
					return nil
				}
			}
		}
		if _, err := io.CopyN(sink, br, n); err != nil {
			return err
		}
		if _, err := br.ReadSlice('\n'); err != nil {
			return err
		}
	}
}

// WaitComplete polls until every recorded request matching token has its
// body complete, or the deadline passes; it returns the matching requests.
func (r *Recorder) WaitComplete(token string, within time.Duration) []RecordedRequest {
	deadline := time.Now().Add(within)
	for {
		reqs := r.Matching(token)
		done := true
		for _, q := range reqs {
			done = done && q.Complete
		}
		if done || time.Now().After(deadline) {
			return reqs
		}
		time.Sleep(5 * time.Millisecond)
	}
}
