// Package xds serves Envoy configuration over gRPC with go-control-plane:
// one validated snapshot per class of proxies (proxies with the same
// labels), the aggregated stream in both state-of-the-world and delta
// flavours, and a registry of connected proxies with what they acknowledged.
package xds

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	sotwserver "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds/auth"
)

// Node metadata keys, as Istio's proxies send them.
const (
	MetadataLabels    = "LABELS"
	MetadataNamespace = "NAMESPACE"
)

// NodeLabels reads a proxy's labels from its node metadata.
func NodeLabels(n *corev3.Node) map[string]string {
	out := map[string]string{}
	for k, v := range n.GetMetadata().GetFields()[MetadataLabels].GetStructValue().GetFields() {
		out[k] = v.GetStringValue()
	}
	return out
}

// ClassFunc names the class of a label set (gateway.ClassName).
type ClassFunc func(labels map[string]string) string

// Server is the xDS server.
type Server struct {
	log   logr.Logger
	cache cachev3.SnapshotCache
	// pieces is shared by the cache and the gRPC codec (codec.go).
	pieces    *pieceTable
	className ClassFunc

	mu sync.Mutex
	// nodes by cache key (the node ID); streams by kind and ID:
	// go-control-plane numbers state-of-the-world and delta streams with
	// separate counters, so a bare ID names two streams.
	nodes     map[string]*nodeState
	streams   map[streamKey]*stream
	published map[string]*Snapshot // by class
	memos     map[string]*memo     // by class, for the next snapshot
	classes   map[string]map[string]string
	// origins of each class's kubernetes:// secrets (and those for its
	// next snapshot), and the filtered snapshots proxies are given.
	origins, pendingOrigins map[string]SecretOrigins
	views                   map[viewKey]*cachev3.Snapshot
	// authz authorizes identities that are not trusted (nil: refuse them).
	authz auth.Authorizer
	// refusals logs refused proxies, rate-limited.
	refusals *auth.RateLimitedLog
	// changed is signalled (never blocking) when a proxy of a class with no
	// snapshot connects, so the controller builds that class.
	changed chan struct{}
	// onReport hears NACKs and the ACKs that end them (see OnReport).
	onReport func(ProxyReport)
}

// Node is what the server knows about one connected proxy.
type Node struct {
	ID          string            `json:"id"`
	Cluster     string            `json:"cluster,omitempty"`
	Class       string            `json:"class"`
	Labels      map[string]string `json:"labels,omitempty"`
	Streams     int               `json:"streams"`
	ConnectedAt time.Time         `json:"connected_at"`
	// Acked and Nacked hold, per type URL, the last version the proxy
	// accepted and the last error it reported.
	Acked  map[string]string `json:"acked,omitempty"`
	Nacked map[string]string `json:"nacked,omitempty"`
	// Sent is the class snapshot version last given to the proxy.
	Sent string `json:"sent,omitempty"`
	// Namespace is the proxy's verified namespace and Identity how it
	// authenticated (e.g. its service account and pod).
	Namespace string `json:"namespace,omitempty"`
	Identity  string `json:"identity,omitempty"`
	// Version is the build version the proxy reports
	// (node.user_agent_build_version): istioctl version's data plane
	// version.
	Version string `json:"version,omitempty"`
}

// NewServer returns a server with an empty cache.
func NewServer(log logr.Logger, className ClassFunc) *Server {
	s := &Server{
		log:       log,
		className: className,
		nodes:     map[string]*nodeState{},
		streams:   map[streamKey]*stream{},
		published: map[string]*Snapshot{},
		memos:     map[string]*memo{},
		classes:   map[string]map[string]string{},
		origins:   map[string]SecretOrigins{}, pendingOrigins: map[string]SecretOrigins{},
		views:    map[viewKey]*cachev3.Snapshot{},
		refusals: auth.NewRateLimitedLog(log),
		changed:  make(chan struct{}, 1),
	}
	dc := newDeltaCache(cachev3.NewSnapshotCache(true, cachev3.IDHash{}, cacheLogger{log.WithName("cache")}), cachev3.IDHash{})
	dc.pieces = &pieceTable{}
	s.cache, s.pieces = dc, dc.pieces
	return s
}

// Changed is signalled when a proxy of an unbuilt class connects.
func (s *Server) Changed() <-chan struct{} { return s.changed }

// Classes returns the label sets of connected proxies.
func (s *Server) Classes() []map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.classes))
	for n := range s.classes {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]map[string]string, 0, len(names))
	for _, n := range names {
		out = append(out, maps.Clone(s.classes[n]))
	}
	return out
}

// Nodes returns a copy of the registry, sorted by ID.
func (s *Server) Nodes() []Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Node, 0, len(s.nodes))
	for _, n := range s.nodes {
		c := n.Node
		c.Labels, c.Acked, c.Nacked = maps.Clone(n.Labels), maps.Clone(n.Acked), maps.Clone(n.Nacked)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Snapshot returns the snapshot last published for a class.
func (s *Server) Snapshot(class string) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap, ok := s.published[class]
	if !ok {
		return nil, ErrNoSnapshot
	}
	return snap, nil
}

// Publish validates resources for a class and, if they are valid, hands
// them to every proxy of the class. An invalid set is never published: the
// error names the offending resource and its sources, and the previous
// snapshot keeps serving.
func (s *Server) Publish(ctx context.Context, class string, res *translate.Resources) (*Snapshot, error) {
	p, err := s.Prepare(class, res)
	if err != nil {
		return nil, err
	}
	return s.Commit(ctx, p)
}

// Commit publishes a snapshot Prepare made.
func (s *Server) Commit(ctx context.Context, p *Prepared) (*Snapshot, error) {
	class, snap := p.class, p.snap
	s.mu.Lock()
	defer s.mu.Unlock()
	s.memos[class] = p.next
	if old, ok := s.published[class]; ok && old.Version() == snap.Version() {
		if !s.adoptOrigins(class) {
			return old, nil
		}
		snap = old // the same content read from elsewhere: what each proxy may see changes
	} else {
		s.adoptOrigins(class)
	}
	s.published[class] = snap
	s.forgetViews(class)
	for _, n := range s.nodes {
		if n.Class == class {
			if err := s.setSnapshot(ctx, n, snap); err != nil {
				return nil, err
			}
		}
	}
	return snap, nil
}

// Forget drops snapshots of classes no longer built.
func (s *Server) Forget(keep map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for class := range s.published {
		if !keep[class] && !s.hasNodes(class) {
			delete(s.published, class)
			delete(s.memos, class)
			delete(s.origins, class)
			s.forgetViews(class)
		}
	}
}

func (s *Server) hasNodes(class string) bool {
	for _, n := range s.nodes {
		if n.Class == class {
			return true
		}
	}
	return false
}

// record notes an ACK or NACK from a proxy. A state-of-the-world ACK
// carries the version it accepts; a delta ACK only the nonce, which names
// what was sent.
func (s *Server) record(key streamKey, typeURL, version, nonce string, errDetail string) {
	if nonce == "" {
		return // initial request, not a response to anything
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	if st == nil || st.node == nil {
		return
	}
	n := st.node
	var sent *sentResponse
	for i := range st.sent[typeURL] {
		if st.sent[typeURL][i].nonce == nonce {
			sent = &st.sent[typeURL][i]
		}
	}
	if errDetail != "" {
		if n.Nacked[typeURL] != errDetail {
			s.notifyReport(&n.Node, typeURL, errDetail)
		}
		n.Nacked[typeURL] = errDetail
		s.log.Info("proxy rejected configuration (NACK)", "node", n.ID, "type", typeURL, "error", errDetail)
		return
	}
	t := n.typ(typeURL)
	t.delta = key.delta
	if key.delta && sent != nil { // else an ACK of a response too old to remember
		version = sent.version
		maps.Copy(t.acked, sent.resources)
		for _, name := range sent.removed {
			delete(t.acked, name)
		}
	}
	n.Acked[typeURL] = version
	if _, was := n.Nacked[typeURL]; was {
		delete(n.Nacked, typeURL)
		s.notifyReport(&n.Node, typeURL, "")
	}
}

// callbacks adapts the server to go-control-plane's stream callbacks.
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.open(ctx, streamKey{id: id})
			return nil
		},
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			key := streamKey{id: id}
			n, err := s.register(key, r.GetNode())
			if err != nil {
				return err
			}
			r.Node = n // served as verified, whatever the node claims
			s.checkSecretNames(key, r.GetTypeUrl(), r.GetResourceNames())
			s.record(key, r.GetTypeUrl(), r.GetVersionInfo(), r.GetResponseNonce(), r.GetErrorDetail().GetMessage())
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, r *discoveryv3.DiscoveryResponse) {
			s.responded(streamKey{id: id}, r.GetTypeUrl(), sentResponse{nonce: r.GetNonce(), version: r.GetVersionInfo()})
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) { s.unregister(streamKey{id: id}) },
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.open(ctx, streamKey{delta: true, id: id})
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			key := streamKey{delta: true, id: id}
			n, err := s.register(key, r.GetNode())
			if err != nil {
				return err
			}
			r.Node = n
			s.checkSecretNames(key, r.GetTypeUrl(), r.GetResourceNamesSubscribe())
			s.subscribe(key, r)
			s.record(key, r.GetTypeUrl(), "", r.GetResponseNonce(), r.GetErrorDetail().GetMessage())
			return nil
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			sent := sentResponse{nonce: r.GetNonce(), version: r.GetSystemVersionInfo(), resources: map[string]string{}, removed: r.GetRemovedResources()}
			for _, res := range r.GetResources() {
				sent.resources[res.GetName()] = res.GetVersion()
			}
			s.responded(streamKey{delta: true, id: id}, r.GetTypeUrl(), sent)
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.unregister(streamKey{delta: true, id: id}) },
		// A unary fetch names its node in every request, so it could name
		// another proxy's: only trusted identities may use it.
		FetchRequestFunc: func(ctx context.Context, _ *discoveryv3.DiscoveryRequest) error {
			if id, ok := auth.FromContext(ctx); !ok || !id.Trusted {
				return status.Error(codes.PermissionDenied, "fetching is not allowed: open a stream")
			}
			return nil
		},
	}
}

// registerServices adds the ADS and per-type discovery services to a gRPC server
// whose interceptors put an auth.Identity in every stream's context.
func (s *Server) registerServices(ctx context.Context, g *grpc.Server) {
	// go-control-plane's servers log nothing unless given a logger.
	x := serverv3.NewServer(ctx, s.cache, s.callbacks(), sotwserver.WithLogger(cacheLogger{s.log.WithName("server")}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, x)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, x)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, x)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, x)
	routeservice.RegisterRouteDiscoveryServiceServer(g, x)
	secretservice.RegisterSecretDiscoveryServiceServer(g, x)
}

// ServeOptions secure one listener of the xDS server.
type ServeOptions struct {
	// TLS serves TLS; nil serves plaintext. To require client
	// certificates, set ClientAuth and ClientCAs.
	TLS *tls.Config
	// Authenticator proves each stream's identity, refusing the stream
	// (Unauthenticated) if it cannot; nil trusts every peer, which is only
	// right for a listener nobody else can reach (loopback in standalone
	// mode, tests).
	Authenticator auth.Authenticator
	// Authorizer decides what identities that are not trusted are served
	// (Kubernetes mode); without one they are refused.
	Authorizer auth.Authorizer
}

// newGRPCServer returns a gRPC server tuned for long-lived xDS streams.
func newGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(100000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
	}, opts...)...)
}

// Serve runs the xDS gRPC server on lis, trusting every peer (see
// ServeOptions), until ctx ends.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	return s.ServeWith(ctx, lis, ServeOptions{})
}

// ServeWith runs the xDS gRPC server on lis, secured as o says, until ctx
// ends. A server may serve several listeners.
func (s *Server) ServeWith(ctx context.Context, lis net.Listener, o ServeOptions) error {
	a := o.Authenticator
	if a == nil {
		a = auth.Local()
	}
	if o.Authorizer != nil {
		s.mu.Lock()
		s.authz = o.Authorizer
		s.mu.Unlock()
	}
	opts := auth.Interceptors(a, s.log)
	if o.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	opts = append(opts, grpc.ForceServerCodecV2(newServerCodec(s.pieces)))
	g := newGRPCServer(opts...)
	s.registerServices(ctx, g)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { g.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			g.Stop()
		}
		return nil
	case err := <-errc:
		return fmt.Errorf("xds server: %w", err)
	}
}

// cacheLogger routes go-control-plane's logging through logr at levels
// that keep its warnings and errors visible at the default level, and its
// chatter (a line per watch and response) out of it.
type cacheLogger struct{ log logr.Logger }

func (l cacheLogger) Debugf(format string, args ...any) {
	l.log.V(2).Info(fmt.Sprintf(format, args...))
}
func (l cacheLogger) Infof(format string, args ...any) { l.log.V(1).Info(fmt.Sprintf(format, args...)) }
func (l cacheLogger) Warnf(format string, args ...any) {
	l.log.Info(fmt.Sprintf(format, args...), "severity", "warning")
}
func (l cacheLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Errorf(format, args...), "xds cache")
}
