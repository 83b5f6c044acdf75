package hostile

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// Slow clients: each must be cut off by one of the server's timeouts
// (Env.Timeout, configured short for the test) instead of holding a
// connection, a request or memory forever.

// slowloris sends a request head one field line at a time, every gap,
// for longer than the server's timeout.
func slowloris(gap time.Duration) func(context.Context, *Env) (string, error) {
	return func(ctx context.Context, env *Env) (string, error) {
		parts := []string{"GET /{T} HTTP/1.1\r\n" + host}
		for i := 0; time.Duration(i)*gap < env.Timeout+3*time.Second; i++ {
			parts = append(parts, fmt.Sprintf("X-Slow-%d: %d\r\n", i, i))
		}
		return h1{parts: parts, gap: gap, noProbe: true}.run(ctx, env)
	}
}

// idleAfter makes one request, then waits for the server to close the
// idle connection: "200 idle-close" or "200 idle-open".
func idleAfter(ctx context.Context, env *Env) (string, error) {
	nc, err := dial(ctx, env, env.HTTP, false)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	out, err := h1{parts: []string{"GET /{T} HTTP/1.1\r\n" + host + "\r\n"}, noProbe: true}.runOn(nc, env)
	if err != nil || !strings.HasSuffix(out, " open") {
		return out, err
	}
	nc.SetReadDeadline(time.Now().Add(slowWait(env)))
	_, err = nc.Read(make([]byte, 1))
	if readState(err) == "close" {
		return strings.TrimSuffix(out, " open") + " idle-close", nil
	}
	return strings.TrimSuffix(out, " open") + " idle-open", nil
}

// stalledBodies opens n connections that each announce a body of size
// bytes, send all but one byte and stall. It reports how the server ended
// them, and whether the proxy's heap stayed within bound while they were
// stalled (Env.Heap; "heap n/a" when the proxy is another process).
func stalledBodies(n, size int, bound uint64) func(context.Context, *Env) (string, error) {
	return func(ctx context.Context, env *Env) (string, error) {
		var before uint64
		if env.Heap != nil {
			before = env.Heap()
		}
		body := make([]byte, size-1)
		for i := range body {
			body[i] = 'a'
		}
		conns := make([]net.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < n; i++ {
			nc, err := dial(ctx, env, env.HTTP, false)
			if err != nil {
				return "", err
			}
			conns = append(conns, nc)
		}
		// Send concurrently; a write blocks once the proxy stops reading.
		var wg sync.WaitGroup
		var sent atomic.Int64
		for i, nc := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nc.SetWriteDeadline(time.Now().Add(env.Timeout + 2*time.Second))
				fmt.Fprintf(nc, "POST /{T}/%d HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n", i, expand(host, env), size)
				m, _ := nc.Write(body)
				sent.Add(int64(m))
			}()
		}
		// Measure once the bytes stop flowing (or the writes gave up).
		waitStill(&sent, env.Timeout)
		heap := heapVerdict(env, before, bound)
		wg.Wait()
		// How did the server end them? (One deadline for all.)
		deadline := time.Now().Add(slowWait(env))
		states := map[string]bool{}
		var smu sync.Mutex
		var rg sync.WaitGroup
		for _, nc := range conns {
			rg.Add(1)
			go func() {
				defer rg.Done()
				nc.SetReadDeadline(deadline)
				out := "- "
				if resp, err := http.ReadResponse(newReader(nc), nil); err == nil {
					out = fmt.Sprintf("%d ", resp.StatusCode)
					resp.Body.Close()
					_, err = nc.Read(make([]byte, 1))
					out += readState(err)
				} else {
					out += readState(err)
				}
				smu.Lock()
				states[out] = true
				smu.Unlock()
			}()
		}
		rg.Wait()
		var list []string
		for s := range states {
			list = append(list, s)
		}
		sort.Strings(list)
		return strings.Join(list, " | ") + "; " + heap, nil
	}
}

// stalledStreams sends n HTTP/2 request bodies of which the client
// produces perStream bytes and then stalls, on one h2c connection.
func stalledStreams(n, perStream int, bound uint64) func(context.Context, *Env) (string, error) {
	return func(ctx context.Context, env *Env) (string, error) {
		var before uint64
		if env.Heap != nil {
			before = env.Heap()
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// HTTP/2 with prior knowledge, all streams on one connection.
		tr := &http.Transport{Protocols: new(http.Protocols), DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, env, env.H2C, false)
		}}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		var sent atomic.Int64
		results := make(chan string, n)
		var streams sync.WaitGroup
		defer streams.Wait() // after cancel, every RoundTrip returns
		defer cancel()
		for i := 0; i < n; i++ {
			streams.Add(1)
			go func() {
				defer streams.Done()
				body := &stallingBody{left: perStream, sent: &sent, ctx: ctx, closed: make(chan struct{})}
				r, _ := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("http://a.example.com/%s/%d", env.Token, i), body)
				resp, err := tr.RoundTrip(r)
				if err != nil {
					// net/http's HTTP/2 stream errors read
					// "stream error: stream ID 3; PROTOCOL_ERROR…".
					if m := streamErr.FindStringSubmatch(err.Error()); m != nil {
						results <- "RST(" + m[1] + ")"
					} else {
						results <- "error"
					}
					return
				}
				resp.Body.Close()
				results <- fmt.Sprint(resp.StatusCode)
			}()
		}
		waitStill(&sent, env.Timeout)
		heap := heapVerdict(env, before, bound)
		// The server's stream idle timeout must end every stream within
		// slowWait of the last body byte the proxy took: measured from
		// that byte, not from when the bytes first looked still (on a
		// loaded machine a pause of the writers can look like a stall
		// while the proxy is still reading, and its idle timers restart).
		states := map[string]bool{}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		last, lastChange := sent.Load(), time.Now()
		for i := 0; i < n; {
			select {
			case s := <-results:
				states[s] = true
				i++
			case now := <-tick.C:
				if v := sent.Load(); v != last {
					last, lastChange = v, now
				}
				if now.Sub(lastChange) > slowWait(env) {
					states["hang"] = true
					i = n
				}
			}
		}
		cancel()
		var list []string
		for s := range states {
			list = append(list, s)
		}
		sort.Strings(list)
		return strings.Join(list, " | ") + "; " + heap, nil
	}
}

var streamErr = regexp.MustCompile(`stream error: stream ID \d+; ([A-Z_]+)`)

// stallingBody yields left bytes, then blocks until ctx ends or the
// transport closes it (when the server answered early).
type stallingBody struct {
	left   int
	sent   *atomic.Int64
	ctx    context.Context
	once   sync.Once
	closed chan struct{}
}

func (b *stallingBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		select {
		case <-b.ctx.Done():
		case <-b.closed:
		}
		return 0, io.ErrUnexpectedEOF
	}
	n := min(len(p), b.left)
	for i := range p[:n] {
		p[i] = 'a'
	}
	b.left -= n
	b.sent.Add(int64(n))
	return n, nil
}

// stalledThenRequest stalls a body until the server answers (408), then
// sends the rest of the body: bytes that are, exactly, a request. A
// server that answered but kept reading the connection must read them as
// the body they are, or close; parsing them as a request smuggles it.
func stalledThenRequest(ctx context.Context, env *Env) (string, error) {
	const length = 200
	sent := "0123456789"
	smuggled := expand("GET /{T}/after-timeout HTTP/1.1\r\nHost: a.example.com\r\nX-Pad: ", env)
	smuggled += strings.Repeat("p", length-len(sent)-len(smuggled)-4) + "\r\n\r\n"
	return h1{parts: []string{post(fmt.Sprintf("Content-Length: %d\r\n\r\n%s", length, sent))}, wait: slowWait,
		afterFirst: smuggled, reads: 2, noProbe: true}.run(ctx, env)
}

func slowCases() []*Case {
	anyClose := []string{"- close", "408 close"}
	cs := []*Case{
		{Name: "slow-loris-headers", Nginx: "- close", Category: "slow", What: "request head trickled one field every 250 ms", Want: anyClose,
			Run: slowloris(250 * time.Millisecond)},
		{Name: "slow-idle-no-request", Nginx: "- close", Category: "slow", What: "connection opened, nothing sent", Want: anyClose,
			Run: h1{wait: slowWait, noProbe: true}.run},
		{Name: "slow-partial-request-line", Nginx: "- close", Category: "slow", What: "half a request line, then nothing", Want: anyClose,
			Run: h1{parts: []string{"GET /{T} HT"}, wait: slowWait, noProbe: true}.run},
		{Name: "slow-idle-keepalive", Nginx: "200 idle-close, 1 fwd", Category: "slow", What: "idle keep-alive connection after a response", Want: []string{"200 idle-close, 1 fwd"},
			Run: idleAfter},
		{Name: "slow-body-stalled", Nginx: "- close", Category: "slow", What: "Content-Length: 100, 10 bytes sent, then nothing",
			Want: []string{"408 close", "- close", "408 close, 1 partial", "- close, 1 partial"},
			Run:  h1{parts: []string{post("Content-Length: 100\r\n\r\n0123456789")}, wait: slowWait, noProbe: true}.run},
		{Name: "slow-body-stalled-then-request", Nginx: "- close", What: "a stalled body's remaining bytes, sent after the timeout's answer, are a request",
			Want: []string{"408 close", "- close", "408 close, 1 partial", "- close, 1 partial"},
			Run:  stalledThenRequest},
		{Name: "slow-stalled-bodies-memory", Nginx: "- close; heap n/a", Category: "slow", What: "20 connections each send 1 MiB−1 of a 1 MiB body and stall (retries configured)",
			Want: []string{"408 close; heap ok, *", "- close; heap ok, *", "- close | 408 close; heap ok, *"},
			Run:  stalledBodies(20, 1<<20, 8<<20)},
		{Name: "slow-h2-idle", Nginx: "- goaway(NO_ERROR)", Category: "slow", What: "HTTP/2 connection without streams, idle", Want: []string{"- goaway(NO_ERROR)", "- close"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				c.waitClosed(slowWait(env))
				return 0, nil
			}}.run},
		{Name: "slow-h2-headers-stalled", Nginx: "- goaway(PROTOCOL_ERROR)", Category: "slow", What: "HEADERS without END_HEADERS, then nothing", Want: []string{"- goaway(NO_ERROR)", "- close", "- goaway(PROTOCOL_ERROR)"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				blk := c.block(expandFields(req("GET", "/{T}"), env))
				if err := c.write(func() error {
					return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:len(blk)/2]})
				}); err != nil {
					return 0, err
				}
				c.waitClosed(slowWait(env))
				return 0, nil
			}}.run},
		{Name: "slow-h2-body-stalled", Nginx: "RST(PROTOCOL_ERROR) goaway(NO_ERROR)", Category: "slow", What: "HTTP/2 POST, 5 bytes of DATA, then nothing",
			Want: []string{"408 keep", "408 keep, 1 partial", "RST(CANCEL) keep", "RST(CANCEL) keep, 1 partial", "RST(NO_ERROR) keep"},
			Run: h2case{steps: func(c *h2client, env *Env) (uint32, error) {
				if err := c.headers(1, expandFields(req("POST", "/{T}", "content-length", "100"), env), false); err != nil {
					return 1, err
				}
				if err := c.data(1, "hello", false); err != nil {
					return 1, err
				}
				c.waitEvent(1, "end", slowWait(env))
				return 1, nil
			}}.run},
		{Name: "slow-h2-stalled-streams-memory", Nginx: "RST(PROTOCOL_ERROR); heap n/a", Category: "slow", What: "50 HTTP/2 streams each send 256 KiB of a body and stall",
			Want: []string{"408; heap ok, *", "RST(CANCEL); heap ok, *", "408 | RST(CANCEL); heap ok, *", "RST(NO_ERROR); heap ok, *"},
			Run:  stalledStreams(32, 1<<20, 16<<20)},
		{Name: "slow-tls-handshake-stalled", Nginx: "close", Category: "slow", What: "3 bytes of a ClientHello, then nothing", Want: []string{"close"},
			Run: rawTLSWait(func(env *Env) time.Duration { return env.HandshakeTimeout + 3*time.Second }, bytesOf([]byte{0x16, 3, 1}))},
	}
	for _, c := range cs {
		c.Category = "slow"
		// Cases measuring the heap run alone (with the sequential
		// cases), not beside each other.
		c.Slow = !strings.HasSuffix(c.Name, "-memory")
	}
	return cs
}

// waitStill waits, within timeout, until the bytes counted by sent stop
// growing (the proxy stopped reading, or the writers gave up).
func waitStill(sent *atomic.Int64, timeout time.Duration) {
	var last int64 = -1
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		s := sent.Load()
		if s == last && s > 0 {
			return
		}
		last = s
	}
}

// heapVerdict says whether the proxy's heap grew less than bound since
// before ("heap ok"), or by how much.
func heapVerdict(env *Env, before uint64, bound uint64) string {
	if env.Heap == nil {
		return "heap n/a"
	}
	grew := int64(env.Heap()) - int64(before)
	if grew < int64(bound) {
		return "heap ok"
	}
	return fmt.Sprintf("heap +%d MiB", grew>>20)
}
