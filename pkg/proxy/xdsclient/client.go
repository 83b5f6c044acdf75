// Package xdsclient is the proxy's aggregated xDS client. It speaks delta
// xDS (preferred) or state of the world over one ADS stream, keeps the full
// accepted state of every type, hands each update to a Handler that applies
// or rejects it, ACKs or NACKs accordingly, and subscribes to endpoints,
// route configurations and secrets as the applied state asks for them. When
// the controller goes away it reconnects with jittered backoff; the proxy
// keeps serving what it has.
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource is one received resource.
type Resource struct {
	Name    string
	Version string
	Any     *anypb.Any
}

// Handler applies updates.
type Handler interface {
	// Update receives the complete accepted-plus-new set of a type. An
	// error rejects the update (NACK) and the previous set stays.
	Update(typeURL string, resources map[string]Resource, version string) error
	// Wanted returns the names of a type the applied state needs
	// (endpoints, route configurations, secrets).
	Wanted(typeURL string) []string
	// Connected reports the stream state.
	Connected(up bool)
}

// Options configure the client.
type Options struct {
	Address string
	Node    *corev3.Node
	// SOTW uses state-of-the-world instead of delta xDS.
	SOTW bool
	// Security authenticates the client and verifies the controller.
	Security    Security
	BackoffBase time.Duration
	BackoffMax  time.Duration
}

// Client is an ADS client.
type Client struct {
	opts    Options
	log     logr.Logger
	handler Handler

	mu    sync.Mutex
	state map[string]*typeState
	stats Stats
}

// Stats count protocol events.
type Stats struct {
	Connects, Disconnects, Acks, Nacks, Updates uint64
	Connected                                   bool
	LastError                                   string
}

type typeState struct {
	resources map[string]Resource
	version   string // SOTW accepted version
	nonce     string
	// subscribed names (non-wildcard types); wildcard types use nil.
	subscribed map[string]bool
	requested  bool
}

// Ordered so clusters and listeners (wildcards) go first; the rest are
// subscribed by name once something needs them.
var (
	wildcardTypes = []string{resourcev3.ClusterType, resourcev3.ListenerType}
	namedTypes    = []string{resourcev3.EndpointType, resourcev3.SecretType, resourcev3.RouteType}
)

// New returns a client.
func New(opts Options, handler Handler, log logr.Logger) *Client {
	if opts.BackoffBase == 0 {
		opts.BackoffBase = 250 * time.Millisecond
	}
	if opts.BackoffMax == 0 {
		opts.BackoffMax = 15 * time.Second
	}
	c := &Client{opts: opts, log: log, handler: handler, state: map[string]*typeState{}}
	for _, t := range append(append([]string(nil), wildcardTypes...), namedTypes...) {
		c.state[t] = &typeState{resources: map[string]Resource{}}
	}
	return c
}

// Stats returns a copy of the protocol counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Run connects and keeps reconnecting until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	secure, err := c.opts.Security.DialOptions(c.opts.Address)
	if err != nil {
		return fmt.Errorf("xds client for %s: %w", c.opts.Address, err)
	}
	conn, err := grpc.NewClient(c.opts.Address, append(secure,
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)),
	)...)
	if err != nil {
		return fmt.Errorf("xds client for %s: %w", c.opts.Address, err)
	}
	defer conn.Close()
	attempt := 0
	for {
		start := time.Now()
		var err error
		if c.opts.SOTW {
			err = c.runSOTW(ctx, conn)
		} else {
			err = c.runDelta(ctx, conn)
		}
		c.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		c.mu.Lock()
		c.stats.Disconnects++
		c.stats.LastError = errString(err)
		c.mu.Unlock()
		if time.Since(start) > time.Minute {
			attempt = 0 // the stream was healthy for a while
		}
		d := min(c.opts.BackoffBase<<min(attempt, 10), c.opts.BackoffMax)
		d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) // jitter: [d/2, d]
		attempt++
		c.log.Info("xDS stream ended; keeping the current configuration and reconnecting", "address", c.opts.Address, "error", errString(err), "retry_in", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (c *Client) setConnected(up bool) {
	c.mu.Lock()
	changed := c.stats.Connected != up
	c.stats.Connected = up
	if up {
		c.stats.Connects++
	}
	c.mu.Unlock()
	if changed {
		c.handler.Connected(up)
	}
}

// apply hands an update to the handler and records the outcome.
func (c *Client) apply(typeURL string, next map[string]Resource, version string) error {
	err := c.handler.Update(typeURL, next, version)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.stats.Nacks++
		c.stats.LastError = err.Error()
		return err
	}
	c.stats.Acks++
	c.stats.Updates++
	st := c.state[typeURL]
	st.resources = next
	st.version = version
	return nil
}

// wantedChanges returns, per named type, the names to add and remove.
func (c *Client) wantedChanges() map[string][2][]string {
	out := map[string][2][]string{}
	for _, t := range namedTypes {
		want := map[string]bool{}
		for _, n := range c.handler.Wanted(t) {
			want[n] = true
		}
		c.mu.Lock()
		st := c.state[t]
		var add, remove []string
		for n := range want {
			if !st.subscribed[n] {
				add = append(add, n)
			}
		}
		for n := range st.subscribed {
			if !want[n] {
				remove = append(remove, n)
			}
		}
		c.mu.Unlock()
		sort.Strings(add)
		sort.Strings(remove)
		if len(add) > 0 || len(remove) > 0 {
			out[t] = [2][]string{add, remove}
		}
	}
	return out
}

func (c *Client) runDelta(ctx context.Context, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	first := true
	send := func(r *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			r.Node, first = c.opts.Node, false
		}
		return stream.Send(r)
	}
	// Reset subscriptions: a new stream starts from nothing on the server,
	// but tells it which versions we hold so unchanged resources are not
	// sent again.
	c.mu.Lock()
	for _, st := range c.state {
		st.subscribed = map[string]bool{}
		st.requested = false
	}
	initial := map[string]map[string]string{}
	for t, st := range c.state {
		m := map[string]string{}
		for n, r := range st.resources {
			m[n] = r.Version
		}
		initial[t] = m
	}
	c.mu.Unlock()
	for _, t := range wildcardTypes {
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: initial[t]}); err != nil {
			return err
		}
	}
	subscribe := func() error {
		for t, ch := range c.wantedChanges() {
			req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: ch[0], ResourceNamesUnsubscribe: ch[1]}
			c.mu.Lock()
			st := c.state[t]
			if !st.requested {
				req.InitialResourceVersions = map[string]string{}
				for _, n := range ch[0] {
					if r, ok := st.resources[n]; ok {
						req.InitialResourceVersions[n] = r.Version
					}
				}
				st.requested = true
			}
			for _, n := range ch[0] {
				st.subscribed[n] = true
			}
			for _, n := range ch[1] {
				delete(st.subscribed, n)
				delete(st.resources, n)
			}
			c.mu.Unlock()
			if err := send(req); err != nil {
				return err
			}
		}
		return nil
	}
	if err := subscribe(); err != nil {
		return err
	}
	connected := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if !connected {
			connected = true
			c.setConnected(true)
		}
		t := resp.TypeUrl
		c.log.V(1).Info("received", "type", t, "resources", len(resp.Resources), "removed", len(resp.RemovedResources))
		c.mu.Lock()
		st, known := c.state[t]
		var next map[string]Resource
		if known {
			next = maps.Clone(st.resources)
		}
		c.mu.Unlock()
		if !known {
			if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.Nonce,
				ErrorDetail: &rpcstatus.Status{Message: "unsupported resource type " + t}}); err != nil {
				return err
			}
			continue
		}
		for _, r := range resp.Resources {
			if r.Resource == nil {
				continue
			}
			next[r.Name] = Resource{Name: r.Name, Version: r.Version, Any: r.Resource}
		}
		for _, n := range resp.RemovedResources {
			delete(next, n)
		}
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.Nonce}
		if err := c.apply(t, next, resp.SystemVersionInfo); err != nil {
			c.log.Error(err, "rejected configuration (NACK)", "type", t)
			ack.ErrorDetail = &rpcstatus.Status{Code: 3, Message: err.Error()}
		}
		if err := send(ack); err != nil {
			return err
		}
		if err := subscribe(); err != nil {
			return err
		}
	}
}

func (c *Client) runSOTW(ctx context.Context, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	first := true
	send := func(r *discoveryv3.DiscoveryRequest) error {
		if first {
			r.Node, first = c.opts.Node, false
		}
		return stream.Send(r)
	}
	c.mu.Lock()
	for _, st := range c.state {
		st.subscribed, st.nonce, st.requested = map[string]bool{}, "", false
	}
	versions := map[string]string{}
	for t, st := range c.state {
		versions[t] = st.version
	}
	c.mu.Unlock()
	for _, t := range wildcardTypes {
		if err := send(&discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: versions[t]}); err != nil {
			return err
		}
	}
	subscribe := func() error {
		for t := range c.wantedChanges() {
			c.mu.Lock()
			st := c.state[t]
			st.subscribed = map[string]bool{}
			for _, n := range c.handler.Wanted(t) {
				st.subscribed[n] = true
			}
			names := slices.Sorted(maps.Keys(st.subscribed))
			req := &discoveryv3.DiscoveryRequest{TypeUrl: t, VersionInfo: st.version, ResponseNonce: st.nonce, ResourceNames: names}
			st.requested = true
			c.mu.Unlock()
			if err := send(req); err != nil {
				return err
			}
		}
		return nil
	}
	if err := subscribe(); err != nil {
		return err
	}
	connected := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if !connected {
			connected = true
			c.setConnected(true)
		}
		t := resp.TypeUrl
		c.mu.Lock()
		st, known := c.state[t]
		if known {
			st.nonce = resp.Nonce
		}
		c.mu.Unlock()
		if !known {
			continue
		}
		next := map[string]Resource{}
		var decodeErr error
		for _, a := range resp.Resources {
			name, err := resourceName(a)
			if err != nil {
				decodeErr = err
				break
			}
			next[name] = Resource{Name: name, Version: resp.VersionInfo, Any: a}
		}
		c.mu.Lock()
		names := slices.Sorted(maps.Keys(st.subscribed))
		accepted := st.version
		wildcard := slices.Contains(wildcardTypes, t)
		if !wildcard {
			// A state-of-the-world response for named types carries only
			// what was asked for; keep nothing else.
			for n := range next {
				if !st.subscribed[n] {
					delete(next, n)
				}
			}
		}
		c.mu.Unlock()
		req := &discoveryv3.DiscoveryRequest{TypeUrl: t, ResponseNonce: resp.Nonce, ResourceNames: names}
		err = decodeErr
		if err == nil {
			err = c.apply(t, next, resp.VersionInfo)
		}
		if err != nil {
			c.log.Error(err, "rejected configuration (NACK)", "type", t, "version", resp.VersionInfo)
			req.VersionInfo = accepted
			req.ErrorDetail = &rpcstatus.Status{Code: 3, Message: err.Error()}
		} else {
			req.VersionInfo = resp.VersionInfo
		}
		if wildcard {
			req.ResourceNames = nil
		}
		if err := send(req); err != nil {
			return err
		}
		if err := subscribe(); err != nil {
			return err
		}
	}
}

var errNoName = errors.New("resource has no name")
