package hcm

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/idlepark"
	"github.com/portico-gateway/portico/pkg/proxy/istiometrics"
	"github.com/portico-gateway/portico/pkg/proxy/overload"
	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
	"github.com/portico-gateway/portico/pkg/proxy/tracing"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// Env is what every connection manager shares.
type Env struct {
	// Routes returns the active route table of a name (nil if unknown).
	Routes   func(name string) *router.Table
	Clusters *upstream.Manager
	Stats    *stats.Store
	// AccessLog holds the access log writers (nil: no access logs).
	AccessLog *accesslog.Sinks
	Log       logr.Logger
	// Ctx bounds work that outlives a request (mirrors).
	Ctx context.Context
	// Overload caps connections and buffered request bytes (nil: no caps).
	Overload *overload.Manager
	// Istio records Istio's standard metrics (nil: none).
	Istio *istiometrics.Metrics
	// Tracing owns the span exporters (nil: tracing configuration is
	// ignored).
	Tracing *tracing.Registry
	// Parker holds idle HTTP/1.1 connections without a goroutine (nil:
	// they wait in one, without their read buffer).
	Parker  *idlepark.Parker
	mirrors chan struct{}
	once    sync.Once
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
	// logs are the access loggers bound to their writers.
	logs []accesslog.Bound
	env  *Env
	st   *hcmStats
	// filters are the instances of cfg.Steps (nil for built-in steps).
	filters []filters.HTTP
	// tracer is nil when the configuration does not trace.
	tracer *tracing.Tracer

	draining atomic.Bool
	mu       sync.Mutex
	conns    map[*h1conn]struct{}
	h2conns  h2Conns
}

// NewHandler returns a handler for cfg.
func NewHandler(cfg *Config, env *Env) *Handler {
	h := &Handler{cfg: cfg, env: env, st: newHCMStats(env.Stats, cfg.StatPrefix), conns: map[*h1conn]struct{}{}}
	h.logs = env.AccessLog.Resolve(cfg.AccessLogs, env.Log)
	h.filters = make([]filters.HTTP, len(cfg.Steps))
	for i, s := range cfg.Steps {
		if s.Kind == StepFilter {
			h.filters[i] = s.Factory.New(filters.Env{Stats: env.Stats, StatPrefix: cfg.StatPrefix,
				Log: env.Log.WithName(s.Factory.Name())})
		}
	}
	if cfg.Tracing != nil && env.Tracing != nil {
		h.tracer = env.Tracing.Tracer(cfg.Tracing)
	}
	if env.Istio != nil {
		// Istio's metrics are the proxy's; every connection manager of a
		// gateway carries its class's overrides, so the latest applies.
		env.Istio.SetOverrides(cfg.IstioStats)
	}
	if h.cfg.Limits.MaxHeaderBytes == 0 {
		h.cfg.Limits = httpx.DefaultLimits
	}
	return h
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
		h.h2conns.shutdown() // GOAWAY: each closes when its streams are done
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			h.mu.Lock()
			n := len(h.conns) + h.h2conns.count()
			h.mu.Unlock()
			if n == 0 {
				return
			}
			select {
			case <-ctx.Done():
				h.mu.Lock()
				for c := range h.conns {
					c.Close()
				}
				h.mu.Unlock()
				h.h2conns.closeAll()
				return
			case <-tick.C:
			}
		}
	}()
}
