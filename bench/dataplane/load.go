package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A load run: workers send requests back to back (closed loop) until the
// deadline; every latency is kept, so percentiles are exact.
type loadSpec struct {
	proto    string // http1, https, h2, tcp
	addr     string
	tls      *tls.Config
	conns    int
	streams  int // h2: concurrent streams per connection
	warmup   time.Duration
	duration time.Duration
}

type loadResult struct {
	requests int64
	errors   int64
	elapsed  time.Duration
	p50, p99 time.Duration
	// firstError helps when a target is misconfigured.
	firstError string
}

func (r loadResult) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// recorder collects one worker's latencies once the warm-up is over.
type recorder struct {
	measuring *atomic.Bool
	lat       []time.Duration
	errs      int64
	firstErr  string
}

func (r *recorder) done(start time.Time, err error) {
	if !r.measuring.Load() {
		return
	}
	if err != nil {
		r.errs++
		if r.firstErr == "" {
			r.firstErr = err.Error()
		}
		return
	}
	r.lat = append(r.lat, time.Since(start))
}

// runLoad drives the target; measure is called with the measurement
// window's start and end so the caller can sample the proxy's CPU time.
func runLoad(ctx context.Context, s loadSpec, onStart, onEnd func()) (loadResult, error) {
	var measuring atomic.Bool
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := s.conns
	if s.proto == "h2" {
		workers = s.conns * s.streams
	}
	recs := make([]*recorder, workers)
	var wg sync.WaitGroup
	var h2clients []*http.Client
	if s.proto == "h2" {
		for i := 0; i < s.conns; i++ {
			t := &http.Transport{TLSClientConfig: s.tls.Clone(), Protocols: new(http.Protocols)}
			t.Protocols.SetHTTP2(true) // one multiplexed connection per client
			h2clients = append(h2clients, &http.Client{Transport: t})
		}
	}
	for i := range recs {
		recs[i] = &recorder{measuring: &measuring, lat: make([]time.Duration, 0, 1<<16)}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			switch s.proto {
			case "http1", "https":
				h1Worker(ctx, s, recs[i])
			case "h2":
				h2Worker(ctx, s, h2clients[i%len(h2clients)], recs[i])
			case "tcp":
				tcpWorker(ctx, s, recs[i])
			}
		}(i)
	}
	warm := time.NewTimer(s.warmup)
	select {
	case <-warm.C:
	case <-ctx.Done():
		return loadResult{}, ctx.Err()
	}
	onStart()
	measuring.Store(true)
	start := time.Now()
	t := time.NewTimer(s.duration)
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	measuring.Store(false)
	elapsed := time.Since(start)
	onEnd()
	cancel()
	wg.Wait()
	for _, c := range h2clients {
		c.CloseIdleConnections()
	}
	var all []time.Duration
	res := loadResult{elapsed: elapsed}
	for _, r := range recs {
		all = append(all, r.lat...)
		res.errors += r.errs
		if res.firstError == "" {
			res.firstError = r.firstErr
		}
	}
	res.requests = int64(len(all))
	if len(all) == 0 {
		return res, fmt.Errorf("no request succeeded: %s", res.firstError)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	res.p50 = all[len(all)/2]
	res.p99 = all[len(all)*99/100]
	return res, nil
}

func dial(ctx context.Context, s loadSpec) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	if s.proto == "https" {
		cfg := s.tls.Clone()
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	}
	return c, nil
}

var request = []byte("GET /bench HTTP/1.1\r\nHost: bench.example.com\r\nUser-Agent: portico-bench\r\nAccept: */*\r\n\r\n")

// h1Worker keeps one connection busy: a request, its response, again.
// The client is minimal so that its own cost stays small and the same for
// every target.
func h1Worker(ctx context.Context, s loadSpec, rec *recorder) {
	var cur connHolder
	defer cur.set(nil)
	stop := context.AfterFunc(ctx, cur.interrupt)
	defer stop()
	var br *bufio.Reader
	for ctx.Err() == nil {
		c := cur.get()
		if c == nil {
			var err error
			if c, err = dial(ctx, s); err != nil {
				rec.done(time.Now(), err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			cur.set(c)
			if ctx.Err() != nil {
				return
			}
			br = bufio.NewReaderSize(c, 16<<10)
		}
		start := time.Now()
		keep, err := roundTrip(c, br)
		if ctx.Err() != nil {
			return
		}
		rec.done(start, err)
		if err != nil || !keep {
			cur.set(nil)
		}
	}
}

// connHolder is a worker's current connection, which the stop function
// interrupts from another goroutine.
type connHolder struct {
	mu sync.Mutex
	c  net.Conn
}

func (h *connHolder) get() net.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.c
}

// set replaces (and closes) the current connection.
func (h *connHolder) set(c net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.c != nil && h.c != c {
		h.c.Close()
	}
	h.c = c
}

func (h *connHolder) interrupt() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.c != nil {
		h.c.SetDeadline(time.Now())
	}
}

var errStatus = errors.New("non-200 response")

func roundTrip(c net.Conn, br *bufio.Reader) (keep bool, err error) {
	if _, err := c.Write(request); err != nil {
		return false, err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	if len(line) < 12 || !bytes.Equal(line[9:12], []byte("200")) {
		return false, fmt.Errorf("%w: %q", errStatus, bytes.TrimSpace(line))
	}
	length, chunked, keep := -1, false, true
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if len(h) <= 2 {
			break
		}
		name, value, _ := bytes.Cut(h, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "content-length"):
			length, _ = strconv.Atoi(string(value))
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = asciiEqualFold(value, "chunked")
		case asciiEqualFold(name, "connection"):
			keep = !asciiEqualFold(value, "close")
		}
	}
	switch {
	case chunked:
		for {
			l, err := br.ReadSlice('\n')
			if err != nil {
				return false, err
			}
			n, err := strconv.ParseInt(string(bytes.TrimSpace(l)), 16, 64)
			if err != nil {
				return false, err
			}
			if _, err := br.Discard(int(n) + 2); err != nil {
				return false, err
			}
			if n == 0 {
				return keep, nil
			}
		}
	case length >= 0:
		_, err := br.Discard(length)
		return keep, err
	}
	return false, errors.New("response without length")
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func h2Worker(ctx context.Context, s loadSpec, client *http.Client, rec *recorder) {
	url := "https://" + s.addr + "/bench"
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		req.Host = "bench.example.com"
		start := time.Now()
		resp, err := client.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("%w: %d", errStatus, resp.StatusCode)
			}
		}
		if ctx.Err() != nil {
			return
		}
		rec.done(start, err)
	}
}

// tcpWorker: 64-byte messages echoed back through the proxy; one round
// trip counts as one request.
func tcpWorker(ctx context.Context, s loadSpec, rec *recorder) {
	msg := bytes.Repeat([]byte("x"), 63)
	msg = append(msg, '\n')
	buf := make([]byte, len(msg))
	var cur connHolder
	defer cur.set(nil)
	stop := context.AfterFunc(ctx, cur.interrupt)
	defer stop()
	for ctx.Err() == nil {
		c := cur.get()
		if c == nil {
			var err error
			if c, err = dial(ctx, s); err != nil {
				rec.done(time.Now(), err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			cur.set(c)
		}
		start := time.Now()
		_, err := c.Write(msg)
		if err == nil {
			_, err = io.ReadFull(c, buf)
		}
		if ctx.Err() != nil {
			return
		}
		rec.done(start, err)
		if err != nil {
			cur.set(nil)
		}
	}
}
