// Package filters defines what the connection manager's HTTP filters
// (jwt_authn, rbac, local_ratelimit) see of a request and how they answer,
// so each filter lives in its own package and the connection manager runs
// any sequence of them in the configured order.
package filters

import (
	"net/netip"
	"time"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/pkg/proxy/accesslog"
	"github.com/portico-gateway/portico/pkg/proxy/httpx"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

// Stream is one request as HTTP filters see it. Filters may change Req's
// headers (what goes upstream) and Metadata.
type Stream struct {
	Req *httpx.Request
	// Client is Envoy's "downstream remote address": the address the
	// connection manager trusts as the client's (from x-forwarded-for with
	// xff_num_trusted_hops, else the peer).
	Client netip.Addr
	// Local is the connection's local address with the port the listener
	// is configured with (what destination_port rules name).
	Local netip.AddrPort
	// Route holds the matched route's per-filter configuration.
	Route Route
	// Metadata is the request's dynamic metadata: filter namespace → key
	// → JSON-like value (map[string]any, []any, string, float64, bool,
	// nil). Values are shared with caches: never modify one.
	Metadata map[string]map[string]any
}

// SetMetadata stores a dynamic metadata value.
func (s *Stream) SetMetadata(namespace, key string, v any) {
	if s.Metadata == nil {
		s.Metadata = map[string]map[string]any{}
	}
	ns := s.Metadata[namespace]
	if ns == nil {
		ns = map[string]any{}
		s.Metadata[namespace] = ns
	}
	ns[key] = v
}

// Route gives a filter the most specific per-filter configuration of the
// matched route (the route's own, else its virtual host's), or nil.
type Route interface {
	PerFilterConfig(filter string) any
}

// Reply is a local reply that ends the request.
type Reply struct {
	Status  int
	Body    string
	Headers []httpx.Field
	// Flags are the access log response flags the reply sets.
	Flags accesslog.Flags
}

// HTTP is an HTTP filter instance.
type HTTP interface {
	// Decode runs on the request head; a non-nil reply ends the request.
	Decode(s *Stream) *Reply
}

// Env is what a filter instance is bound to.
type Env struct {
	Stats *stats.Store
	// StatPrefix is the connection manager's stat_prefix.
	StatPrefix string
	Log        logr.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// HTTPFactory is a compiled filter configuration; the connection manager
// makes one instance per handler (so state such as a verified-token cache
// lives as long as the configuration that built it).
type HTTPFactory interface {
	// Name is the filter's name (envoy.filters.http.*).
	Name() string
	New(env Env) HTTP
}
