// Package proxy is Portico's Go edge proxy: it consumes the xDS Portico's
// controller serves (or any control plane emitting the same subset) and
// carries HTTP, HTTPS and TCP traffic, with an Envoy-compatible admin
// interface. Updates are applied atomically and in dependency order: a
// route never points at a cluster the proxy does not have, a listener
// never serves before its routes and certificates are there.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portico-gateway/portico/pkg/configdump"
	"github.com/portico-gateway/portico/pkg/idlegc"
	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/hcm"
	"github.com/portico-gateway/portico/pkg/proxy/idlepark"
	"github.com/portico-gateway/portico/pkg/proxy/istiometrics"
	"github.com/portico-gateway/portico/pkg/proxy/listener"
	"github.com/portico-gateway/portico/pkg/proxy/overload"
	"github.com/portico-gateway/portico/pkg/proxy/router"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
	"github.com/portico-gateway/portico/pkg/proxy/supported"
	"github.com/portico-gateway/portico/pkg/proxy/tracing"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
	"github.com/portico-gateway/portico/pkg/proxy/xdsclient"
	ptls "github.com/portico-gateway/portico/pkg/tls"
	"github.com/portico-gateway/portico/pkg/version"
)

// Version is reported by /server_info: the build's pkg/version, one
// version for every Portico binary.
var Version = "portico-edge-proxy/" + version.Version

// Options configure a proxy.
type Options struct {
	NodeID string
	// TracingFlushInterval is how long finished spans wait to be sent in
	// a batch (0: 1s).
	TracingFlushInterval time.Duration
	Cluster              string
	Namespace            string
	Labels               map[string]string
	// XDSAddress is the controller's ADS address (host:port).
	XDSAddress string
	// SOTW uses state-of-the-world xDS instead of delta.
	SOTW bool
	// XDSSecurity authenticates the proxy to the controller (TLS, token).
	XDSSecurity xdsclient.Security
	// AdminAddress serves the admin interface ("" disables it).
	AdminAddress string
	// DrainTime is how long replaced listeners let connections finish.
	DrainTime time.Duration
	// PortMap remaps listener ports when binding (80 → 31380, …).
	PortMap map[uint32]uint32
	// AccessLog receives the access logs of the stdout logger and of file
	// loggers whose path is /dev/stdout (nil: those are off). Logs to other
	// paths (meshConfig accessLogFile) are written to their files.
	AccessLog io.Writer
	// WarmingTimeout bounds how long a resource waits for what it
	// depends on before it is applied anyway (Envoy's initial fetch
	// timeout is 15 s).
	WarmingTimeout time.Duration
	// Logging lists and changes the levels of the proxy's loggers (for
	// /logging); nil: they cannot be changed.
	Logging LogLevels
	// CommandLine is shown by /server_info.
	CommandLine []string
	// StatusAddress serves /healthz/ready and /stats/prometheus beyond
	// localhost (Istio's status port, 15021); empty disables.
	StatusAddress string
	// MaxDownstreamConnections caps client connections across listeners
	// (0: half of the file descriptors the process may open); beyond it,
	// connections waiting idle are closed to make room, then new ones are
	// shed (Envoy's global_downstream_max_connections).
	MaxDownstreamConnections int64
	// MaxBufferedRequestBytes caps request bodies held in memory for
	// retries and mirrors across all requests (0: 256 MiB).
	MaxBufferedRequestBytes int64
	// TerminationDrain is how long the proxy keeps serving, draining,
	// after it is told to stop (SIGTERM): readiness fails at once so the
	// load balancer stops sending clients, while those already on their
	// way are still served (Istio's terminationDrainDuration, 5 s).
	TerminationDrain time.Duration
}

// LogLevels are loggers whose levels change at runtime, by name
// (internal/logging.Levels).
type LogLevels interface {
	// Levels returns every named logger's level.
	Levels() map[string]string
	// SetLevel changes one logger's level, or with name "" all of them;
	// an unknown name is an error.
	SetLevel(name, level string) error
	// Register adds named loggers.
	Register(names ...string)
}

// Loggers are the proxy's named loggers, with Envoy's names where Envoy
// has the same logger: /logging lists and changes them one by one.
var Loggers = []string{
	"main",       // start, readiness, shutdown
	"admin",      // the admin interface and status port
	"config",     // applying configuration: listeners, routes, clusters, secrets
	"xds",        // the ADS stream: connects, ACKs and NACKs
	"connection", // listeners and connections, TLS handshakes
	"http",       // the HTTP connection manager
	"router",     // route tables
	"upstream",   // clusters, endpoints, DNS
	"secret",     // certificates: loading, watching, rotation
}

// Proxy is a running edge proxy.
type Proxy struct {
	opts      Options
	log       logr.Logger // main
	cfgLog    logr.Logger
	adminLog  logr.Logger
	routerLog logr.Logger
	started   time.Time
	// gc collects garbage between configuration updates (see idlegc).
	gc    *idlegc.Collector
	Stats *stats.Store
	// Istio holds Istio's standard metrics (istio_requests_total, …).
	Istio     *istiometrics.Metrics
	Secrets   *ptls.Store
	Clusters  *upstream.Manager
	Listeners *listener.Manager
	overload  *overload.Manager
	accessLog *accesslog.Sinks
	// tracing owns the span exporters of every HCM tracing provider.
	tracing *tracing.Registry
	client  *xdsclient.Client
	routes  atomic.Pointer[map[string]*router.Table]

	mu       sync.Mutex
	received map[string]bool
	// Compiled, accepted state by type.
	clusters  map[string]*compiledCluster
	endpoints map[string]*compiled[[]upstream.EndpointSpec]
	routeCfgs map[string]*compiled[*router.Table]
	// vhosts are the compiled virtual hosts of the route configurations,
	// by the hash of their bytes.
	vhosts  map[string]compiledVirtualHost
	lsnrs   map[string]*compiled[*listener.Spec]
	secrets map[string]*compiled[ptls.Spec]
	// What is active.
	activeRoutes    map[string]*compiled[*router.Table]
	activeListeners map[string]*compiled[*listener.Spec]
	// lingering: the clusters of route tables and listeners replaced
	// less than clusterLinger ago, one set per replacement in time order
	// (appending a set costs nothing; a per-cluster map cost a write per
	// cluster of a 10,000-cluster table on every change).
	lingering []lingerSet
	// clusterCfgs is p.clusters as the cluster manager takes them; nil
	// when p.clusters changed since it was built.
	clusterCfgs map[string]upstream.Versioned
	// clustersSettled: the cluster manager runs exactly clusterCfgs
	// (applied, nothing kept beyond them), so applying them again would
	// change nothing; with 24,000 clusters, finding that out cost a pass
	// over all of them twice per route change. endpointsForgotten: the
	// manager holds no load assignment p.endpoints lacks.
	clustersSettled    bool
	endpointsForgotten bool
	// applyAlways turns both shortcuts off (tests compare with it).
	applyAlways bool
	// wanted caches Wanted's answers, valid while wantedGen (bumped
	// whenever p.clusters or p.lsnrs is replaced) is unchanged.
	wanted    map[string]wantedNames
	wantedGen uint64
	failures  map[string]*configdump.Failure
	// lsnrRejected holds listeners whose latest version could not be
	// compiled: each is rejected alone (its previous version, if any,
	// keeps serving) and the others are applied, as Envoy does.
	lsnrRejected map[string]string
	// lsnrProblems says why each listener that cannot serve (or not with
	// all its filter chains) does not: rejected, unbindable, or without
	// its certificates. Changes are logged once, counted, shown on /ready
	// and reported to the control plane (see reported).
	lsnrProblems map[string]string
	// servable memoizes, per listener, the spec without the filter chains
	// that cannot serve, so an unchanged outcome is not applied again.
	servable map[string]servableSpec
	// reported is, per type, the verdict last given to the control plane
	// (the error detail, "" for an ACK).
	reported map[string]string

	ready        atomic.Bool
	healthFailed atomic.Bool
	draining     atomic.Bool
	kick         chan struct{}
	quit         chan struct{}
	quitOnce     sync.Once
	// ctx bounds the components' background work; Run cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	updSuccess, updRejected map[string]*stats.Counter
	connected               *stats.Gauge
	lstats                  listenerManagerStats
}

// listenerManagerStats are Envoy's listener_manager.* stats.
type listenerManagerStats struct {
	createFailure, createSuccess *stats.Counter
	active, warming, failed      *stats.Gauge
}

// servableSpec is a listener spec less its unservable filter chains.
type servableSpec struct {
	key  string // the listener's hash and the dropped chains
	spec *listener.Spec
}

type compiled[T any] struct {
	value T
	// msg is the resource for /config_dump; clusters, load assignments
	// and route configurations keep raw instead, their encoding, decoded
	// when a dump asks: with thousands of them, decoded Envoy messages
	// (metadata Structs are maps) were most of the proxy's heap, for a
	// page rarely read. See message. raw is the xDS client's bytes, which
	// it keeps for the resource's lifetime and never writes (a response
	// buffer of its own, see xdsclient's codec): no second copy.
	msg proto.Message
	raw []byte
	typ protoreflect.MessageType
	// vhosts are a route configuration's virtual hosts, in order.
	vhosts  []compiledVirtualHost
	version string
	hash    string
	updated time.Time
	seen    time.Time // when this version first arrived (warming clock)
}

// message returns the resource as received.
func (c *compiled[T]) message() proto.Message {
	if c.msg != nil || c.typ == nil {
		return c.msg
	}
	m := c.typ.New().Interface()
	// It decoded when it arrived; these are the same bytes.
	_ = proto.Unmarshal(c.raw, m)
	return m
}

type compiledCluster struct {
	compiled[*upstream.ClusterConfig]
}

// New creates a proxy. Run starts it.
func New(opts Options, log logr.Logger) *Proxy {
	if opts.DrainTime == 0 {
		opts.DrainTime = 45 * time.Second
	}
	if opts.WarmingTimeout == 0 {
		opts.WarmingTimeout = 10 * time.Second
	}
	if opts.Logging != nil {
		opts.Logging.Register(Loggers...)
	}
	p := &Proxy{
		opts: opts, log: log.WithName("main"), cfgLog: log.WithName("config"), adminLog: log.WithName("admin"), routerLog: log.WithName("router"),
		started: time.Now(), Stats: stats.NewStore(),
		received: map[string]bool{}, clusters: map[string]*compiledCluster{}, endpoints: map[string]*compiled[[]upstream.EndpointSpec]{},
		routeCfgs: map[string]*compiled[*router.Table]{}, lsnrs: map[string]*compiled[*listener.Spec]{}, secrets: map[string]*compiled[ptls.Spec]{},
		activeRoutes: map[string]*compiled[*router.Table]{}, activeListeners: map[string]*compiled[*listener.Spec]{},
		failures: map[string]*configdump.Failure{}, kick: make(chan struct{}, 1), quit: make(chan struct{}),
		updSuccess: map[string]*stats.Counter{}, updRejected: map[string]*stats.Counter{},
		lsnrRejected: map[string]string{}, lsnrProblems: map[string]string{}, servable: map[string]servableSpec{}, reported: map[string]string{},
	}
	empty := map[string]*router.Table{}
	p.routes.Store(&empty)
	p.accessLog = accesslog.NewSinks(opts.AccessLog)
	for t, short := range map[string]string{resourcev3.ClusterType: "cluster_manager.cds", resourcev3.EndpointType: "cluster_manager.eds",
		resourcev3.ListenerType: "listener_manager.lds", resourcev3.RouteType: "http.rds", resourcev3.SecretType: "sds"} {
		p.updSuccess[t] = p.Stats.Counter(stats.Plain(short), "update_success")
		p.updRejected[t] = p.Stats.Counter(stats.Plain(short), "update_rejected")
	}
	p.connected = p.Stats.Gauge(stats.Plain("control_plane"), "connected_state")
	lm := stats.Plain("listener_manager")
	p.lstats = listenerManagerStats{
		createFailure: p.Stats.Counter(lm, "listener_create_failure"), createSuccess: p.Stats.Counter(lm, "listener_create_success"),
		active: p.Stats.Gauge(lm, "total_listeners_active"), warming: p.Stats.Gauge(lm, "total_listeners_warming"),
		failed: p.Stats.Gauge(lm, "total_listeners_failed"),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.Secrets = ptls.NewStore(log.WithName("secret"), p.onSecretEvent)
	p.Clusters = upstream.NewManager(p.ctx, log.WithName("upstream"), p.Stats, p.Secrets)
	p.overload = overload.New(overload.Options{MaxConnections: opts.MaxDownstreamConnections, MaxBufferedBytes: opts.MaxBufferedRequestBytes})
	ov := stats.Plain("overload")
	p.Stats.GaugeFunc(ov, "global_downstream_max_connections", p.overload.MaxConnections)
	p.Stats.GaugeFunc(ov, "downstream_cx_active", p.overload.Active)
	p.Stats.GaugeFunc(ov, "downstream_cx_evicted_idle", p.overload.Evicted.Load)
	p.Stats.GaugeFunc(ov, "downstream_cx_overflow", p.overload.Rejected.Load)
	p.Stats.GaugeFunc(ov, "buffered_request_bytes", p.overload.Buffered)
	// Istio's standard metrics, with the proxy as the source workload.
	p.Istio = istiometrics.New(istiometrics.SourceWorkload(opts.Labels, opts.Namespace, opts.Cluster),
		version.Version)
	p.tracing = p.newTracing(log)
	parker := idlepark.New(p.ctx)
	p.Stats.GaugeFunc(stats.Plain("server"), "downstream_cx_parked", func() int64 { return int64(parker.Len()) })
	env := &hcm.Env{Routes: p.routeTable, Clusters: p.Clusters, Stats: p.Stats, AccessLog: p.accessLog, Log: log.WithName("http"), Ctx: p.ctx, Overload: p.overload,
		Istio: p.Istio, Tracing: p.tracing, Parker: parker}
	p.Listeners = listener.NewManager(p.ctx, listener.Deps{HTTP: env, Secrets: p.Secrets, Stats: p.Stats, Log: log.WithName("connection"), Overload: p.overload}, opts.DrainTime, opts.PortMap)
	// A change can arrive as several responses, one per type (clusters,
	// then load assignments, then routes), sent back to back: a
	// collection waits that long for the next, and is dropped if it
	// comes.
	p.gc = idlegc.New(log.WithName("gc"), 50*time.Millisecond)
	p.client = xdsclient.New(xdsclient.Options{Address: opts.XDSAddress, Node: p.Node(), SOTW: opts.SOTW, Security: opts.XDSSecurity, GC: p.gc}, p, log.WithName("xds"))
	return p
}

// Node is the node identity sent to the control plane.
func (p *Proxy) Node() *corev3.Node {
	labels := map[string]any{}
	for k, v := range p.opts.Labels {
		labels[k] = v
	}
	md, _ := structpb.NewStruct(map[string]any{"LABELS": labels, "NAMESPACE": p.opts.Namespace})
	// The build version, not a free-form string: istioctl proxy-config
	// all prints it as the "Envoy Version" (0.0.0 otherwise).
	major, minor, patch := version.Semantic()
	return &corev3.Node{Id: p.opts.NodeID, Cluster: p.opts.Cluster, Metadata: md, UserAgentName: "portico-edge-proxy",
		UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: major, MinorNumber: minor, Patch: patch}}}}
}

// Ready reports whether the first configuration is applied and the proxy
// has not been told to fail health checks. Applied means, as in Envoy,
// that every listener that can serve does: listeners rejected alone (an
// address in use, certificates that cannot be loaded, an unsupported
// field) do not hold readiness back; Problems lists them.
func (p *Proxy) Ready() bool { return p.ready.Load() && !p.healthFailed.Load() && !p.draining.Load() }

// Run runs the proxy until ctx ends or /quitquitquit is called. A proxy
// runs once.
func (p *Proxy) Run(ctx context.Context) error {
	defer p.cancel()
	// The components run until the termination drain is over, not merely
	// until ctx ends.
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	go func() {
		select {
		case <-p.quit:
			p.log.Info("shutting down (quitquitquit)")
		case <-ctx.Done():
			p.terminationDrain(runCtx)
		case <-runCtx.Done():
		}
		stopRun()
	}()
	p.Stats.Gauge(stats.Plain("server"), "live").Set(1)

	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return p.Secrets.Run(gctx) })
	g.Go(func() error { return p.client.Run(gctx) })
	g.Go(func() error { p.gc.Run(gctx); return nil })
	g.Go(func() error { p.warmLoop(gctx); return nil })
	g.Go(func() error { p.accessLog.Run(gctx, time.Second); return nil })
	if p.opts.AdminAddress != "" {
		g.Go(func() error { return p.serveAdmin(gctx) })
	}
	if p.opts.StatusAddress != "" {
		g.Go(func() error { return p.serveHTTP(gctx, "status port", p.opts.StatusAddress, p.StatusHandler()) })
	}
	err := g.Wait()
	p.cancel()
	p.tracing.Wait() // a last, bounded flush of queued spans
	p.Listeners.Close()
	p.Clusters.Close()
	return err
}

// terminationDrain fails readiness and drains every listener for
// TerminationDrain before the proxy stops, so a rolling update or scale
// down drops no request. Connections still open at the end are closed.
func (p *Proxy) terminationDrain(runCtx context.Context) {
	d := p.opts.TerminationDrain
	if d <= 0 || !p.ready.Load() {
		return
	}
	p.log.Info("draining before exit", "duration", d)
	p.draining.Store(true)
	p.Stats.Gauge(stats.Plain("server"), "live").Set(0)
	p.Listeners.Drain(d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.quit:
	case <-runCtx.Done():
	}
}

// Quit asks the proxy to stop.
func (p *Proxy) Quit() { p.quitOnce.Do(func() { close(p.quit) }) }

func (p *Proxy) onSecretEvent(e ptls.Event) {
	sc := stats.Plain("sds." + e.Name)
	if e.OK {
		p.Stats.Counter(sc, "update_success").Inc()
	} else {
		p.Stats.Counter(sc, "update_rejected").Inc()
	}
	// A secret arriving may let a warming listener start.
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Proxy) routeTable(name string) *router.Table { return (*p.routes.Load())[name] }

// warmLoop re-applies state while something is warming, so timeouts fire
// and late dependencies are picked up.
func (p *Proxy) warmLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	certs := time.NewTicker(5 * time.Second)
	defer certs.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
			p.updateCertStats()
		case <-certs.C:
			p.updateCertStats()
			continue
		case <-t.C:
		}
		p.mu.Lock()
		if p.warming() {
			p.reconcile()
		}
		p.reportChanges()
		p.mu.Unlock()
	}
}

// warming reports whether accepted state is not yet all active: something
// waits for what it depends on, or failed and is retried (a port that may
// be freed, a certificate whose files may appear).
func (p *Proxy) warming() bool {
	if p.expireLingering(time.Now()); p.Clusters.Len() > len(p.clusters) {
		// Clusters CDS dropped run on while routes refer to them or
		// they linger; reconciling drops them once neither holds.
		// (Lingering alone, with every running cluster still in CDS,
		// keeps nothing and needs no reconciling.)
		return true
	}
	for name, c := range p.routeCfgs {
		if a, ok := p.activeRoutes[name]; !ok || a.hash != c.hash {
			return true
		}
	}
	for name, c := range p.lsnrs {
		if a, ok := p.activeListeners[name]; !ok || a.hash != c.hash || p.lsnrProblems[name] != "" {
			return true
		}
	}
	return false
}

// Connected implements xdsclient.Handler.
func (p *Proxy) Connected(up bool) {
	if up {
		p.connected.Set(1)
	} else {
		p.connected.Set(0)
	}
}

// hashOf identifies a resource's content, to tell an unchanged one. It
// runs over every byte of every update (a route configuration of 30,000
// routes is tens of MB, hashed whole and virtual host by virtual host), so
// it is xxhash, ~10× SHA-256's speed; with the length, an accidental
// collision between two versions of one resource is out of reach (2^-64),
// and the control plane that sends them is trusted.
func hashOf(b []byte) string {
	var buf [32]byte
	out := strconv.AppendUint(buf[:0], xxhash.Sum64(b), 16)
	out = append(out, '.')
	out = strconv.AppendInt(out, int64(len(b)), 10)
	return string(out)
}

// Update implements xdsclient.Handler: it compiles every resource of the
// type (rejecting the update if anything is unsupported or invalid) and
// applies the resulting state.
func (p *Proxy) Update(typeURL string, resources map[string]xdsclient.Resource, version string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	err := p.update(typeURL, resources, version)
	now := time.Now()
	p.cfgLog.V(1).Info("update", "type", typeURL, "resources", len(resources), "duration", now.Sub(start), "error", err)
	p.reported[typeURL] = errString(err)
	p.reportChanges()
	if err != nil {
		p.updRejected[typeURL].Inc()
		p.failures[typeURL] = &configdump.Failure{Details: err.Error(), Version: version, At: now}
		return err
	}
	p.updSuccess[typeURL].Inc()
	delete(p.failures, typeURL)
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (p *Proxy) update(typeURL string, resources map[string]xdsclient.Resource, version string) error {
	now := time.Now()
	names := make([]string, 0, len(resources))
	for n := range resources {
		names = append(names, n)
	}
	sort.Strings(names)
	entry := func(r xdsclient.Resource, msg proto.Message, prevHash string, prevSeen, prevUpdated time.Time) (string, string, time.Time, time.Time) {
		h := hashOf(r.Any.GetValue())
		v := r.Version
		if v == "" {
			v = version
		}
		if h == prevHash {
			return h, v, prevSeen, prevUpdated
		}
		return h, v, now, now
	}
	switch typeURL {
	case resourcev3.ClusterType:
		next := map[string]*compiledCluster{}
		for _, n := range names {
			r := resources[n]
			if old := p.clusters[n]; old != nil && old.hash == hashOf(r.Any.GetValue()) {
				c := *old
				if c.version = r.Version; c.version == "" {
					c.version = version
				}
				next[n] = &c
				continue
			}
			c := &clusterv3.Cluster{}
			if err := r.Any.UnmarshalTo(c); err != nil {
				return fmt.Errorf("cluster %s: %w", n, err)
			}
			if err := supported.Check(c); err != nil {
				return fmt.Errorf("cluster %s: %w", n, err)
			}
			cfg, err := upstream.CompileCluster(c)
			if err != nil {
				return fmt.Errorf("cluster %s: %w", n, err)
			}
			old := p.clusters[n]
			var ph string
			var ps, pu time.Time
			if old != nil {
				ph, ps, pu = old.hash, old.seen, old.updated
			}
			h, v, seen, upd := entry(r, c, ph, ps, pu)
			next[n] = &compiledCluster{compiled[*upstream.ClusterConfig]{value: cfg, raw: r.Any.GetValue(), typ: c.ProtoReflect().Type(),
				version: v, hash: h, seen: seen, updated: upd}}
		}
		p.clusters, p.clusterCfgs, p.clustersSettled = next, nil, false
		p.wantedGen++
	case resourcev3.EndpointType:
		next := map[string]*compiled[[]upstream.EndpointSpec]{}
		for _, n := range names {
			r := resources[n]
			if old := p.endpoints[n]; old != nil && old.hash == hashOf(r.Any.GetValue()) {
				c := *old
				if c.version = r.Version; c.version == "" {
					c.version = version
				}
				next[n] = &c
				continue
			}
			cla := &endpointv3.ClusterLoadAssignment{}
			if err := r.Any.UnmarshalTo(cla); err != nil {
				return fmt.Errorf("endpoints %s: %w", n, err)
			}
			if err := supported.Check(cla); err != nil {
				return fmt.Errorf("endpoints %s: %w", n, err)
			}
			eps, err := upstream.CompileEndpoints(cla)
			if err != nil {
				return fmt.Errorf("endpoints %s: %w", n, err)
			}
			old := p.endpoints[n]
			var ph string
			var ps, pu time.Time
			if old != nil {
				ph, ps, pu = old.hash, old.seen, old.updated
			}
			h, v, seen, upd := entry(r, cla, ph, ps, pu)
			next[n] = &compiled[[]upstream.EndpointSpec]{value: eps, raw: r.Any.GetValue(), typ: cla.ProtoReflect().Type(),
				version: v, hash: h, seen: seen, updated: upd}
		}
		changed := map[string][]upstream.EndpointSpec{}
		for n, c := range next {
			if old, ok := p.endpoints[n]; !ok || old.hash != c.hash {
				changed[n] = c.value
			}
		}
		p.Clusters.SetEndpointsOf(changed)
		p.endpoints, p.endpointsForgotten = next, false
	case resourcev3.RouteType:
		next := map[string]*compiled[*router.Table]{}
		// Sized like the last: grown from empty, it rehashed tens of
		// thousands of entries step by step on every update.
		vhosts := make(map[string]compiledVirtualHost, len(p.vhosts))
		for _, n := range names {
			r := resources[n]
			old := p.routeCfgs[n]
			var lastVHosts []compiledVirtualHost
			if old != nil {
				lastVHosts = old.vhosts
			}
			sp, err := splitRoutes(r.Any.GetValue(), lastVHosts)
			if err != nil {
				return fmt.Errorf("route configuration %s: %w", n, err)
			}
			h := sp.hash
			v := r.Version
			if v == "" {
				v = version
			}
			if old != nil && old.hash == h {
				c := *old
				c.version = v
				next[n] = &c
				// Its virtual hosts stay remembered for the others.
				for _, vh := range old.vhosts {
					vhosts[vh.key] = vh
				}
				continue
			}
			var last *router.Table
			if old != nil {
				last = old.value
			}
			t, used, err := compileRouteConfiguration(sp, p.vhosts, vhosts, last, lastVHosts)
			if err != nil {
				return fmt.Errorf("route configuration %s: %w", n, err)
			}
			next[n] = &compiled[*router.Table]{value: t, raw: r.Any.GetValue(), typ: routeConfigType, vhosts: used,
				version: v, hash: h, seen: now, updated: now}
		}
		p.routeCfgs = next
		p.vhosts = vhosts
	case resourcev3.ListenerType:
		// Each listener is compiled on its own: one that cannot be is
		// rejected alone (its previous version keeps serving), as Envoy
		// rejects one listener and adds the others.
		next := map[string]*compiled[*listener.Spec]{}
		rejected := map[string]string{}
		for _, n := range names {
			r := resources[n]
			old := p.lsnrs[n]
			h := hashOf(r.Any.GetValue())
			if old != nil && old.hash == h {
				next[n] = old
				continue
			}
			l, s, err := compileListener(n, r)
			if err != nil {
				rejected[n] = err.Error()
				if old != nil {
					next[n] = old
				}
				continue
			}
			v := r.Version
			if v == "" {
				v = version
			}
			next[n] = &compiled[*listener.Spec]{value: s, msg: l, version: v, hash: h, seen: now, updated: now}
		}
		p.lsnrs = next
		p.wantedGen++
		p.lsnrRejected = rejected
		p.received[typeURL] = true
		p.reconcile()
		return xdsclient.Partial(p.listenerVerdict())
	case resourcev3.SecretType:
		// Decode everything first: a malformed secret rejects the update
		// before the store changes.
		next := map[string]*compiled[ptls.Spec]{}
		var changed []string
		for _, n := range names {
			r := resources[n]
			h := hashOf(r.Any.GetValue())
			v := r.Version
			if v == "" {
				v = version
			}
			if old := p.secrets[n]; old != nil && old.hash == h {
				c := *old
				c.version = v
				next[n] = &c
				continue
			}
			s := &tlsv3.Secret{}
			if err := r.Any.UnmarshalTo(s); err != nil {
				return fmt.Errorf("secret %s: %w", n, err)
			}
			if err := supported.Check(s); err != nil {
				return fmt.Errorf("secret %s: %w", n, err)
			}
			spec, err := secretSpec(s)
			if err != nil {
				return fmt.Errorf("secret %s: %w", n, err)
			}
			next[n] = &compiled[ptls.Spec]{value: spec, msg: s, version: v, hash: h, seen: now, updated: now}
			changed = append(changed, n)
		}
		// A secret whose material cannot be loaded is rejected alone: the
		// store keeps it (and watches its files, so it loads once they
		// appear) and the listeners using it say they cannot serve it.
		for _, n := range changed {
			if err := p.Secrets.Set(n, next[n].value); err != nil {
				p.cfgLog.V(1).Info("secret not loaded", "secret", n, "error", err.Error())
			}
		}
		for n := range p.secrets {
			if _, ok := next[n]; !ok {
				p.Secrets.Remove(n)
			}
		}
		p.secrets = next
		p.received[typeURL] = true
		p.reconcile()
		return xdsclient.Partial(p.secretVerdict())
	default:
		return fmt.Errorf("unsupported resource type %s", typeURL)
	}
	p.received[typeURL] = true
	p.reconcile()
	return nil
}

// compileListener decodes and compiles one listener.
func compileListener(name string, r xdsclient.Resource) (*listenerv3.Listener, *listener.Spec, error) {
	l := &listenerv3.Listener{}
	if err := r.Any.UnmarshalTo(l); err != nil {
		return nil, nil, fmt.Errorf("listener %s: %w", name, err)
	}
	if err := supported.Check(l); err != nil {
		return nil, nil, fmt.Errorf("listener %s: %w", name, err)
	}
	s, err := listener.Compile(l)
	if err != nil {
		return nil, nil, err
	}
	return l, s, nil
}

func secretSpec(s *tlsv3.Secret) (ptls.Spec, error) {
	var spec ptls.Spec
	data := func(d *corev3.DataSource) ([]byte, string, error) {
		switch v := d.GetSpecifier().(type) {
		case nil:
			return nil, "", nil
		case *corev3.DataSource_Filename:
			return nil, v.Filename, nil
		case *corev3.DataSource_InlineBytes:
			return v.InlineBytes, "", nil
		case *corev3.DataSource_InlineString:
			return []byte(v.InlineString), "", nil
		}
		return nil, "", fmt.Errorf("unsupported data source")
	}
	var err error
	switch t := s.Type.(type) {
	case *tlsv3.Secret_TlsCertificate:
		if spec.CertPEM, spec.CertFile, err = data(t.TlsCertificate.CertificateChain); err != nil {
			return spec, err
		}
		if spec.KeyPEM, spec.KeyFile, err = data(t.TlsCertificate.PrivateKey); err != nil {
			return spec, err
		}
		spec.WatchDir = t.TlsCertificate.GetWatchedDirectory().GetPath()
	case *tlsv3.Secret_ValidationContext:
		if spec.CAPEM, spec.CAFile, err = data(t.ValidationContext.TrustedCa); err != nil {
			return spec, err
		}
		spec.WatchDir = t.ValidationContext.GetWatchedDirectory().GetPath()
	default:
		return spec, fmt.Errorf("unsupported secret type %T", s.Type)
	}
	if (spec.CertFile != "") != (spec.KeyFile != "") && spec.CAFile == "" {
		return spec, fmt.Errorf("certificate and key must both be files or both inline")
	}
	return spec, nil
}

// Wanted implements xdsclient.Handler.
func (p *Proxy) Wanted(typeURL string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	// The names follow from the clusters and listeners alone: while
	// neither changed (a route change among thousands of hosts), the
	// same slice is the answer, without a pass over every cluster.
	if w, ok := p.wanted[typeURL]; ok && w.gen == p.wantedGen {
		return w.names
	}
	out := p.wantedNames(typeURL)
	if p.wanted == nil {
		p.wanted = map[string]wantedNames{}
	}
	p.wanted[typeURL] = wantedNames{gen: p.wantedGen, names: out}
	return out
}

type wantedNames struct {
	gen   uint64
	names []string
}

// wantedNames is the answer to Wanted. Called with p.mu held.
func (p *Proxy) wantedNames(typeURL string) []string {
	set := map[string]bool{}
	switch typeURL {
	case resourcev3.EndpointType:
		for _, c := range p.clusters {
			if c.value.Discovery == upstream.EDS {
				set[c.value.EDSServiceName] = true
			}
		}
	case resourcev3.RouteType:
		for _, l := range p.lsnrs {
			for _, r := range l.value.RouteConfigs() {
				set[r] = true
			}
		}
	case resourcev3.SecretType:
		for _, l := range p.lsnrs {
			for _, s := range l.value.Secrets() {
				set[s] = true
			}
		}
		for _, c := range p.clusters {
			if t := c.value.TLS; t != nil {
				if t.CertSecret != "" {
					set[t.CertSecret] = true
				}
				if t.ValidationSecret != "" {
					set[t.ValidationSecret] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// reconcile applies accepted state in dependency order. Called with p.mu.
// What cannot be applied is rejected alone and recorded (lsnrProblems);
// everything else is applied.
func (p *Proxy) reconcile() {
	now := time.Now()
	timedOut := func(seen time.Time) bool { return now.Sub(seen) > p.opts.WarmingTimeout }

	// 1. Clusters. Keep clusters that active routes or listeners still use
	// even if CDS dropped them, until those move on (make-before-break).
	p.applyClusters()

	clusterReady := func(name string, seen time.Time) bool {
		c := p.Clusters.Get(name)
		return c != nil && (c.Warm() || timedOut(seen))
	}

	// 2. Route tables whose clusters are all present (and warm).
	nextRoutes := map[string]*compiled[*router.Table]{}
	for n, rc := range p.routeCfgs {
		// The active version is not checked again: its clusters were
		// ready when it became active, and the cluster manager keeps
		// what active tables refer to.
		ready := true
		if active := p.activeRoutes[n]; active != rc && !timedOut(rc.seen) {
			for _, c := range newClusters(rc, active) {
				if !clusterReady(c, rc.seen) {
					ready = false
					break
				}
			}
		}
		switch {
		case ready:
			nextRoutes[n] = rc
		case p.activeRoutes[n] != nil:
			nextRoutes[n] = p.activeRoutes[n] // the previous version keeps serving
		}
	}
	// Tables RDS dropped stay while a running listener still uses them.
	for n, rc := range p.activeRoutes {
		if _, ok := nextRoutes[n]; !ok && p.listenerUsesRoute(n) {
			nextRoutes[n] = rc
		}
	}
	tables := make(map[string]*router.Table, len(nextRoutes))
	for n, rc := range nextRoutes {
		tables[n] = rc.value
		if prev := p.activeRoutes[n]; prev != rc && p.routerLog.V(1).Enabled() {
			p.routerLog.V(1).Info("route table active", "route_config", n, "version", rc.version, "virtual_hosts", len(rc.vhosts))
		}
	}
	for n, prev := range p.activeRoutes {
		if next := nextRoutes[n]; next != prev {
			p.linger(now, prev.value.Clusters)
		}
	}
	p.activeRoutes = nextRoutes
	p.routes.Store(&tables)

	// 3. Listeners whose routes, secrets and clusters are all there, each
	// less the filter chains whose certificates cannot be loaded; each
	// bound on its own.
	problems := map[string]string{}
	for n, msg := range p.lsnrRejected {
		problems[n] = "rejected: " + msg
	}
	nextListeners := map[string]*compiled[*listener.Spec]{}
	keepActive := func(n string) {
		if a := p.activeListeners[n]; a != nil {
			nextListeners[n] = a
		}
	}
	warming := 0
	for n, l := range p.lsnrs {
		expired := timedOut(l.seen)
		ready := expired
		if !ready {
			ready = true
			for _, r := range l.value.RouteConfigs() {
				if _, ok := tables[r]; !ok {
					ready = false
				}
			}
			for _, c := range l.value.Clusters() {
				if !clusterReady(c, l.seen) {
					ready = false
				}
			}
		}
		var spec *listener.Spec
		var dropped []string
		if ready {
			spec, dropped, ready = p.servableSpec(n, l, expired)
		}
		if !ready {
			if problems[n] == "" {
				warming++
			}
			keepActive(n)
			continue
		}
		if len(dropped) > 0 {
			if spec == nil {
				problems[n] = "no filter chain can serve: " + strings.Join(dropped, "; ")
				keepActive(n)
				continue
			}
			problems[n] = strings.Join(dropped, "; ") + "; the other filter chains serve"
			c := *l
			c.value = spec
			nextListeners[n] = &c
			continue
		}
		nextListeners[n] = l
	}
	specs := make(map[string]*listener.Spec, len(nextListeners))
	for n, l := range nextListeners {
		specs[n] = l.value
	}
	for n, err := range p.Listeners.Apply(specs) {
		problems[n] = err.Error()
		if p.Listeners.Spec(n) != nil {
			keepActive(n) // still on its previous address
		} else {
			delete(nextListeners, n)
		}
	}
	for n, prev := range p.activeListeners {
		if next := nextListeners[n]; next != prev {
			p.linger(now, prev.value.Clusters())
		}
	}
	p.activeListeners = nextListeners
	p.setListenerProblems(problems)
	p.lstats.active.Set(int64(len(nextListeners)))
	p.lstats.warming.Set(int64(warming))

	// 4. Drop clusters nothing uses any more.
	p.applyClusters()
	if !p.endpointsForgotten || p.applyAlways {
		keepEDS := make(map[string]bool, len(p.endpoints))
		for n := range p.endpoints {
			keepEDS[n] = true
		}
		p.Clusters.ForgetEndpoints(keepEDS)
		p.endpointsForgotten = true
	}

	if !p.ready.Load() && p.received[resourcev3.ClusterType] && p.received[resourcev3.ListenerType] && p.settled() {
		p.ready.Store(true)
		p.log.Info("configuration applied; proxy is ready", "listeners", len(nextListeners), "clusters", len(p.clusters), "routes", len(nextRoutes),
			"listeners_failed", len(p.lsnrProblems))
	}
}

// settled reports whether every listener serves its latest version or
// failed alone: Envoy's server is ready once no listener is warming.
func (p *Proxy) settled() bool {
	for n, l := range p.lsnrs {
		if p.lsnrProblems[n] != "" {
			continue
		}
		if a := p.activeListeners[n]; a == nil || a.hash != l.hash {
			return false
		}
	}
	return true
}

// servableSpec decides what of a listener can serve now. A filter chain
// whose certificate or CA failed to load (or, after the warming timeout,
// never arrived) is dropped and described; while a chain still waits for
// a secret, the whole listener waits (ready is false). It returns nil if
// no chain is left.
func (p *Proxy) servableSpec(name string, l *compiled[*listener.Spec], expired bool) (spec *listener.Spec, dropped []string, ready bool) {
	var keep []*listener.ChainSpec
	for _, c := range l.value.Chains {
		var why []string
		for _, s := range c.Secrets {
			if p.Secrets.Has(s) {
				continue
			}
			switch prob := p.Secrets.Problem(s); {
			case prob != "":
				why = append(why, fmt.Sprintf("secret %s: %s", s, prob))
			case expired:
				why = append(why, fmt.Sprintf("secret %s was not received from the control plane within %v", s, p.opts.WarmingTimeout))
			default:
				return nil, nil, false // still expected
			}
		}
		if len(why) > 0 {
			dropped = append(dropped, fmt.Sprintf("filter chain %s%s is not served: %s", c.Name, serverNames(c.ServerNames), strings.Join(why, "; ")))
			continue
		}
		keep = append(keep, c)
	}
	if len(dropped) == 0 {
		delete(p.servable, name)
		return l.value, nil, true
	}
	if len(keep) == 0 {
		delete(p.servable, name)
		return nil, dropped, true
	}
	key := l.hash + "\x00" + strings.Join(dropped, "\x00")
	if m, ok := p.servable[name]; ok && m.key == key {
		return m.spec, dropped, true
	}
	cp := *l.value
	cp.Chains = keep
	p.servable[name] = servableSpec{key: key, spec: &cp}
	return &cp, dropped, true
}

func serverNames(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return " (" + strings.Join(names, ", ") + ")"
}

// setListenerProblems records why listeners do not (fully) serve. Each new
// or changed problem is logged once, with its hint, and counted; each
// resolved one is logged too. Called with p.mu.
func (p *Proxy) setListenerProblems(problems map[string]string) {
	for n, why := range problems {
		if p.lsnrProblems[n] == why {
			continue
		}
		p.lstats.createFailure.Inc()
		p.listenerFailedGauge(n).Set(1)
		p.cfgLog.Error(errors.New(why), "listener not serving; the other listeners are not affected", "listener", n)
	}
	for n := range p.lsnrProblems {
		if _, still := problems[n]; still {
			continue
		}
		p.listenerFailedGauge(n).Set(0)
		if _, exists := p.lsnrs[n]; exists {
			p.lstats.createSuccess.Inc()
			p.cfgLog.Info("listener serving now", "listener", n, "address", p.Listeners.BoundAddress(n))
		}
	}
	p.lsnrProblems = problems
	p.lstats.failed.Set(int64(len(problems)))
}

// listenerFailedGauge is listener_manager.listener.<name>.failed: 1 while
// the listener cannot (fully) serve.
func (p *Proxy) listenerFailedGauge(name string) *stats.Gauge {
	sc := &stats.Scope{Prefix: "listener_manager.listener." + name, Family: "listener_manager_listener",
		Tags: []stats.Tag{{Name: "envoy_listener_name", Value: name}}}
	return p.Stats.Gauge(sc, "failed")
}

// listenerVerdict is what the control plane is told about LDS: one line
// per listener that cannot (fully) serve, naming it and why.
func (p *Proxy) listenerVerdict() error {
	return verdict("listener", p.lsnrProblems)
}

// secretVerdict is what the control plane is told about SDS: one line per
// secret whose material could not be loaded as sent, naming the
// listeners that use it.
func (p *Proxy) secretVerdict() error {
	problems := map[string]string{}
	for n := range p.secrets {
		prob := p.Secrets.Problem(n)
		if prob == "" {
			continue
		}
		var users []string
		for ln, l := range p.lsnrs {
			if slices.Contains(l.value.Secrets(), n) {
				users = append(users, ln)
			}
		}
		sort.Strings(users)
		if len(users) > 0 {
			prob += " (used by listener " + strings.Join(users, ", ") + ")"
		}
		problems[n] = prob
	}
	return verdict("secret", problems)
}

func verdict(kind string, problems map[string]string) error {
	if len(problems) == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(problems))
	lines := make([]string, len(names))
	for i, n := range names {
		lines[i] = kind + " " + n + ": " + problems[n]
	}
	return errors.New(strings.Join(lines, "\n"))
}

// reportChanges tells the control plane when the verdict on listeners or
// secrets changed since it was last given (a port was freed, certificate
// files appeared or broke). Called with p.mu.
func (p *Proxy) reportChanges() {
	for typ, v := range map[string]error{resourcev3.ListenerType: p.listenerVerdict(), resourcev3.SecretType: p.secretVerdict()} {
		if !p.received[typ] {
			continue
		}
		detail := errString(v)
		if detail == p.reported[typ] {
			continue
		}
		p.reported[typ] = detail
		if v == nil {
			delete(p.failures, typ)
		} else {
			p.failures[typ] = &configdump.Failure{Details: detail, At: time.Now()}
		}
		p.client.Resync(typ)
	}
}

// Status implements xdsclient.Reporter: the current verdict on a type.
func (p *Proxy) Status(typeURL string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch typeURL {
	case resourcev3.ListenerType:
		return xdsclient.Partial(p.listenerVerdict())
	case resourcev3.SecretType:
		return xdsclient.Partial(p.secretVerdict())
	}
	if f := p.failures[typeURL]; f != nil {
		return errors.New(f.Details)
	}
	return nil
}

// Problems lists, by listener, why listeners do not (fully) serve.
func (p *Proxy) Problems() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.lsnrProblems)
}

func (p *Proxy) listenerUsesRoute(name string) bool {
	for _, l := range p.activeListeners {
		for _, r := range l.value.RouteConfigs() {
			if r == name {
				return true
			}
		}
	}
	return false
}

// applyClusters makes the cluster manager run p.clusterCfgs (built from
// p.clusters when they changed), keeping what active tables, listeners
// and lingering sets still use.
func (p *Proxy) applyClusters() {
	if p.clusterCfgs == nil {
		p.clusterCfgs = make(map[string]upstream.Versioned, len(p.clusters))
		for n, c := range p.clusters {
			p.clusterCfgs[n] = upstream.Versioned{Config: c.value, Hash: c.hash}
		}
	}
	if p.clustersSettled && !p.applyAlways {
		return
	}
	p.clustersSettled = !p.Clusters.Apply(p.clusterCfgs, p.activeClusterRefs)
}

// newClusters lists the clusters a route configuration's version must
// find ready before it replaces active: those of its virtual hosts that
// active lacks (compiled virtual hosts are shared between versions, so
// the same pointer means the same routes). The routes it shares with
// active already send to their clusters, which the manager keeps for
// active's sake; a one-host change among 10,000 checks one host's
// clusters, not all 24,000.
func newClusters(rc, active *compiled[*router.Table]) []string {
	if active == nil || len(rc.vhosts) == 0 || len(active.vhosts) == 0 {
		return rc.value.Clusters
	}
	had := make(map[*router.CompiledVirtualHost]struct{}, len(active.vhosts))
	for _, vh := range active.vhosts {
		had[vh.vh] = struct{}{}
	}
	var out []string
	for _, vh := range rc.vhosts {
		if _, ok := had[vh.vh]; !ok {
			out = append(out, vh.vh.Clusters...)
		}
	}
	return out
}

// activeClusterRefs are the clusters that active route tables and
// listeners refer to, or replaced ones did less than clusterLinger ago:
// a request that matched a route of the old table a moment ago looks its
// cluster up after the swap, and must find it (Envoy's workers never see
// the swap mid-request; goroutines can). Called with p.mu, by the
// cluster manager only when CDS dropped a cluster it still has.
func (p *Proxy) activeClusterRefs() map[string]bool {
	p.expireLingering(time.Now())
	refs := map[string]bool{}
	for _, set := range p.lingering {
		for _, c := range set.clusters {
			refs[c] = true
		}
	}
	for _, rc := range p.activeRoutes {
		for _, c := range rc.value.Clusters {
			refs[c] = true
		}
	}
	for _, l := range p.activeListeners {
		for _, c := range l.value.Clusters() {
			refs[c] = true
		}
	}
	return refs
}

// clusterLinger is how long a cluster outlives the last route table or
// listener that referred to it.
const clusterLinger = time.Second

// lingerSet is the clusters of one replaced route table or listener.
type lingerSet struct {
	until    time.Time
	clusters []string // not modified: compiled tables' own lists
}

// linger keeps clusters for clusterLinger from now. Called with p.mu.
func (p *Proxy) linger(now time.Time, clusters []string) {
	if len(clusters) == 0 {
		return
	}
	p.lingering = append(p.lingering, lingerSet{until: now.Add(clusterLinger), clusters: clusters})
}

// expireLingering forgets the sets whose time is up (the oldest come
// first). Called with p.mu.
func (p *Proxy) expireLingering(now time.Time) {
	n := 0
	for n < len(p.lingering) && now.After(p.lingering[n].until) {
		p.lingering[n] = lingerSet{}
		n++
	}
	if n > 0 {
		p.lingering = append(p.lingering[:0], p.lingering[n:]...)
	}
}

// Flush writes buffered access log entries.
func (p *Proxy) Flush() {
	p.accessLog.Flush()
}

// updateCertStats publishes each secret's time to expiry
// (sds.<name>.expiration_seconds) and Envoy's
// server.days_until_first_cert_expiring.
func (p *Proxy) updateCertStats() {
	now := time.Now()
	first := int64(-1)
	for _, info := range p.Secrets.Infos() {
		var exp time.Time
		switch {
		case info.Cert != nil:
			exp = info.Cert.NotAfter
		case len(info.CA) > 0:
			exp = info.CA[0].NotAfter
			for _, ca := range info.CA[1:] {
				if ca.NotAfter.Before(exp) {
					exp = ca.NotAfter
				}
			}
		default:
			continue
		}
		secs := int64(exp.Sub(now).Seconds())
		p.Stats.Gauge(stats.Plain("sds."+info.Name), "expiration_seconds").Set(secs)
		if days := secs / 86400; first < 0 || days < first {
			first = days
		}
	}
	if first >= 0 {
		p.Stats.Gauge(stats.Plain("server"), "days_until_first_cert_expiring").Set(first)
	}
}

// newTracing returns the span exporters' registry: collectors are reached
// through the proxy's own clusters (as Envoy's tracers use a named
// cluster), and spans carry the proxy's node and Istio identity.
func (p *Proxy) newTracing(log logr.Logger) *tracing.Registry {
	w := istiometrics.SourceWorkload(p.opts.Labels, p.opts.Namespace, p.opts.Cluster)
	resolve := func(name string) (string, bool) {
		c := p.Clusters.Get(name)
		if c == nil {
			return "", false
		}
		h := c.Pick(upstream.PickOptions{})
		if h == nil {
			return "", false
		}
		return h.Addr, true
	}
	return tracing.NewRegistry(p.ctx, tracing.Options{Resolve: resolve, Log: log.WithName("tracing"),
		FlushInterval: p.opts.TracingFlushInterval,
		Node: tracing.Node{ID: p.opts.NodeID, Namespace: p.opts.Namespace, CanonicalService: w.CanonicalService,
			CanonicalRevision: w.CanonicalRevision}})
}
