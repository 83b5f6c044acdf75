package xds

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/portico-gateway/portico/pkg/xds/auth"
)

// streamKey names a stream: go-control-plane counts state-of-the-world and
// delta streams separately, so stream 1 exists once of each kind.
type streamKey struct {
	delta bool
	id    int64
}

func (k streamKey) String() string {
	if k.delta {
		return fmt.Sprintf("delta/%d", k.id)
	}
	return fmt.Sprintf("sotw/%d", k.id)
}

// stream is one open xDS stream.
type stream struct {
	key streamKey
	ctx context.Context
	// identity is what the stream's credentials proved (identified: at all).
	identity   auth.Identity
	identified bool
	// node is set by the stream's first request, once authorized; every
	// request is served as verified (the node with its cache key as id).
	node     *nodeState
	verified *corev3.Node
	// sent remembers, per type, what recent responses carried by nonce: a
	// delta ACK names only the nonce.
	sent map[string][]sentResponse
}

// sentResponse is what one response carried.
type sentResponse struct {
	nonce   string
	version string
	// delta only: resources sent (name → version) and removed.
	resources map[string]string
	removed   []string
}

// sentPerType bounds the responses remembered per type and stream: a
// client answers every response, in order, so only the last few matter.
const sentPerType = 8

// nodeState is a registered proxy: what Nodes() reports, plus what the
// server needs to say whether it is in sync.
type nodeState struct {
	Node
	key   string
	grant auth.Grant
	// current is the snapshot last set for the node in the cache.
	current *cachev3.Snapshot
	// types holds, per type URL, what was sent and acknowledged.
	types map[string]*typeStatus
}

// typeStatus is one node's progress on one type.
type typeStatus struct {
	sent bool
	// delta is set when the last ACK came over a delta stream: then acked
	// holds resource versions, compared within the subscription.
	delta    bool
	acked    map[string]string
	wildcard bool
	names    map[string]bool
}

func (n *nodeState) typ(typeURL string) *typeStatus {
	t := n.types[typeURL]
	if t == nil {
		t = &typeStatus{acked: map[string]string{}, names: map[string]bool{}}
		n.types[typeURL] = t
	}
	return t
}

// open records a new stream with the identity its credentials proved.
func (s *Server) open(ctx context.Context, key streamKey) {
	id, ok := auth.FromContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[key] = &stream{key: key, ctx: ctx, identity: id, identified: ok, sent: map[string][]sentResponse{}}
}

// authorizeTimeout bounds the API calls that authorize one stream.
const authorizeTimeout = 10 * time.Second

// register authorizes the proxy on the first request of a stream and
// records it; it returns the node every request of the stream is served
// as. Later requests keep the node the stream started with.
func (s *Server) register(key streamKey, node *corev3.Node) (*corev3.Node, error) {
	s.mu.Lock()
	st := s.streams[key]
	if st == nil {
		s.mu.Unlock()
		return nil, status.Errorf(codes.Internal, "stream %s was not opened", key)
	}
	if st.node != nil {
		defer s.mu.Unlock()
		return st.verified, nil
	}
	authz := s.authz
	s.mu.Unlock()
	if node.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "the first request of a stream must carry the node, with an id")
	}
	claim := claimOf(node)
	var grant auth.Grant
	var err error
	switch {
	case !st.identified:
		err = errors.New("the stream was not authenticated")
	case st.identity.Trusted:
		grant = auth.TrustedGrant(claim)
	case authz == nil:
		err = fmt.Errorf("%w: no authorizer for %s", auth.ErrDenied, st.identity)
	default:
		ctx, cancel := context.WithTimeout(st.ctx, authorizeTimeout)
		grant, err = authz.Authorize(ctx, st.identity, claim)
		cancel()
	}
	if err != nil {
		s.refusals.Error(err, "xDS client refused: not authorized", "node", node.GetId(), "identity", st.identity.String(), "stream", key.String())
		if errors.Is(err, auth.ErrDenied) {
			return nil, status.Errorf(codes.PermissionDenied, "authorization failed: %v", err)
		}
		return nil, status.Errorf(codes.Unavailable, "authorization failed: %v", err)
	}
	verified := proto.Clone(node).(*corev3.Node)
	verified.Id = grant.Key

	s.mu.Lock()
	defer s.mu.Unlock()
	st.verified = verified
	n, ok := s.nodes[grant.Key]
	if ok {
		n.Streams++
		st.node = n
		return verified, nil
	}
	labels := grant.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	class := s.className(labels)
	n = &nodeState{Node: Node{ID: node.GetId(), Cluster: node.GetCluster(), Class: class, Labels: labels, Streams: 1,
		ConnectedAt: time.Now(), Acked: map[string]string{}, Nacked: map[string]string{},
		Namespace: grant.Namespace, Identity: st.identity.String(), Version: buildVersion(node)},
		key: grant.Key, grant: grant, types: map[string]*typeStatus{}}
	s.nodes[n.key] = n
	st.node = n
	s.log.Info("proxy connected", "node", n.ID, "class", class, "identity", n.Identity, "stream", key.String())
	if _, known := s.classes[class]; !known {
		s.classes[class] = labels
	}
	if snap, ok := s.published[class]; ok {
		if err := s.setSnapshot(context.Background(), n, snap); err != nil {
			s.log.Error(err, "setting snapshot", "node", n.ID)
		}
		return verified, nil
	}
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return verified, nil
}

// claimOf reads what a node says about itself.
func claimOf(node *corev3.Node) auth.Claim {
	fields := node.GetMetadata().GetFields()
	_, hasLabels := fields[MetadataLabels]
	return auth.Claim{NodeID: node.GetId(), Namespace: fields[MetadataNamespace].GetStringValue(), Labels: NodeLabels(node), HasLabels: hasLabels}
}

// checkSecretNames logs a proxy asking for secrets of its class that it
// may not receive (they are not in its view, so the cache never sends
// them), as istiod warns of unauthorized certificate requests.
func (s *Server) checkSecretNames(key streamKey, typeURL string, names []string) {
	if typeURL != resourcev3.SecretType || len(names) == 0 {
		return
	}
	s.mu.Lock()
	st := s.streams[key]
	if st == nil || st.node == nil || st.node.current == nil || st.node.grant.AllSecrets {
		s.mu.Unlock()
		return
	}
	n := st.node
	have := n.current.GetResourcesAndTTL(typeURL)
	var denied []string
	for _, name := range names {
		if _, ok := have[name]; !ok {
			denied = append(denied, name)
		}
	}
	s.mu.Unlock()
	if len(denied) > 0 {
		sort.Strings(denied)
		s.refusals.Error(fmt.Errorf("%w: secrets %s", auth.ErrDenied, strings.Join(denied, ", ")),
			"proxy asked for secrets it may not receive (or that do not exist); they are not sent", "node", n.ID, "identity", n.Identity)
	}
}

// setSnapshot hands a node its class's snapshot. Call with s.mu held.
func (s *Server) setSnapshot(ctx context.Context, n *nodeState, snap *Snapshot) error {
	view := s.view(n.Class, snap, n.grant)
	if err := s.cache.SetSnapshot(ctx, n.key, view); err != nil {
		return fmt.Errorf("setting snapshot for %s: %w", n.ID, err)
	}
	n.current = view
	n.Sent = snap.Version()
	return nil
}

func (s *Server) unregister(key streamKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[key]
	if !ok {
		return
	}
	delete(s.streams, key)
	n := st.node
	if n == nil {
		return
	}
	n.Streams--
	if n.Streams > 0 {
		return
	}
	delete(s.nodes, n.key)
	for typ := range n.Nacked {
		s.notifyReport(&n.Node, typ, "") // a proxy that left rejects nothing
	}
	s.cache.ClearSnapshot(n.key)
	s.log.Info("proxy disconnected", "node", n.ID, "class", n.Class)
	if !s.hasNodes(n.Class) {
		delete(s.classes, n.Class)
	}
}

// subscribe tracks a delta stream's subscription to a type, as
// go-control-plane interprets it: a first request naming nothing is a
// wildcard, "*" subscribes to everything.
func (s *Server) subscribe(key streamKey, r *discoveryv3.DeltaDiscoveryRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	if st == nil || st.node == nil {
		return
	}
	t := st.node.typ(r.GetTypeUrl())
	if _, seen := st.sent[r.GetTypeUrl()]; !seen {
		// A new stream's first request for the type: the proxy holds what
		// it says it holds, and subscribes afresh.
		st.sent[r.GetTypeUrl()] = nil
		t.acked = maps.Clone(r.GetInitialResourceVersions())
		if t.acked == nil {
			t.acked = map[string]string{}
		}
		t.names = map[string]bool{}
		t.wildcard = len(r.GetResourceNamesSubscribe()) == 0
	}
	for _, name := range r.GetResourceNamesSubscribe() {
		if name == "*" {
			t.wildcard = true
			continue
		}
		t.names[name] = true
	}
	for _, name := range r.GetResourceNamesUnsubscribe() {
		if name == "*" {
			t.wildcard = false
			continue
		}
		delete(t.names, name)
		delete(t.acked, name)
	}
}

// responded remembers what a response carried.
func (s *Server) responded(key streamKey, typeURL string, sent sentResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[key]
	if st == nil || st.node == nil {
		return
	}
	st.node.typ(typeURL).sent = true
	list := append(st.sent[typeURL], sent)
	if len(list) > sentPerType {
		list = list[len(list)-sentPerType:]
	}
	st.sent[typeURL] = list
}

// Per-type sync states, as `istioctl proxy-status` prints them.
const (
	StatusSynced  = "SYNCED"
	StatusStale   = "STALE"
	StatusNacked  = "STALE (NACKED)"
	StatusNotSent = "NOT SENT"
)

// ProxyStatus is one connected proxy's sync state (`istioctl proxy-status`).
type ProxyStatus struct {
	ID    string `json:"id"`
	Class string `json:"class"`
	// Namespace and Identity: what the proxy proved (see auth.Identity).
	Namespace string `json:"namespace,omitempty"`
	Identity  string `json:"identity,omitempty"`
	// Types maps the short type name (Cluster, Listener, …) to SYNCED,
	// STALE, STALE (NACKED) or NOT SENT.
	Types map[string]string `json:"types"`
	// Sent is the version of the class snapshot the proxy was given.
	Sent   string            `json:"sent"`
	Nacked map[string]string `json:"nacked,omitempty"`
	// Version is the proxy's build version, as it reports it.
	Version string `json:"version,omitempty"`
}

// statusTypes are the types proxy-status reports.
var statusTypes = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType}

// wireVersions returns the versions delta responses carry for a
// snapshot's resources of a type, which is what a delta ACK acknowledges:
// the delta cache sends the snapshot's own versions (see deltaCache).
func (s *Server) wireVersions(snap *cachev3.Snapshot, typeURL string) map[string]string {
	return snap.GetVersionMap(typeURL)
}

// ShortType is a type URL's last component: "Cluster", "Listener", ….
func ShortType(typeURL string) string { return typeURL[strings.LastIndex(typeURL, ".")+1:] }

// ProxyStatus reports every connected proxy, sorted by ID (an empty, non-nil
// list when none is connected). A type is SYNCED when the proxy ACKed what
// it is meant to have now: the current version (state of the world), or
// the current version of every resource it subscribes to (delta, whose
// ACKs carry no version); STALE when something newer was sent or is
// pending; NOT SENT when nothing of the type was sent.
func (s *Server) ProxyStatus() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.nodes))
	for _, n := range s.nodes {
		ps := ProxyStatus{ID: n.ID, Class: n.Class, Namespace: n.Namespace, Identity: n.Identity, Version: n.Version, Sent: n.Sent, Types: map[string]string{}, Nacked: maps.Clone(n.Nacked)}
		for _, typ := range statusTypes {
			ps.Types[ShortType(typ)] = n.syncState(typ, s.wireVersions)
		}
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (n *nodeState) syncState(typeURL string, wire func(*cachev3.Snapshot, string) map[string]string) string {
	t := n.types[typeURL]
	switch {
	case n.current == nil || t == nil || !t.sent:
		return StatusNotSent
	case n.Nacked[typeURL] != "":
		return StatusNacked
	case !t.delta:
		if n.Acked[typeURL] == n.current.GetVersion(typeURL) {
			return StatusSynced
		}
		return StatusStale
	}
	want := wire(n.current, typeURL)
	in := func(name string) bool { return t.wildcard || t.names[name] }
	for name, v := range want {
		if in(name) && t.acked[name] != v {
			return StatusStale
		}
	}
	for name := range t.acked {
		if _, ok := want[name]; !ok && in(name) {
			return StatusStale // removed, and the removal not yet ACKed
		}
	}
	return StatusSynced
}
