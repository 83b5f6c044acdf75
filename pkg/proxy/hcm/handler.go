package hcm

import (
	"context"
	"log"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/http2"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/overload"
	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// Env is what every connection manager shares.
type Env struct {
	// Routes returns the active route table of a name (nil if unknown).
	Routes    func(name string) *router.Table
	Clusters  *upstream.Manager
	Stats     *stats.Store
	AccessLog *accesslog.Logger
	Log       logr.Logger
	// Ctx bounds work that outlives a request (mirrors).
	Ctx context.Context
	// Overload caps connections and buffered request bytes (nil: no caps).
	Overload *overload.Manager
	mirrors  chan struct{}
	once     sync.Once
}

func (e *Env) mirrorSlot() bool {
	e.once.Do(func() { e.mirrors = make(chan struct{}, 1024) })
	select {
	case e.mirrors <- struct{}{}:
		return true
	default:
		return false
	}
}

func (e *Env) mirrorDone() { <-e.mirrors }

func (e *Env) context() context.Context {
	if e.Ctx != nil {
		return e.Ctx
	}
	return context.Background()
}

type hcmStats struct {
	cxTotal, cxHTTP1, cxHTTP2, cxProtocolError, cxDestroy     *stats.Counter
	rqTotal, rqHTTP1, rqHTTP2, noRoute, noCluster, rqRedirect *stats.Counter
	rqDirect, rqTimeout, rqFault, rqDelay, rqCORSPreflight    *stats.Counter
	rqHeadersTimeout, rqIdleTimeout, cxIdleTimeout            *stats.Counter
	underscoresRejected, underscoresDropped, rqOverflow       *stats.Counter
	cxPrematureReset                                          *stats.Counter
	rqClass                                                   [6]*stats.Counter
	cxActive, rqActive                                        *stats.Gauge
	rqTime                                                    *stats.Histogram
	bare                                                      *stats.Counter
}

func newHCMStats(store *stats.Store, prefix string) *hcmStats {
	sc := stats.HTTPScope(prefix)
	c := func(n string) *stats.Counter { return store.Counter(sc, n) }
	s := &hcmStats{
		cxTotal: c("downstream_cx_total"), cxHTTP1: c("downstream_cx_http1_total"), cxHTTP2: c("downstream_cx_http2_total"),
		cxProtocolError: c("downstream_cx_protocol_error"), cxDestroy: c("downstream_cx_destroy"),
		rqTotal: c("downstream_rq_total"), rqHTTP1: c("downstream_rq_http1_total"), rqHTTP2: c("downstream_rq_http2_total"),
		noRoute: c("no_route"), noCluster: c("no_cluster"), rqRedirect: c("rq_redirect"), rqDirect: c("rq_direct_response"),
		rqTimeout: c("downstream_rq_timeout"), rqFault: c("fault.aborts_injected"), rqDelay: c("fault.delays_injected"),
		rqCORSPreflight:  c("cors.preflight_count"),
		rqHeadersTimeout: c("downstream_rq_header_timeout"), rqIdleTimeout: c("downstream_rq_idle_timeout"),
		cxIdleTimeout:       c("downstream_cx_idle_timeout"),
		underscoresRejected: c("requests_rejected_with_underscores_in_headers"),
		underscoresDropped:  c("dropped_headers_with_underscores"),
		rqOverflow:          c("buffer_budget_exceeded"),
		cxPrematureReset:    c("downstream_cx_premature_reset_close"),
		cxActive:            store.Gauge(sc, "downstream_cx_active"), rqActive: store.Gauge(sc, "downstream_rq_active"),
		rqTime: store.Histogram(sc, "downstream_rq_time"),
		bare:   store.Counter(nil, "downstream_rq_total"),
	}
	for i, class := range []string{"", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		if class != "" {
			s.rqClass[i] = c("downstream_rq_" + class)
		}
	}
	return s
}

// Handler serves connections for one filter chain configuration. When the
// configuration is replaced, Drain lets its connections finish: HTTP/1.1
// responses carry "Connection: close", HTTP/2 connections get GOAWAY.
type Handler struct {
	cfg *Config
	env *Env
	st  *hcmStats
	// filters are the instances of cfg.Steps (nil for built-in steps).
	filters []filters.HTTP

	draining atomic.Bool
	mu       sync.Mutex
	conns    map[*h1conn]struct{}
	h1srv    *http.Server // base for HTTP/2 graceful shutdown
	// h2srv serves HTTP/2 connections one by one (ServeConn), which only
	// x/net's deprecated server offers; issue #18 replaces it.
	//lint:ignore SA1019 see above
	h2srv *http2.Server
}

// NewHandler returns a handler for cfg.
func NewHandler(cfg *Config, env *Env) *Handler {
	h := &Handler{cfg: cfg, env: env, st: newHCMStats(env.Stats, cfg.StatPrefix), conns: map[*h1conn]struct{}{}}
	h.filters = make([]filters.HTTP, len(cfg.Steps))
	for i, s := range cfg.Steps {
		if s.Kind == StepFilter {
			h.filters[i] = s.Factory.New(filters.Env{Stats: env.Stats, StatPrefix: cfg.StatPrefix,
				Log: env.Log.WithName(s.Factory.Name())})
		}
	}
	if h.cfg.Limits.MaxHeaderBytes == 0 {
		h.cfg.Limits = httpx.DefaultLimits
	}
	// The HTTP/2 server advertises SETTINGS_MAX_HEADER_LIST_SIZE from
	// MaxHeaderBytes and answers 431 beyond it; its connection and stream
	// windows bound the request bytes one client can make it buffer.
	h.h1srv = &http.Server{MaxHeaderBytes: h.cfg.Limits.MaxHeaderBytes,
		// Protocol errors of hostile clients are routine at an edge: debug.
		ErrorLog: log.New(logWriter{env.Log.V(1)}, "", 0)}
	//lint:ignore SA1019 see Handler.h2srv
	h.h2srv = &http2.Server{
		IdleTimeout:                  cfg.IdleTimeout,
		MaxConcurrentStreams:         cfg.HTTP2.MaxConcurrentStreams,
		MaxUploadBufferPerStream:     int32(min(cfg.HTTP2.InitialStreamWindow, 1<<31-1)),
		MaxUploadBufferPerConnection: int32(min(cfg.HTTP2.InitialConnectionWindow, 1<<31-1)),
		// A client that stops reading ends its connection after the stream
		// idle timeout, not never.
		WriteByteTimeout: cfg.StreamIdleTimeout,
		MaxReadFrameSize: 16 << 10,
	}
	//lint:ignore SA1019 see Handler.h2srv
	if err := http2.ConfigureServer(h.h1srv, h.h2srv); err != nil {
		env.Log.Error(err, "configuring HTTP/2")
	}
	return h
}

// logWriter turns the standard logger's lines into logr entries.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Config returns the handler's configuration.
func (h *Handler) Config() *Config { return h.cfg }

// Drain starts graceful shutdown of the handler's connections and closes
// whatever is left at the deadline.
func (h *Handler) Drain(deadline time.Duration) {
	if h.draining.Swap(true) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(h.env.context(), deadline)
		defer cancel()
		h.h1srv.Shutdown(ctx) // sends GOAWAY to HTTP/2 connections
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			h.mu.Lock()
			n := len(h.conns)
			h.mu.Unlock()
			if n == 0 {
				return
			}
			select {
			case <-ctx.Done():
				h.mu.Lock()
				for c := range h.conns {
					c.nc.Close()
				}
				h.mu.Unlock()
				return
			case <-tick.C:
			}
		}
	}()
}
