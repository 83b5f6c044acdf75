package rbac

import (
	"fmt"
	"strings"

	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/pkg/proxy/filters"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// Names of the filters.
const (
	HTTPName    = "envoy.filters.http.rbac"
	NetworkName = "envoy.filters.network.rbac"
)

// DeniedBody is Envoy's 403 body.
const DeniedBody = "RBAC: access denied"

// HTTPConfig is a compiled HTTP RBAC filter.
type HTTPConfig struct {
	engine *Engine
}

// CompileHTTP compiles envoy.extensions.filters.http.rbac.v3.RBAC. Only
// rules are enforced; shadow rules, matchers and per-rule stats are
// refused (pkg/proxy/supported NACKs them before this).
func CompileHTTP(m *httprbacv3.RBAC) (*HTTPConfig, error) {
	if m.Rules == nil {
		return nil, fmt.Errorf("rbac: rules are required (an absent rules field would allow everything silently)")
	}
	e, err := compileEngine(m.Rules, false)
	if err != nil {
		return nil, fmt.Errorf("rbac: %w", err)
	}
	return &HTTPConfig{engine: e}, nil
}

// Name implements filters.HTTPFactory.
func (c *HTTPConfig) Name() string { return HTTPName }

// New implements filters.HTTPFactory.
func (c *HTTPConfig) New(env filters.Env) filters.HTTP {
	sc := stats.HTTPScope(env.StatPrefix)
	return &HTTPFilter{engine: c.engine, log: env.Log,
		allowed: env.Stats.Counter(sc, "rbac.allowed"), denied: env.Stats.Counter(sc, "rbac.denied")}
}

// HTTPFilter is an HTTP RBAC instance.
type HTTPFilter struct {
	engine          *Engine
	log             logr.Logger
	allowed, denied *stats.Counter
}

// Decode implements filters.HTTP.
func (f *HTTPFilter) Decode(s *filters.Stream) *filters.Reply {
	req := s.Req
	a := Attrs{Req: req, Peer: req.RemoteAddr.Addr().Unmap(), Client: s.Client, Local: s.Local, Metadata: s.Metadata}
	if req.TLS != nil {
		a.SNI = req.TLS.ServerName
		if len(req.TLS.PeerCertificates) > 0 {
			a.Cert = req.TLS.PeerCertificates[0]
		}
	}
	ok, policy := f.engine.Evaluate(&a)
	if f.engine.action == Log && policy != "" {
		// Istio's AUDIT: Envoy marks the request for the access log; the
		// proxy logs it.
		f.log.Info("rbac audit", "policy", policy, "method", req.Method, "path", req.Path(),
			"authority", req.Authority, "client", s.Client.String())
	}
	if ok {
		f.allowed.Inc()
		return nil
	}
	f.denied.Inc()
	return &filters.Reply{Status: 403, Body: DeniedBody}
}

// Network is a compiled network RBAC filter.
type Network struct {
	engine *Engine
	prefix string
}

// CompileNetwork compiles envoy.extensions.filters.network.rbac.v3.RBAC.
// The rules may only use connection attributes.
func CompileNetwork(m *netrbacv3.RBAC) (*Network, error) {
	if m.Rules == nil {
		return nil, fmt.Errorf("network rbac: rules are required")
	}
	e, err := compileEngine(m.Rules, true)
	if err != nil {
		return nil, fmt.Errorf("network rbac: %w", err)
	}
	prefix := m.StatPrefix
	if prefix != "" && !strings.HasSuffix(prefix, ".") {
		prefix += "."
	}
	return &Network{engine: e, prefix: prefix + "rbac"}, nil
}

// NetworkFilter is a network RBAC instance bound to stats.
type NetworkFilter struct {
	engine          *Engine
	allowed, denied *stats.Counter
}

// New binds the filter to a stats store: <stat_prefix>.rbac.allowed|denied.
func (n *Network) New(store *stats.Store) *NetworkFilter {
	sc := stats.Plain(n.prefix)
	return &NetworkFilter{engine: n.engine, allowed: store.Counter(sc, "allowed"), denied: store.Counter(sc, "denied")}
}

// Allow evaluates a connection and counts the decision.
func (f *NetworkFilter) Allow(a *Attrs) bool {
	ok, _ := f.engine.Evaluate(a)
	if ok {
		f.allowed.Inc()
	} else {
		f.denied.Inc()
	}
	return ok
}
