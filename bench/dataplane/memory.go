package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/portico-gateway/portico/bench/internal/proc"
)

// settle is how long the proxies get, after the last connection or
// stream opened, before their RSS is read: a proxy allocates some of a
// connection's state after answering it, and Portico lets an idle
// connection's read buffer go after a second.
const settle = 2 * time.Second

// measureMemory measures, target by target, the proxy's RSS growth per
// idle keep-alive HTTP/1.1 connection (each has served one request) and
// per active HTTP/2 stream (a POST whose body never comes, so the stream
// and whatever the proxy holds for it upstream stay open). Each is
// measured once, on a proxy process that has served nothing yet: the
// target is restarted between the two (memory freed by the first
// measurement would absorb part of the second).
func measureMemory(ctx context.Context, running []*target, tlsCfg *tls.Config, idle, active int, restart func(*target) (*target, error)) (string, error) {
	type result struct {
		name                  string
		idlePer, streamPer    float64 // bytes
		idleOK, streamsOK     int
		idleNote, streamsNote string
	}
	var results []result
	for i, t := range running {
		if t.name == "direct" {
			continue
		}
		r := result{name: t.name}
		if addr, ok := t.ports["h2"]; ok && active > 0 {
			before := proc.RSS(t.pids())
			open, closeAll, err := openStreams(ctx, addr, tlsCfg, active)
			if err != nil {
				r.streamsNote = err.Error()
			}
			waitCtx(ctx, settle)
			after := proc.RSS(t.pids())
			r.streamsOK = open()
			if r.streamsOK > 0 {
				r.streamPer = float64(int64(after)-int64(before)) / float64(r.streamsOK)
			}
			closeAll()
			fmt.Fprintf(os.Stderr, "memory  %-8s %d active h2 streams: RSS %.1f → %.1f MiB, %.1f KiB each\n", t.name, r.streamsOK, mib(before), mib(after), r.streamPer/1024)
		}
		if r.streamsOK > 0 && idle > 0 {
			// A fresh process for the idle connections: memory the
			// streams freed would otherwise absorb part of theirs
			// (nginx's above all, which then showed 0.0 KiB).
			nt, err := restart(t)
			if err != nil {
				return "", fmt.Errorf("restarting %s after the streams: %w", t.name, err)
			}
			running[i], t = nt, nt
		}
		if addr, ok := t.ports["http1"]; ok && idle > 0 {
			before := proc.RSS(t.pids())
			conns, err := openIdle(ctx, addr, idle)
			if err != nil {
				r.idleNote = err.Error()
			}
			waitCtx(ctx, settle)
			after := proc.RSS(t.pids())
			r.idleOK = len(conns)
			if len(conns) > 0 {
				r.idlePer = float64(int64(after)-int64(before)) / float64(len(conns))
			}
			for _, c := range conns {
				c.Close()
			}
			fmt.Fprintf(os.Stderr, "memory  %-8s %d idle connections: RSS %.1f → %.1f MiB, %.1f KiB each\n", t.name, len(conns), mib(before), mib(after), r.idlePer/1024)
		}
		results = append(results, r)
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
	var nginxIdle, nginxStream float64
	for _, r := range results {
		if r.name == "nginx" {
			nginxIdle, nginxStream = r.idlePer, r.streamPer
		}
	}
	ratio := func(x, base float64) string {
		// nginx allocates its connection structures for all of
		// worker_connections at start: an idle connection adds next to
		// nothing to its RSS, and a ratio to that would mean nothing.
		if base < 256 || x <= 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f×", x/base)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Memory: RSS growth of the proxy (all its processes) per idle HTTP/1.1 keep-alive connection (%d opened, each after one request) and per active HTTP/2 stream (%d POSTs over TLS, 100 a connection, bodies never sent), each measured on a fresh process before any load.\n\n", idle, active)
	fmt.Fprintln(&b, "| Target | idle connections held | KiB per idle connection | vs nginx | active h2 streams held | KiB per active stream | vs nginx |")
	fmt.Fprintln(&b, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range results {
		note := func(s string) string {
			if s == "" {
				return ""
			}
			return " (" + s + ")"
		}
		fmt.Fprintf(&b, "| %s | %d%s | %.1f | %s | %d%s | %.1f | %s |\n", r.name, r.idleOK, note(r.idleNote), r.idlePer/1024, ratio(r.idlePer, nginxIdle),
			r.streamsOK, note(r.streamsNote), r.streamPer/1024, ratio(r.streamPer, nginxStream))
	}
	return b.String(), nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func waitCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// openIdle opens n HTTP/1.1 connections, each answering one request, and
// leaves them open. It returns those that got their answer.
func openIdle(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	var mu sync.Mutex
	var conns []net.Conn
	var firstErr error
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				d := net.Dialer{Timeout: 5 * time.Second}
				c, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					c.SetDeadline(time.Now().Add(10 * time.Second))
					_, err = roundTrip(c, bufio.NewReaderSize(c, 512))
					c.SetDeadline(time.Time{})
					if err != nil {
						c.Close()
					}
				}
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		firstErr = fmt.Errorf("%d failed, first: %v", n-len(conns), firstErr)
	}
	return conns, firstErr
}

// openStreams opens n HTTP/2 streams over TLS, 100 a connection: each a
// POST declaring a 1 KiB body that never comes. open reports how many
// are still open (not refused or reset); closeAll ends them.
func openStreams(ctx context.Context, addr string, tlsCfg *tls.Config, n int) (open func() int, closeAll func(), err error) {
	const perConn = 100
	var refused atomic.Int64
	var conns []net.Conn
	var readers sync.WaitGroup
	closeAll = func() {
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "bench.example.com"}, {":path", "/hold"}, {"content-length", "1024"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	sent := 0
	for sent < n && ctx.Err() == nil {
		cfg := tlsCfg.Clone()
		cfg.NextProtos = []string{"h2"}
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
		nc, derr := d.DialContext(ctx, "tcp", addr)
		if derr != nil {
			err = derr
			break
		}
		conns = append(conns, nc)
		var wbuf bytes.Buffer
		fr := http2.NewFramer(&wbuf, nil)
		wbuf.WriteString(http2.ClientPreface)
		fr.WriteSettings()
		fr.WriteSettingsAck() // whatever the server's SETTINGS say, accepted
		k := min(perConn, n-sent)
		for i := range k {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true})
		}
		sent += k
		if _, werr := nc.Write(wbuf.Bytes()); werr != nil {
			err = werr
			break
		}
		readers.Add(1)
		go func() {
			// Reads (and answers nothing but counts) until the connection
			// is closed: a response or a reset ends a stream early.
			defer readers.Done()
			rf := http2.NewFramer(nil, nc)
			for {
				f, rerr := rf.ReadFrame()
				if rerr != nil {
					return
				}
				switch f := f.(type) {
				case *http2.RSTStreamFrame:
					refused.Add(1)
				case *http2.HeadersFrame:
					refused.Add(1) // answered (an error) rather than held
				case *http2.GoAwayFrame:
					refused.Add(int64(k) - int64(f.LastStreamID+1)/2)
				}
			}
		}()
	}
	return func() int { return sent - int(refused.Load()) }, closeAll, err
}
