package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/portico-gateway/portico/pkg/proxy/h2"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

// h2Client sends requests to an HTTP/2 cluster (gRPC, h2c or h2 over TLS)
// over the proxy's own HTTP/2 client connections (pkg/proxy/h2), pooled
// per host. A request takes a stream on a pooled connection that has one
// free below the peer's MAX_CONCURRENT_STREAMS; when none has, a new
// connection is dialed rather than queueing the request, as Envoy does:
// waiting behind a busy connection would add the latency of its slowest
// stream, and the cluster's circuit breakers (max connections, max
// requests) already bound how far this grows.
type h2Client struct {
	c      *Cluster
	mu     sync.Mutex
	conns  map[string][]*h2.ClientConn // per host address
	closed bool
}

func newH2Client(c *Cluster) *h2Client {
	return &h2Client{c: c, conns: map[string][]*h2.ClientConn{}}
}

func (h *h2Client) dial(ctx context.Context, host *Host) (net.Conn, error) {
	c := h.c
	d := net.Dialer{Timeout: c.cfg.ConnectTimeout}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", host.Addr)
	if err == nil && c.cfg.TLS != nil {
		nc, err = c.handshake(dctx, nc, host)
	}
	if err != nil {
		c.Stats.CxConnectFail.Inc()
		return nil, fmt.Errorf("%w: %s: %v", ErrConnectFailure, host.Addr, err)
	}
	c.Stats.CxTotal.Inc()
	c.Stats.CxActive.Inc()
	c.connections.Add(1)
	return nc, nil
}

// get returns a connection to host with a stream reserved on it.
func (h *h2Client) get(ctx context.Context, host *Host) (*h2.ClientConn, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, fmt.Errorf("%w: cluster closed", ErrConnectFailure)
	}
	for _, cc := range h.conns[host.Addr] {
		if cc.Reserve() {
			h.mu.Unlock()
			return cc, nil
		}
	}
	h.mu.Unlock()
	nc, err := h.dial(ctx, host)
	if err != nil {
		return nil, err
	}
	c := h.c
	var cc *h2.ClientConn
	// OnClose may run before NewClientConn returns (an upstream that
	// closes or goes away at once): it waits for cc to be assigned.
	assigned := make(chan struct{})
	cc = h2.NewClientConn(nc, h2.ClientConfig{
		IdleTimeout: c.cfg.IdleTimeout,
		OnClose: func() {
			<-assigned
			c.Stats.CxActive.Dec()
			c.Stats.CxDestroy.Inc()
			c.connections.Add(-1)
			h.remove(host.Addr, cc)
		},
	})
	close(assigned)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		cc.Close()
		return nil, fmt.Errorf("%w: cluster closed", ErrConnectFailure)
	}
	h.conns[host.Addr] = append(h.conns[host.Addr], cc)
	h.mu.Unlock()
	if !cc.Reserve() {
		return nil, fmt.Errorf("%w: new connection unusable", ErrConnectFailure)
	}
	return cc, nil
}

func (h *h2Client) remove(addr string, cc *h2.ClientConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.conns[addr]
	for i, x := range list {
		if x == cc {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(h.conns, addr)
	} else {
		h.conns[addr] = list
	}
}

// RoundTripH2 sends one request to host over HTTP/2; req is the proxy's
// own request model, and RoundTripH2 sets its Scheme to the cluster's (pass
// a copy). A request the upstream provably did not process (GOAWAY above
// its stream, refused stream, a connection that closed before taking it) is
// sent once more on another connection when it has no body or rewind
// returns a fresh copy of it; past that the error reaches the router, which
// retries per its policy. The response's Body is an *h2.ResponseBody the
// caller must Close.
func (c *Cluster) RoundTripH2(ctx context.Context, req *httpx.Request, host *Host, rewind func() io.Reader) (*httpx.Response, error) {
	req.Scheme = "http"
	if c.cfg.TLS != nil {
		req.Scheme = "https"
	}
	if req.Authority == "" {
		req.Authority = host.Addr
	}
	for try := 0; ; try++ {
		cc, err := c.h2.get(ctx, host)
		if err != nil {
			return nil, err
		}
		resp, err := cc.RoundTrip(ctx, req)
		if err != nil && try == 0 && errors.Is(err, h2.ErrRetryable) && (req.Body == nil || rewind != nil) {
			if req.Body != nil {
				req.Body = rewind()
			}
			continue
		}
		return resp, err
	}
}

// HTTP2 reports whether the cluster speaks HTTP/2 upstream.
func (c *Cluster) HTTP2() bool { return c.h2 != nil }

// close ends every connection; requests in flight fail.
func (h *h2Client) close() {
	h.mu.Lock()
	h.closed = true
	var all []*h2.ClientConn
	for _, list := range h.conns {
		all = append(all, list...)
	}
	h.mu.Unlock()
	for _, cc := range all {
		cc.Close()
	}
}
