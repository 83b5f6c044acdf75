package upstream

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"

	"github.com/portico-gateway/portico/pkg/proxy/httpx"
)

// chanListener hands connections accepted elsewhere to an http.Server.
type chanListener struct {
	conns chan net.Conn
	addr  net.Addr
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// goAwayFirstUpstream answers its first connection with SETTINGS and a
// GOAWAY that processed no stream, and serves later ones with net/http's
// h2c server echoing the request body.
func goAwayFirstUpstream(t *testing.T) (EndpointSpec, *atomic.Int64) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	cl := &chanListener{conns: make(chan net.Conn), addr: lis.Addr(), done: make(chan struct{})}
	srv := &http.Server{Protocols: new(http.Protocols), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("x-authority", r.Host)
		w.Write(b)
	})}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(cl)
	t.Cleanup(func() { lis.Close(); close(cl.done); srv.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			if accepted.Add(1) > 1 {
				select {
				case cl.conns <- c:
				case <-cl.done:
					c.Close()
				}
				continue
			}
			go func() {
				defer c.Close()
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, preface); err != nil {
					return
				}
				fr := http2.NewFramer(c, c)
				fr.WriteSettings()
				// GOAWAY once the request's HEADERS arrived, naming no
				// stream processed: the request provably was not.
				sent := false
				for { // until the client closes
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					if _, ok := f.(*http2.HeadersFrame); ok && !sent {
						fr.WriteGoAway(0, http2.ErrCodeNo, nil)
						sent = true
					}
				}
			}()
		}
	}()
	port := lis.Addr().(*net.TCPAddr).Port
	return EndpointSpec{Address: "127.0.0.1", Port: uint32(port), Weight: 1, Healthy: true}, &accepted
}

// TestRoundTripH2ResendsUnprocessedRequest: a request the upstream
// provably did not process (GOAWAY with last stream 0) is sent once more on
// a new connection, its body rewound; without rewind, a request with a
// body is not resent (the error reaches the router).
func TestRoundTripH2ResendsUnprocessedRequest(t *testing.T) {
	for _, tc := range []struct {
		name       string
		body       string
		rewind     bool
		wantResend bool
	}{
		{"no body", "", false, true},
		{"replayable body", "hello upstream", true, true},
		{"streamed body", "hello upstream", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep, accepted := goAwayFirstUpstream(t)
			m := newManager(t)
			m.Apply(map[string]Versioned{"g": {Config: cfg("g", func(c *ClusterConfig) { c.HTTP2 = true }), Hash: "1"}}, nil)
			c := m.Get("g")
			c.setEndpoints([]EndpointSpec{ep})
			req := &httpx.Request{Method: "POST", Target: "/svc", Authority: "grpc.example.com", Scheme: "https"}
			var rewind func() io.Reader
			if tc.body != "" {
				req.Body, req.ContentLength = strings.NewReader(tc.body), int64(len(tc.body))
				if tc.rewind {
					rewind = func() io.Reader { return bytes.NewReader([]byte(tc.body)) }
				}
			}
			resp, err := c.RoundTripH2(context.Background(), req, c.Pick(PickOptions{}), rewind)
			if !tc.wantResend {
				if err == nil {
					resp.Body.(io.Closer).Close()
					t.Fatal("a streamed body was resent")
				}
				if n := accepted.Load(); n != 1 {
					t.Errorf("%d connections, want 1", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.(io.Closer).Close()
			if err != nil || string(got) != tc.body || resp.Status != 200 {
				t.Errorf("status %d body %q err %v, want 200 %q", resp.Status, got, err, tc.body)
			}
			if a := resp.Header.Get("x-authority"); a != "grpc.example.com" {
				t.Errorf("authority %q", a)
			}
			if req.Scheme != "http" {
				t.Errorf("scheme %q, want the cluster's (http)", req.Scheme)
			}
			if n := accepted.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}
