package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"

	"golang.org/x/net/http2"
)

// h2Client sends requests to an HTTP/2 cluster (gRPC, h2c or h2 over TLS)
// with x/net/http2, which multiplexes streams per host connection. (Its
// deprecation in favour of net/http's bundled copy does not fit a proxy
// that dials and handshakes upstreams itself; issue #18 replaces it with
// the proxy's own HTTP/2 codec.)
type h2Client struct {
	c *Cluster
	//lint:ignore SA1019 see the type's comment
	tr *http2.Transport
}

func newH2Client(c *Cluster) *h2Client {
	h := &h2Client{c: c}
	//lint:ignore SA1019 see h2Client
	h.tr = &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return h.dial(ctx, addr)
		},
		IdleConnTimeout: c.cfg.IdleTimeout,
	}
	return h
}

func (h *h2Client) dial(ctx context.Context, addr string) (net.Conn, error) {
	c := h.c
	d := net.Dialer{Timeout: c.cfg.ConnectTimeout}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err == nil && c.cfg.TLS != nil {
		var host *Host
		for _, x := range c.Hosts() {
			if x.Addr == addr {
				host = x
			}
		}
		if host == nil {
			host = &Host{Addr: addr}
		}
		nc, err = c.handshake(dctx, nc, host)
	}
	if err != nil {
		c.Stats.CxConnectFail.Inc()
		return nil, fmt.Errorf("%w: %s: %v", ErrConnectFailure, addr, err)
	}
	c.Stats.CxTotal.Inc()
	c.Stats.CxActive.Inc()
	c.connections.Add(1)
	return &countedConn{Conn: nc, c: c}, nil
}

// RoundTrip sends one request to host over HTTP/2.
func (c *Cluster) RoundTripH2(req *http.Request, h *Host) (*http.Response, error) {
	scheme := "http"
	if c.cfg.TLS != nil {
		scheme = "https"
	}
	req.URL.Scheme, req.URL.Host = scheme, h.Addr
	//lint:ignore SA1019 see h2Client
	return c.h2.tr.RoundTrip(req)
}

// HTTP2 reports whether the cluster speaks HTTP/2 upstream.
func (c *Cluster) HTTP2() bool { return c.h2 != nil }

func (h *h2Client) close() {
	//lint:ignore SA1019 see h2Client
	h.tr.CloseIdleConnections()
}

// countedConn keeps connection stats right for HTTP/2 connections.
type countedConn struct {
	net.Conn
	c      *Cluster
	closed bool
}

func (cc *countedConn) Close() error {
	if !cc.closed {
		cc.closed = true
		cc.c.Stats.CxActive.Dec()
		cc.c.Stats.CxDestroy.Inc()
		cc.c.connections.Add(-1)
	}
	return cc.Conn.Close()
}
