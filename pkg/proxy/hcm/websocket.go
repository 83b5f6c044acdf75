package hcm

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// WebSocket upgrades, as Envoy's upgrade_configs [{upgrade_type:
// websocket}] (which istiod sets on every gateway connection manager):
// an HTTP/1.1 GET with "Connection: upgrade" and "Upgrade: websocket" is
// routed, authorized and forwarded like any request, with the upgrade
// headers kept, on an upstream connection of its own. If the upstream
// answers 101 the proxy answers 101 too and from then on copies bytes
// both ways until either side closes, or nothing moves for the stream
// idle timeout. Any other answer is forwarded as an ordinary response.
// Other upgrades (h2c, anything else) are not forwarded: their headers
// are dropped as hop-by-hop, as before.

// hijacker is a response writer whose connection can be taken over (the
// HTTP/1.1 one; HTTP/2 upgrades need extended CONNECT, not implemented).
type hijacker interface {
	hijack() (net.Conn, *bufio.Reader)
}

// isWebSocketUpgrade reports whether req asks to become a WebSocket. It
// reads the headers as received, before the hop-by-hop ones are removed.
func isWebSocketUpgrade(req *httpx.Request) bool {
	if req.Method != "GET" || req.Proto != "HTTP/1.1" || req.ContentLength != 0 {
		return false
	}
	up, ok := req.Header.Lookup("upgrade")
	if !ok || !strings.EqualFold(strings.TrimSpace(up), "websocket") {
		return false
	}
	for _, f := range req.Header.Fields {
		if f.Name != "connection" {
			continue
		}
		for _, tok := range strings.Split(f.Value, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// upgradeFields are the hop-by-hop fields an upgrade carries upstream
// (and a 101 downstream).
var upgradeFields = []httpx.Field{{Name: "connection", Value: "upgrade"}, {Name: "upgrade", Value: "websocket"}}

// tunnel forwards a WebSocket upgrade and, once the upstream switches
// protocols, relays the connection. It returns false: the downstream
// connection is either the tunnel's (and over) or, after a refused
// upgrade, served on as usual by the caller's keep decision.
func (x *exchange) tunnel(cluster *upstream.Cluster, wc *router.WeightedCluster, route *router.Route, hash uint64, hasHash bool) bool {
	host := cluster.Pick(upstream.PickOptions{Hash: hash, HasHash: hasHash})
	if host == nil {
		x.flags |= accesslog.NoHealthyUpstream
		return x.reply(503, bodyNoHealthy, nil)
	}
	x.upstream, x.host = host.Addr, host
	cluster.Stats.RqTotal.Inc()
	host.Active.Add(1)
	defer host.Active.Add(-1)
	ctx := x.ctx
	if route.Timeout > 0 {
		// The route timeout bounds the handshake only, as in Envoy: an
		// upgraded stream lives on until idle.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, route.Timeout)
		defer cancel()
	}
	conn, err := cluster.Get(ctx, host)
	if err != nil {
		if errors.Is(err, upstream.ErrOverflow) {
			x.flags |= accesslog.UpstreamOverflow
			return x.reply(503, bodyOverflow, nil)
		}
		cluster.Report(host, upstream.LocalFailure, 0)
		return x.failReply(cluster, failConnect)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	req := x.req
	hdr := req.Header
	hdr.Fields = append(append([]httpx.Field(nil), req.Header.Fields...), upgradeFields...)
	httpx.WriteRequestHead(conn.BW, req.Method, req.Target, req.Authority, &hdr, 0)
	if err := conn.BW.Flush(); err != nil {
		cluster.Release(conn, false)
		cluster.Report(host, upstream.LocalFailure, 0)
		return x.failReply(cluster, failReset)
	}
	resp := &httpx.Response{}
	var scratch [2048]byte
	if err := httpx.ReadResponse(conn.BR, req.Method, resp, scratch[:0]); err != nil {
		cluster.Release(conn, false)
		cluster.Report(host, upstream.LocalFailure, 0)
		switch {
		case isTimeout(err):
			return x.failReply(cluster, failTimeout)
		case errors.Is(err, httpx.ErrMalformed) || errors.Is(err, httpx.ErrHeaderTooLarge):
			return x.failReply(cluster, failProtocol)
		}
		return x.failReply(cluster, failReset)
	}
	cluster.Stats.Response(resp.Status)
	a := attempt{conn: conn, resp: resp, first: time.Now()}
	if resp.Status != 101 {
		// Refused: an ordinary response (its hop-by-hop headers go).
		cluster.Report(host, upstream.Success, resp.Status)
		return x.respond(cluster, host, &a, wc, route)
	}
	hj, ok := x.w.(hijacker)
	if !ok {
		cluster.Release(conn, false)
		return x.failReply(cluster, failProtocol)
	}
	cluster.Report(host, upstream.Success, 101)
	rh := &resp.Header
	httpx.RemoveHopByHop(rh)
	x.decorateResponse(rh, wc, route, &a)
	rh.Fields = append(rh.Fields, upgradeFields...)
	x.status = 101
	cluster.Stats.RqTime.Observe(time.Since(x.start))
	x.w.WriteHeader(101, rh, 0, true)
	if err := x.w.Flush(); err != nil {
		cluster.Release(conn, false)
		x.flags |= accesslog.DownstreamConnectionTermination
		return false
	}
	down, dbr := hj.hijack()
	conn.SetDeadline(time.Time{})
	in, out := relay(x.ctx, down, dbr, conn.NC, conn.BR, x.h.cfg.StreamIdleTimeout)
	x.bytesIn += in
	x.tunneled = out
	cluster.Release(conn, false)
	return false
}

// relay copies bytes both ways between the downstream and upstream
// connections (first what each side's reader already buffered) until
// both directions end, either side fails, ctx ends, or nothing moves in
// either direction for idle (0: no limit). It returns the bytes copied
// downstream → upstream and upstream → downstream.
func relay(ctx context.Context, down net.Conn, dbr *bufio.Reader, up net.Conn, ubr *bufio.Reader, idle time.Duration) (in, out int64) {
	// The connection manager's deadlines (request head, stream idle) no
	// longer apply: the idle timer below does.
	down.SetDeadline(time.Time{})
	var mu sync.Mutex
	last := time.Now()
	touch := func() {
		mu.Lock()
		last = time.Now()
		mu.Unlock()
	}
	stop := make(chan struct{})
	var once sync.Once
	abort := func() {
		once.Do(func() {
			close(stop)
			down.SetDeadline(time.Now())
			up.SetDeadline(time.Now())
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); in = copyHalf(up, down, dbr, touch, abort) }()
	go func() { defer wg.Done(); out = copyHalf(down, up, ubr, touch, abort) }()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var tick <-chan time.Time
	if idle > 0 {
		t := time.NewTicker(min(idle/2+time.Millisecond, time.Second))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-done:
			return in, out
		case <-ctx.Done():
			abort()
		case <-stop:
			// A direction failed: the other is unblocked by the deadline.
		case now := <-tick:
			mu.Lock()
			quiet := now.Sub(last)
			mu.Unlock()
			if quiet > idle {
				abort()
			}
		}
		if ctx.Err() != nil || isClosed(stop) {
			<-done
			return in, out
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// copyHalf copies src (through br, which holds what was read ahead) to
// dst, then half-closes dst so the peer sees the end while the other
// direction goes on. A failure ends both directions.
func copyHalf(dst net.Conn, src net.Conn, br *bufio.Reader, touch, abort func()) int64 {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var total int64
	var r io.Reader = src
	if br != nil && br.Buffered() > 0 {
		r = io.MultiReader(io.LimitReader(br, int64(br.Buffered())), src)
	}
	for {
		n, err := r.Read(buf)
		if n > 0 {
			touch()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				abort()
				return total
			}
			total += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			abort()
			return total
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		abort()
	}
	return total
}
