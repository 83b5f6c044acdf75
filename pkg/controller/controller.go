// Package controller runs the pipeline: resources from a provider are bound
// (pkg/gateway), translated (pkg/translate) and published (pkg/xds) for
// every class of connected proxies, and statuses go to a sink. It holds the
// last build for the debug endpoints.
package controller

import (
	"context"
	"github.com/portico-gateway/portico/pkg/telemetry"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/gatewayapi"
	"github.com/portico-gateway/portico/pkg/idlegc"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/jwks"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

// StatusSink receives every build's result (statuses, and the proxies'
// configuration for sinks that act on it, like Service port management).
type StatusSink interface {
	Update(ctx context.Context, result *gateway.Result)
}

// Options configure the controller.
type Options struct {
	// Mesh is meshConfig's tracing; when set, Telemetry resources
	// (telemetry.istio.io) adjust it per class, live (see telemetry.go).
	Mesh *telemetry.Mesh
	// StaticClasses are proxy classes always built, connected or not (the
	// embedded proxy's, in standalone mode).
	StaticClasses []map[string]string
	// ExtraClasses, if set, adds classes at every build (e.g. the selectors
	// of gateway Services whose ports Portico manages).
	ExtraClasses func() []map[string]string
	DomainSuffix string
	Translate    translate.Options
	// Registerer receives the controller's metrics; nil disables them.
	Registerer prometheus.Registerer
	// RootNamespace is Istio's root namespace (default istio-system):
	// its policies without a selector apply to every gateway.
	RootNamespace string
	// JWKS tunes fetching RequestAuthentication jwksUri key sets.
	JWKS jwks.Options
	// GatewayAPI tunes the Gateway API conversion (our controllerName,
	// the proxies Gateways attach to by default).
	GatewayAPI gatewayapi.Options
}

// State is the outcome of the last build.
type State struct {
	Resources *resource.Resources
	Result    *gateway.Result
	// Errors by class: translation or validation failures no resource
	// could be blamed for. The class keeps serving its previous snapshot.
	Errors map[string]string
	// Excluded lists the resources left out because the configuration
	// made from them breaks Envoy's validation rules (key → why); the
	// rest was published without them.
	Excluded  map[string]string
	Versions  map[string]string
	BuiltAt   time.Time
	Duration  time.Duration
	Published bool
}

// Controller is the pipeline.
type Controller struct {
	// telemetry resolves classes' Telemetry against Options.Mesh
	// (created with the first class).
	telemetry *telemetry.Resolver
	// telemetryLogged: Telemetry problems already logged.
	telemetryLogged map[string]bool
	log             logr.Logger
	xds             *xds.Server
	opts            Options
	sink            StatusSink
	metrics         *metrics
	// gc collects garbage between builds (see idlegc).
	gc *idlegc.Collector

	updates chan struct{}
	mu      sync.Mutex
	pending *resource.Resources
	last    *resource.Resources

	// translators remember each class's last translation, so a change
	// re-translates only what it touches. Used by the build loop only.
	translators map[string]*translate.Translator
	builder     *gateway.Builder
	// lastExcluded is the previous build's exclusions, to log changes.
	lastExcluded map[resource.Key]status.Message

	stateMu sync.RWMutex
	state   *State
	ready   chan struct{}
	once    sync.Once

	// reports are proxies' standing NACKs (see proxyreports.go);
	// lastUnselected is the last warning about unselected proxy classes.
	reports        proxyReports
	lastUnselected string

	// jwks fetches jwksUri key sets for builds; a new key set builds again.
	jwks *jwks.Fetcher
}

// New returns a controller publishing to server.
func New(log logr.Logger, server *xds.Server, sink StatusSink, opts Options) *Controller {
	c := &Controller{
		log: log, xds: server, opts: opts, sink: sink,
		metrics:     newMetrics(opts.Registerer),
		updates:     make(chan struct{}, 1),
		ready:       make(chan struct{}),
		translators: map[string]*translate.Translator{},
		builder:     gateway.NewBuilder(),
		// A build's snapshot is still being sent to the proxies when
		// the build returns: ~40 ms at 30,000 routes on one port.
		gc: idlegc.New(log.WithName("gc"), 100*time.Millisecond),
	}
	server.OnReport(c.onProxyReport)
	jo := opts.JWKS
	if jo.Log.GetSink() == nil {
		jo.Log = log.WithName("jwks")
	}
	jo.OnChange = c.rebuild
	c.jwks = jwks.New(jo)
	return c
}

// Update hands the controller a new snapshot of resources. It never blocks:
// if a build is running, the newest snapshot replaces any waiting one.
func (c *Controller) Update(res *resource.Resources) {
	c.mu.Lock()
	c.pending = res
	c.mu.Unlock()
	select {
	case c.updates <- struct{}{}:
	default:
	}
}

// Ready is closed after the first successful build.
func (c *Controller) Ready() <-chan struct{} { return c.ready }

// State returns the last build's outcome (nil before the first).
func (c *Controller) State() *State {
	c.stateMu.RLock()
	defer c.stateMu.RUnlock()
	return c.state
}

// Run builds on every update and whenever a proxy of a new class connects,
// until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	fetched, collected := make(chan struct{}), make(chan struct{})
	go func() { c.jwks.Run(ctx); close(fetched) }()
	go func() { c.gc.Run(ctx); close(collected) }()
	defer func() { cancel(); <-fetched; <-collected }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.updates:
			// A signal can outlive the snapshot it announced: Update or
			// rebuild stores pending, this loop takes it on an earlier
			// signal, and the later signal finds pending nil. Keep the
			// last snapshot then; taking the nil would stop every later
			// rebuild (proxy reports) for good.
			c.mu.Lock()
			if c.pending != nil {
				c.last, c.pending = c.pending, nil
			}
			c.mu.Unlock()
		case <-c.xds.Changed():
		}
		if c.last == nil {
			continue // a proxy connected before any configuration arrived
		}
		mark := c.gc.Begin()
		c.build(ctx, c.last)
		c.gc.End(mark, 0)
	}
}

func (c *Controller) classes() []map[string]string {
	seen := map[string]bool{}
	var out []map[string]string
	all := append(append([]map[string]string(nil), c.opts.StaticClasses...), c.xds.Classes()...)
	if c.opts.ExtraClasses != nil {
		all = append(all, c.opts.ExtraClasses()...)
	}
	for _, l := range all {
		if n := gateway.ClassName(l); !seen[n] {
			seen[n] = true
			out = append(out, l)
		}
	}
	return out
}

func (c *Controller) build(ctx context.Context, res *resource.Resources) {
	start := time.Now()
	classes := c.classes()
	wanted := map[string]bool{}
	for _, l := range classes {
		wanted[gateway.ClassName(l)] = true
	}
	att, excluded := c.isolate(res, classes, wanted)
	c.jwks.Prune()                        // key sets no RequestAuthentication names any more
	result := c.annotate(att.result, res) // what proxies report they cannot serve
	result = withTelemetryStatuses(result, res, att.telemetry)
	bound := att.bound
	st := &State{Resources: res, Result: result, Errors: map[string]string{}, Versions: map[string]string{}, BuiltAt: start,
		Excluded: map[string]string{}}
	for key, m := range excluded {
		st.Excluded[key.String()] = m.Message
	}
	c.logExclusions(excluded)
	published := 0
	for _, p := range result.Proxies {
		if !wanted[p.Name] {
			continue // no proxy of this class exists; bound only for status
		}
		if err := att.errs[p.Name]; err != nil {
			st.Errors[p.Name] = err.Error()
			c.metrics.errors.Inc()
			c.log.Error(err, "configuration not published; the previous one keeps serving", "class", p.Name)
			continue
		}
		c.xds.SetSecretOrigins(p.Name, secretOrigins(p))
		snap, err := c.xds.Commit(ctx, att.prepared[p.Name])
		if err != nil {
			st.Errors[p.Name] = err.Error()
			c.metrics.errors.Inc()
			c.log.Error(err, "configuration not published; the previous one keeps serving", "class", p.Name)
			continue
		}
		c.log.V(1).Info("published", "class", p.Name, "version", snap.Version())
		st.Versions[p.Name] = snap.Version()
		c.metrics.pushes.Inc()
		published++
	}
	c.xds.Forget(wanted)
	for class := range c.translators {
		if !wanted[class] {
			delete(c.translators, class)
		}
	}
	st.Duration = time.Since(start)
	st.Published = len(st.Errors) == 0
	c.metrics.bind.Observe(bound.Sub(start).Seconds())
	c.metrics.build.Observe(st.Duration.Seconds())
	c.metrics.resources.Set(float64(res.Len()))
	c.stateMu.Lock()
	c.state = st
	c.stateMu.Unlock()
	if c.sink != nil {
		c.sink.Update(ctx, result)
	}
	c.log.V(1).Info("configuration built", "classes", published, "resources", res.Len(), "duration", st.Duration,
		"bind", bound.Sub(start), "translate", att.translating, "prepare", att.preparing, "attempts", att.attempts)
	if published > 0 || len(wanted) == 0 {
		c.once.Do(func() { close(c.ready) })
	}
}

// logExclusions logs the resources left out because Envoy would reject
// what they make, when that set changes.
func (c *Controller) logExclusions(excluded map[resource.Key]status.Message) {
	same := len(excluded) == len(c.lastExcluded)
	for k, m := range excluded {
		if old, ok := c.lastExcluded[k]; !ok || old != m {
			same = false
		}
	}
	if same {
		return
	}
	for k, m := range excluded {
		if old, ok := c.lastExcluded[k]; !ok || old != m {
			c.log.Error(nil, "resource not used: the Envoy configuration made from it breaks Envoy's validation rules; everything else is published",
				"resource", k.String(), "message", m.Message)
		}
	}
	for k := range c.lastExcluded {
		if _, ok := excluded[k]; !ok {
			c.log.Info("resource used again: its configuration passes Envoy's validation rules", "resource", k.String())
		}
	}
	c.lastExcluded = excluded
}

// secretOrigins names the namespaces of the Kubernetes Secrets each SDS
// secret was read from, so the xDS server serves a secret only to proxies
// of that namespace (pkg/xds/access.go).
func secretOrigins(p *ir.Proxy) xds.SecretOrigins {
	out := xds.SecretOrigins{}
	for _, s := range p.Secrets {
		for _, ref := range s.Sources {
			ns := ref.Namespace
			if s.GrantedTo != "" {
				// Read from another namespace under a ReferenceGrant to
				// the Gateway's: served to proxies there.
				ns = s.GrantedTo
			}
			if ref.Kind == resource.KindSecret && !slices.Contains(out[s.Name], ns) {
				out[s.Name] = append(out[s.Name], ns)
			}
		}
	}
	return out
}
