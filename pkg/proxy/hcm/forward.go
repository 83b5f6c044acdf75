package hcm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/overload"
	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/tracing"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// Envoy's local reply bodies.
const (
	bodyNoHealthy   = "no healthy upstream"
	bodyOverflow    = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
	bodyConnectFail = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyReset       = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	bodyProtocol    = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
	bodyTimeout     = "upstream request timeout"
	bodyNoCluster   = "cluster not found"
)

type failKind int

const (
	failNone failKind = iota
	failConnect
	failOverflow
	failTimeout // per-try or global
	failReset   // connection ended before a response
	failProtocol
	failCancelled // the client went away
	failEjected   // the host was ejected while the request waited for it
	// failDownstream: the client's body could not be read (its error is
	// a *downstreamError).
	failDownstream
)

// attempt is the outcome of one try.
type attempt struct {
	fail  failKind
	err   error
	conn  *upstream.Conn
	resp  *httpx.Response
	h2    *httpx.Response // an HTTP/2 upstream's response; Body is an io.ReadCloser
	first time.Time       // first response byte
}

func pickWeighted(r *router.Route) *router.WeightedCluster {
	if len(r.Clusters) == 1 {
		return &r.Clusters[0]
	}
	n := rand.Uint32N(r.TotalWeight)
	for i := range r.Clusters {
		if n < r.Clusters[i].Weight {
			return &r.Clusters[i]
		}
		n -= r.Clusters[i].Weight
	}
	return &r.Clusters[len(r.Clusters)-1]
}

// bodySource replays a buffered request body or streams it once.
type bodySource struct {
	buffered []byte
	replay   bool
	stream   io.Reader
	length   int64 // -1 unknown
	used     bool
	// ref accounts the buffered bytes against the global budget until the
	// request and its mirrors are done with them.
	ref *bufferRef
	// err is why the body could not be read (prepareBody failed).
	err error
}

func (b *bodySource) reader() (io.Reader, bool) {
	if b.replay {
		if len(b.buffered) == 0 {
			return nil, true
		}
		return bytes.NewReader(b.buffered), true
	}
	if b.used {
		return nil, false
	}
	b.used = true
	return b.stream, true
}

func (b *bodySource) release() { b.ref.release() }

// bufferRef counts the holders of a buffered body; the last one returns
// its bytes to the overload manager's budget.
type bufferRef struct {
	refs atomic.Int32
	n    int64
	ov   *overload.Manager
}

func (r *bufferRef) hold() {
	if r != nil {
		r.refs.Add(1)
	}
}

func (r *bufferRef) release() {
	if r != nil && r.refs.Add(-1) == 0 {
		r.ov.ReleaseBuffer(r.n)
	}
}

// detachableBody hands a request body to a reader the exchange does not
// control (the HTTP/2 transport writes request bodies from its own
// goroutine, and may still be reading when the response is complete) and
// takes it back: after detach, no read is in progress and none will be.
type detachableBody struct {
	mu       sync.Mutex
	r        io.Reader
	abort    func()
	detached bool
}

var errBodyDetached = errors.New("request body no longer available")

func (d *detachableBody) Read(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.detached {
		return 0, errBodyDetached
	}
	return d.r.Read(p)
}

// detach waits for a read in progress to end, interrupting it when it is
// blocked, and fails every later read. It reports whether a read had to be
// interrupted: the connection it reads from is then unusable.
func (d *detachableBody) detach() (interrupted bool) {
	if !d.mu.TryLock() {
		if d.abort != nil {
			d.abort()
		}
		d.mu.Lock()
		interrupted = true
	}
	d.detached = true
	d.mu.Unlock()
	return interrupted
}

func (x *exchange) forward(route *router.Route) (keep bool) {
	h, req := x.h, x.req
	wc := pickWeighted(route)
	x.applyRequestOps(wc)
	req.Target = route.RewriteTarget(req.Target)
	if h.cfg.StripAnyHostPort {
		req.Authority = router.StripPort(req.Authority)
	}
	if route.Rewrite.Host != "" {
		req.Authority = route.Rewrite.Host
	}
	// Route header operations may not set connection-specific headers.
	httpx.RemoveFixedHopByHop(&req.Header)
	cluster := h.env.Clusters.Get(wc.Name)
	x.cluster = cluster
	if cluster == nil {
		h.st.noCluster.Inc()
		x.flags |= accesslog.NoClusterFound
		code := route.ClusterNotFoundStatus
		if code == 0 {
			code = 503
		}
		return x.reply(code, bodyNoCluster, nil)
	}
	hash, hasHash := x.hashKey(route)
	var ok bool
	x.body, ok = x.prepareBody(route)
	body := &x.body
	defer body.release()
	defer func() {
		// Take the body back from whatever may still read it (an HTTP/2
		// transport streaming it upstream) before the connection reads on.
		if x.detach != nil && x.detach.detach() {
			keep = false
		}
	}()
	if !ok {
		return x.downstreamFailure(body.err)
	}
	if len(route.Mirrors) > 0 && body.replay {
		x.mirror(route, body)
	}
	if x.ctx.Err() != nil {
		// The client reset the stream already (HTTP/2): nothing to send.
		x.flags |= accesslog.DownstreamConnectionTermination
		x.status = 499
		return false
	}
	if !cluster.AcquireRequest() {
		cluster.Stats.RqPendingOverflow.Inc()
		x.flags |= accesslog.UpstreamOverflow
		return x.reply(503, bodyOverflow, nil)
	}
	defer cluster.ReleaseRequest()
	if x.upgrade && !cluster.HTTP2() {
		return x.tunnel(cluster, wc, route, hash, hasHash)
	}

	var deadline time.Time
	if route.Timeout > 0 {
		deadline = x.start.Add(route.Timeout)
	}
	policy := route.Retry
	retries := uint32(0)
	if policy != nil && body.replay {
		retries = policy.NumRetries
	}
	tried := x.triedBuf[:0]
	retried := false
	attempts := 0
	for n := 0; ; n++ {
		opts := upstream.PickOptions{Hash: hash, HasHash: hasHash}
		if policy != nil && policy.PreviousHosts && len(tried) > 0 {
			opts.Exclude = func(c *upstream.Host) bool {
				for _, t := range tried {
					if t == c {
						return true
					}
				}
				return false
			}
			opts.Attempts = policy.HostSelectionAttempts
		}
		host := cluster.Pick(opts)
		if host == nil {
			x.flags |= accesslog.NoHealthyUpstream
			return x.reply(503, bodyNoHealthy, nil)
		}
		tried = append(tried, host)
		x.upstream, x.host = host.Addr, host
		cluster.Stats.RqTotal.Inc()
		host.Active.Add(1)
		attempts++
		if route.AttemptCount {
			// Envoy's include_request_attempt_count: 1 on the first try.
			x.req.Header.Set("x-envoy-attempt-count", strconv.Itoa(attempts))
		}
		var up *tracing.Span
		if x.span != nil {
			up = x.injectTrace(cluster)
		}
		a := x.try(cluster, host, body, deadline, policy)
		if up != nil {
			x.finishUpstream(up, cluster, host, &a, n)
		}
		retriable := false
		switch a.fail {
		case failNone:
			status := x.responseStatus(&a)
			// Per attempt, as Envoy counts upstream_rq_<code> (and
			// upstream_rq_total): a retried 503 shows as a 503.
			cluster.Stats.Response(status)
			if status >= 500 {
				cluster.Report(host, upstream.ServerError, status)
			} else {
				cluster.Report(host, upstream.Success, status)
			}
			retriable = policy.Retriable(router.OutcomeResponse, status, grpcStatus(&a))
			if !retriable || uint32(n) >= retries || !cluster.AcquireRetry() {
				if retriable {
					x.flags |= accesslog.UpstreamRetryLimitExceeded
				}
				if retried && !retriable {
					cluster.Stats.RqRetrySuccess.Inc()
				}
				keep := x.respond(cluster, host, &a, wc, route)
				host.Active.Add(-1)
				return keep
			}
			x.discardResponse(cluster, &a)
		case failCancelled:
			host.Active.Add(-1)
			x.flags |= accesslog.DownstreamConnectionTermination
			x.status = 499
			return false
		case failDownstream:
			host.Active.Add(-1)
			return x.downstreamFailure(a.err)
		case failOverflow:
			host.Active.Add(-1)
			x.flags |= accesslog.UpstreamOverflow
			return x.reply(503, bodyOverflow, nil)
		case failEjected:
			// Nothing was sent: pick again, once, without spending an
			// attempt (if every host is ejected the same one may come back,
			// and then it is used).
			host.Active.Add(-1)
			tried = tried[:len(tried)-1]
			x.repicked = true
			attempts--
			n--
			continue
		default:
			cluster.Report(host, upstream.LocalFailure, 0)
			outcome := router.OutcomeReset
			switch a.fail {
			case failConnect:
				outcome = router.OutcomeConnectFailure
			case failTimeout:
				outcome = router.OutcomeTimeout
			}
			retriable = policy.Retriable(outcome, 0, -1)
			globalTimeout := a.fail == failTimeout && !deadline.IsZero() && !time.Now().Before(deadline)
			if globalTimeout || !retriable || uint32(n) >= retries || !cluster.AcquireRetry() {
				host.Active.Add(-1)
				if retriable && !globalTimeout {
					x.flags |= accesslog.UpstreamRetryLimitExceeded
				}
				return x.failReply(cluster, a.fail)
			}
		}
		host.Active.Add(-1)
		retried = true
		cluster.Stats.RqRetry.Inc()
		ok := x.backoff(policy, n, deadline)
		cluster.ReleaseRetry()
		if !ok {
			return x.failReply(cluster, failTimeout)
		}
	}
}

func (x *exchange) failReply(c *upstream.Cluster, f failKind) bool {
	switch f {
	case failConnect:
		x.flags |= accesslog.UpstreamConnectionFailure
		return x.reply(503, bodyConnectFail, nil)
	case failTimeout:
		x.flags |= accesslog.UpstreamRequestTimeout
		c.Stats.RqTimeout.Inc()
		x.h.st.rqTimeout.Inc()
		return x.reply(504, bodyTimeout, nil)
	case failProtocol:
		x.flags |= accesslog.UpstreamProtocolError
		return x.reply(503, bodyProtocol, nil)
	default:
		x.flags |= accesslog.UpstreamConnectionTermination
		return x.reply(503, bodyReset, nil)
	}
}

// backoff waits Envoy's jittered exponential backoff before a retry, never
// past the deadline. It reports false when the deadline passed.
func (x *exchange) backoff(p *router.RetryPolicy, n int, deadline time.Time) bool {
	base := 25 * time.Millisecond
	maxd := 250 * time.Millisecond
	if p != nil {
		base, maxd = p.BackoffBase, p.BackoffMax
	}
	ceil := base << min(n, 16)
	if ceil > maxd || ceil <= 0 {
		ceil = maxd
	}
	d := time.Duration(rand.Int64N(int64(ceil) + 1))
	if !deadline.IsZero() {
		if left := time.Until(deadline); left <= 0 {
			return false
		} else if d > left {
			d = left
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-x.ctx.Done():
		return false
	}
}

// prepareBody decides whether the request body can be replayed (retries,
// mirrors): a body is read into memory first only when it fits the
// listener's per-connection buffer limit and the proxy's global budget,
// as Envoy buffers for retries only within its buffer limits. Anything
// larger streams, and is not retried.
func (x *exchange) prepareBody(route *router.Route) (bodySource, bool) {
	req := x.req
	if !req.HasBody() {
		return bodySource{replay: true, length: 0}, true
	}
	needReplay := route.Retry != nil && route.Retry.NumRetries > 0 || len(route.Mirrors) > 0
	if expect := req.Header.Get("expect"); strings.EqualFold(expect, "100-continue") {
		req.Header.Del("expect")
		if w, ok := x.w.(interface{ Continue() error }); ok {
			w.Continue()
		}
	}
	stream := bodySource{stream: &countingReader{r: req.Body, n: &x.bytesIn}, length: req.ContentLength}
	limit := int64(x.h.cfg.BufferLimit)
	if limit <= 0 {
		limit = DefaultBufferLimit
	}
	if !needReplay || req.ContentLength > limit {
		return stream, true
	}
	if req.ContentLength >= 0 {
		limit = req.ContentLength
	}
	ov := x.h.env.Overload
	if !ov.ReserveBuffer(limit) {
		x.h.st.rqOverflow.Inc()
		return stream, true
	}
	ref := &bufferRef{n: limit, ov: ov}
	ref.refs.Store(1)
	b := bytes.NewBuffer(make([]byte, 0, min(limit, 16<<10)))
	n, err := io.CopyN(b, req.Body, limit+1)
	x.bytesIn = n
	if err != nil && err != io.EOF {
		ref.release()
		return bodySource{err: err}, false
	}
	if n > limit {
		// Too big to keep: stream what was read followed by the rest.
		ref.release()
		return bodySource{stream: io.MultiReader(bytes.NewReader(b.Bytes()), &countingReader{r: req.Body, n: &x.bytesIn}), length: req.ContentLength}, true
	}
	return bodySource{buffered: b.Bytes(), replay: true, length: int64(b.Len()), ref: ref}, true
}

type countingReader struct {
	r io.Reader
	n *int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	if err != nil && err != io.EOF {
		err = &downstreamError{err}
	}
	return n, err
}

// downstreamError is a failure reading the client's request body: the
// client stalled past the stream idle timeout, sent malformed framing, or
// went away. It is the client's doing, not the upstream's.
type downstreamError struct{ err error }

func (e *downstreamError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *downstreamError) Unwrap() error { return e.err }

// downstreamFailure answers a request whose body could not be read, as
// Envoy does: 408 (SI) after the stream idle timeout, 400 (DPE) for
// malformed framing, nothing for a client that left (DC).
func (x *exchange) downstreamFailure(err error) bool {
	switch {
	case isTimeout(err):
		x.flags |= accesslog.StreamIdleTimeout
		x.h.st.rqIdleTimeout.Inc()
		return x.replyAndClose(408, "stream timeout", nil)
	case errors.Is(err, httpx.ErrMalformed), errors.Is(err, httpx.ErrHeaderTooLarge):
		x.flags |= accesslog.DownstreamProtocolError
		return x.replyAndClose(400, "", nil)
	}
	if c := x.w.Context(); c != nil && c.Err() == nil {
		// HTTP/2, and the stream is still open: its body ended otherwise
		// than it announced (DATA short of content-length). Without an
		// answer the HTTP/2 server would report success.
		x.flags |= accesslog.DownstreamProtocolError
		return x.replyAndClose(400, "", nil)
	}
	x.flags |= accesslog.DownstreamConnectionTermination
	x.status = 499
	x.w.CloseAfter()
	return false
}

// hashKey computes the consistent-hash key from the route's hash policies.
func (x *exchange) hashKey(r *router.Route) (uint64, bool) {
	if len(r.Hash) == 0 {
		return 0, false
	}
	var h uint64
	found := false
	for _, p := range r.Hash {
		var v string
		ok := false
		switch {
		case p.Header != "":
			if p.Header == ":authority" {
				v, ok = x.req.Authority, true
			} else {
				v, ok = x.req.Header.Lookup(p.Header)
			}
		case p.Cookie != "":
			v, ok = cookieValue(x.req.Header.Get("cookie"), p.Cookie)
			if !ok && p.CookieTTL > 0 {
				// Envoy generates the cookie so later requests stick.
				v, ok = newRequestID(), true
				attr := "; Max-Age=" + strconv.Itoa(int(p.CookieTTL.Seconds())) + "; HttpOnly"
				if p.CookiePath != "" {
					attr += "; Path=" + p.CookiePath
				}
				x.extraResp = append(x.extraResp, httpx.Field{Name: "set-cookie", Value: p.Cookie + "=\"" + v + "\"" + attr})
			}
		case p.SourceIP:
			if a := x.req.RemoteAddr.Addr(); a.IsValid() {
				v, ok = a.Unmap().String(), true
			}
		case p.QueryParam != "":
			v, ok = x.queryValue(p.QueryParam)
		}
		if ok {
			h = h*31 + xxhash.Sum64String(v)
			found = true
		}
	}
	return h, found
}

func cookieValue(header, name string) (string, bool) {
	for _, part := range strings.Split(header, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && k == name {
			return strings.Trim(v, "\""), true
		}
	}
	return "", false
}

func grpcStatus(a *attempt) int {
	var v string
	if a.resp != nil {
		v = a.resp.Header.Get("grpc-status")
	} else if a.h2 != nil {
		v = a.h2.Header.Get("grpc-status")
	}
	if v == "" {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return def
	}
	return n
}

func (x *exchange) responseStatus(a *attempt) int {
	if a.resp != nil {
		return a.resp.Status
	}
	return a.h2.Status
}

// try sends the request to one host.
func (x *exchange) try(c *upstream.Cluster, host *upstream.Host, body *bodySource, deadline time.Time, p *router.RetryPolicy) attempt {
	tryDeadline := deadline
	if p != nil && p.PerTryTimeout > 0 {
		if d := time.Now().Add(p.PerTryTimeout); tryDeadline.IsZero() || d.Before(tryDeadline) {
			tryDeadline = d
		}
	}
	if c.HTTP2() {
		return x.tryH2(c, host, body, tryDeadline)
	}
	ctx := x.ctx
	if !tryDeadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, tryDeadline)
		defer cancel()
	}
	for replays := 0; ; replays++ {
		get := c.Get
		if !x.repicked {
			get = c.GetUnlessEjected
		}
		conn, err := get(ctx, host)
		if err != nil {
			switch {
			case errors.Is(err, upstream.ErrHostEjected):
				return attempt{fail: failEjected, err: err}
			case errors.Is(err, upstream.ErrOverflow):
				return attempt{fail: failOverflow, err: err}
			case x.ctx.Err() != nil:
				return attempt{fail: failCancelled, err: err}
			case errors.Is(err, context.DeadlineExceeded):
				return attempt{fail: failTimeout, err: err}
			}
			return attempt{fail: failConnect, err: err}
		}
		a := x.exchangeH1(c, conn, body, tryDeadline)
		// A pooled connection the server closed while idle fails before any
		// response byte; replay once on a fresh connection.
		if a.fail == failReset && a.first.IsZero() && conn.Reused && replays == 0 && body.replay {
			continue
		}
		return a
	}
}

func (x *exchange) exchangeH1(c *upstream.Cluster, conn *upstream.Conn, body *bodySource, deadline time.Time) attempt {
	req := x.req
	conn.SetDeadline(deadline)
	r, ok := body.reader()
	if !ok {
		c.Release(conn, false)
		return attempt{fail: failReset, err: errors.New("request body already sent")}
	}
	length := body.length
	if body.replay {
		length = int64(len(body.buffered))
	}
	httpx.WriteRequestHead(conn.BW, req.Method, req.Target, req.Authority, &req.Header, length)
	var err error
	if r != nil && length != 0 {
		err = copyRequestBody(conn.BW, r, length)
	}
	if err == nil {
		err = conn.BW.Flush()
	}
	if err != nil {
		c.Release(conn, false)
		var de *downstreamError
		switch {
		case errors.As(err, &de):
			return attempt{fail: failDownstream, err: err}
		case isTimeout(err):
			return attempt{fail: failTimeout, err: err}
		}
		return attempt{fail: failReset, err: err}
	}
	// Only the last attempt's response is ever used: an earlier one was
	// discarded before its retry.
	resp := &x.resp
	*resp = httpx.Response{Header: httpx.Header{Fields: x.respFields[:0]}}
	var scratch [2048]byte
	if err := httpx.ReadResponse(conn.BR, req.Method, resp, scratch[:0]); err != nil {
		first := time.Time{}
		if conn.BR.Buffered() > 0 {
			first = time.Now()
		}
		c.Release(conn, false)
		switch {
		case isTimeout(err):
			return attempt{fail: failTimeout, err: err, first: first}
		case errors.Is(err, httpx.ErrMalformed) || errors.Is(err, httpx.ErrHeaderTooLarge):
			return attempt{fail: failProtocol, err: err, first: time.Now()}
		}
		return attempt{fail: failReset, err: err, first: first}
	}
	return attempt{conn: conn, resp: resp, first: time.Now()}
}

// chunkBufPool holds the buffers chunked request bodies stream through.
var chunkBufPool = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// copyRequestBody streams a request body of length bytes (-1: chunked) to
// an upstream connection, flushing after every read so the upstream sees
// the body as the client sends it. A body of known length is read straight
// into the connection's write buffer: io.CopyN would go through the TCP
// connection's ReadFrom, which allocates 32 KiB per request and keeps it
// for as long as a client takes to send its body (a stalled upload).
func copyRequestBody(bw *bufio.Writer, r io.Reader, length int64) error {
	if length < 0 {
		bp := chunkBufPool.Get().(*[]byte)
		defer chunkBufPool.Put(bp)
		cw := httpx.ChunkedWriter{W: bw}
		for {
			n, err := r.Read(*bp)
			if n > 0 {
				cw.Write((*bp)[:n])
				if ferr := bw.Flush(); ferr != nil {
					return ferr
				}
			}
			if err == io.EOF {
				return cw.Close()
			}
			if err != nil {
				return err
			}
		}
	}
	for length > 0 {
		if bw.Available() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		b := bw.AvailableBuffer()
		b = b[:min(int64(cap(b)), length)]
		n, err := r.Read(b)
		if n > 0 {
			bw.Write(b[:n]) // the buffer's own free space: no copy
			length -= int64(n)
			if ferr := bw.Flush(); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			if length > 0 {
				return &downstreamError{io.ErrUnexpectedEOF} // the client stopped short
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// discardResponse drops a response that will be retried.
func (x *exchange) discardResponse(c *upstream.Cluster, a *attempt) {
	if a.h2 != nil {
		io.CopyN(io.Discard, a.h2.Body, 64<<10)
		a.h2.Body.(io.Closer).Close()
		return
	}
	reusable := !a.resp.Close && httpx.Discard(a.resp.Body, 64<<10)
	a.conn.SetDeadline(time.Time{})
	c.Release(a.conn, reusable)
}

// respond streams the upstream response to the client.
func (x *exchange) respond(c *upstream.Cluster, host *upstream.Host, a *attempt, wc *router.WeightedCluster, route *router.Route) bool {
	if a.h2 != nil {
		return x.respondH2(c, a, wc, route)
	}
	resp := a.resp
	hdr := &resp.Header
	httpx.RemoveHopByHop(hdr)
	x.decorateResponse(hdr, wc, route, a)
	x.status = resp.Status
	x.respHeaderBytes = int64(len(":status")+3) + headerBytes(hdr)
	x.captureResp(hdr)
	c.Stats.RqTime.Observe(time.Since(x.start))
	noBody := x.req.Method == "HEAD" || resp.Status == 204 || resp.Status == 304
	x.w.WriteHeader(resp.Status, hdr, resp.ContentLength, noBody)
	var copyErr error
	if resp.Body != nil {
		copyErr = x.copyBody(resp.Body, a.conn.BR)
	}
	x.w.Finish(nil)
	reusable := copyErr == nil && !resp.Close && httpx.Drained(resp.Body)
	a.conn.SetDeadline(time.Time{})
	c.Release(a.conn, reusable)
	if copyErr != nil {
		var we *httpx.WriteError
		if errors.As(copyErr, &we) {
			x.flags |= accesslog.DownstreamConnectionTermination
		} else if isTimeout(copyErr) {
			x.flags |= accesslog.UpstreamRequestTimeout
			c.Stats.RqTimeout.Inc()
		} else {
			x.flags |= accesslog.UpstreamConnectionTermination
		}
		x.w.CloseAfter()
		return false
	}
	return true
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody streams a body, flushing to the client whenever the upstream has
// nothing more buffered, so streamed responses are not held back. Once the
// body is complete nothing is flushed here: the end of the response
// flushes, so a small response leaves in one write (one HTTP/2 frame
// burst) rather than two.
func (x *exchange) copyBody(r io.Reader, br *bufio.Reader) error {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := x.w.Write(buf[:n]); werr != nil {
				return &httpx.WriteError{Err: werr}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if httpx.Drained(r) {
			return nil
		}
		if br == nil || br.Buffered() == 0 {
			if ferr := x.w.Flush(); ferr != nil {
				return &httpx.WriteError{Err: ferr}
			}
		}
	}
}

// decorateResponse applies response header operations and Envoy's own
// response headers.
func (x *exchange) decorateResponse(hdr *httpx.Header, wc *router.WeightedCluster, route *router.Route, a *attempt) {
	if !wc.ResponseHeaders.Empty() {
		wc.ResponseHeaders.Apply(hdr)
	}
	if !route.ResponseHeaders.Empty() {
		route.ResponseHeaders.Apply(hdr)
	}
	if !a.first.IsZero() {
		x.upstreamTime = a.first.Sub(x.start)
		hdr.Set("x-envoy-upstream-service-time", itoa(x.upstreamTime.Milliseconds()))
	}
	hdr.Set("server", x.h.cfg.ServerName)
	if !hdr.Has("date") {
		now := a.first // when the response began: a clock reading saved
		if now.IsZero() {
			now = time.Now()
		}
		hdr.Add("date", httpDateAt(now))
	}
	for _, f := range x.extraResp {
		hdr.Add(f.Name, f.Value)
	}
}

// tryH2 sends the request over HTTP/2 (gRPC, h2 clusters).
func (x *exchange) tryH2(c *upstream.Cluster, host *upstream.Host, body *bodySource, deadline time.Time) attempt {
	ctx := x.ctx
	var cancel context.CancelFunc = func() {}
	if !deadline.IsZero() {
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	r, ok := body.reader()
	if !ok {
		cancel()
		return attempt{fail: failReset, err: errors.New("request body already sent")}
	}
	if r != nil && !body.replay {
		d := &detachableBody{r: r, abort: x.req.AbortBody}
		x.detach, r = d, d
	}
	// The upstream request is a shallow copy of the downstream one: the
	// header fields are only read.
	ureq := *x.req
	ureq.Body, ureq.ContentLength, ureq.AbortBody = r, body.length, nil
	var rewind func() io.Reader
	if body.replay {
		ureq.ContentLength = int64(len(body.buffered))
		rewind = func() io.Reader { return bytes.NewReader(body.buffered) }
	}
	if r == nil {
		ureq.ContentLength = 0
	}
	resp, err := c.RoundTripH2(ctx, &ureq, host, rewind)
	if err != nil {
		cancel()
		var de *downstreamError
		switch {
		case errors.As(err, &de):
			return attempt{fail: failDownstream, err: err}
		case x.ctx.Err() != nil:
			return attempt{fail: failCancelled, err: err}
		case errors.Is(err, context.DeadlineExceeded):
			return attempt{fail: failTimeout, err: err}
		case errors.Is(err, upstream.ErrConnectFailure):
			return attempt{fail: failConnect, err: err}
		}
		return attempt{fail: failReset, err: err}
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body.(io.ReadCloser), cancel: cancel}
	return attempt{h2: resp, first: time.Now()}
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func (x *exchange) respondH2(c *upstream.Cluster, a *attempt, wc *router.WeightedCluster, route *router.Route) bool {
	resp := a.h2
	defer resp.Body.(io.Closer).Close()
	hdr := &resp.Header
	// gRPC's status of a trailers-only response, before header
	// operations can touch it.
	headerGRPC := hdr.Get("grpc-status")
	httpx.RemoveHopByHop(hdr)
	hdr.Del("content-length")
	x.decorateResponse(hdr, wc, route, a)
	x.status = resp.Status
	x.respHeaderBytes = int64(len(":status")+3) + headerBytes(hdr)
	x.captureResp(hdr)
	c.Stats.RqTime.Observe(time.Since(x.start))
	noBody := x.req.Method == "HEAD" || resp.Status == 204 || resp.Status == 304
	x.w.WriteHeader(resp.Status, hdr, resp.ContentLength, noBody)
	err := x.copyBody(resp.Body, nil)
	// Trailer is set once the body reached its end.
	x.w.Finish(resp.Trailer)
	// gRPC's status is in the trailers, or the headers of a trailers-only
	// response.
	if v := resp.Trailer.Get("grpc-status"); v != "" {
		x.grpcStatus = atoiOr(v, -1)
	} else if headerGRPC != "" {
		x.grpcStatus = atoiOr(headerGRPC, -1)
	}
	if err != nil {
		x.flags |= accesslog.UpstreamConnectionTermination
		x.w.CloseAfter()
		return false
	}
	return true
}

// mirror sends copies of the request to mirror clusters, fire and forget:
// their outcome never touches the client's response.
func (x *exchange) mirror(route *router.Route, src *bodySource) {
	body := src.buffered
	env := x.h.env
	for _, m := range route.Mirrors {
		if m.PerMillion < 1000000 && rand.Uint32N(1000000) >= m.PerMillion {
			continue
		}
		c := env.Clusters.Get(m.Cluster)
		if c == nil || !env.mirrorSlot() {
			continue
		}
		authority := x.req.Authority
		if !m.KeepHost {
			authority = shadowHost(authority)
		}
		req := &httpx.Request{Method: x.req.Method, Target: route.RewriteTarget(x.req.Target), Authority: authority,
			Header: x.req.Header.Clone(), Proto: x.req.Proto}
		timeout := route.Timeout
		if timeout <= 0 {
			timeout = 15 * time.Second
		}
		src.ref.hold()
		go func() {
			defer env.mirrorDone()
			defer src.ref.release()
			ctx, cancel := context.WithTimeout(env.Ctx, timeout)
			defer cancel()
			host := c.Pick(upstream.PickOptions{})
			if host == nil {
				return
			}
			mx := &exchange{h: x.h, ctx: ctx, req: req, start: time.Now()}
			msrc := bodySource{buffered: body, replay: true, length: int64(len(body))}
			c.Stats.RqTotal.Inc()
			var a attempt
			if c.HTTP2() {
				a = mx.tryH2(c, host, &msrc, time.Now().Add(timeout))
			} else {
				a = mx.try(c, host, &msrc, time.Now().Add(timeout), nil)
			}
			switch {
			case a.resp != nil:
				c.Stats.Response(a.resp.Status)
				mx.discardResponse(c, &a)
			case a.h2 != nil:
				c.Stats.Response(a.h2.Status)
				mx.discardResponse(c, &a)
			}
		}()
	}
}

// shadowHost appends "-shadow" to the host part, as Envoy does.
func shadowHost(authority string) string {
	host := router.StripPort(authority)
	return host + "-shadow" + authority[len(host):]
}
