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
	"io"
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

	"github.com/portico-gateway/portico/pkg/idlegc"
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
	// (endpoints, route configurations, secrets), sorted. Neither side
	// modifies the slice afterwards; returning the very same slice again
	// says nothing changed (the client then compares nothing).
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
	// GC, if set, is told of each response applied, so that it collects
	// garbage between responses rather than during one.
	GC *idlegc.Collector
}

// Client is an ADS client.
type Client struct {
	opts    Options
	log     logr.Logger
	handler Handler

	mu    sync.Mutex
	state map[string]*typeState
	stats Stats
	// resyncs wakes the stream's reporter (see Resync).
	resyncs chan struct{}
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
	// received is the version of the latest SOTW response, applied or not.
	received string
	// nonce is the latest response's nonce on the current stream.
	nonce string
	// reported is the error detail last sent for the latest response on
	// this stream ("" for an ACK); resync asks for the verdict again.
	reported string
	resync   bool
	// subscribed names (non-wildcard types); wildcard types use nil.
	subscribed map[string]bool
	requested  bool
	// wantedFrom is the handler's Wanted slice that subscribed was last
	// made equal to: the same slice again means no change, without
	// comparing thousands of names after every update.
	wantedFrom []string
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
	c := &Client{opts: opts, log: log, handler: handler, state: map[string]*typeState{}, resyncs: make(chan struct{}, 1)}
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
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.ForceCodecV2(newAliasingCodec())),
		// Fixed flow-control windows wide enough for a large route
		// configuration (~14 MB at 30,000 routes on one port) to arrive
		// without waiting on window updates; gRPC's BDP estimate stays
		// small on a fast link. Envoy's gRPC client defaults to 256 MiB.
		grpc.WithInitialWindowSize(16<<20), grpc.WithInitialConnWindowSize(32<<20),
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

// apply hands an update to the handler and records the outcome. A
// partial rejection is a NACK whose update is nevertheless the new state.
// received is the size of the response's resources, which the codec
// allocated before.
func (c *Client) apply(typeURL string, next map[string]Resource, version string, received int) error {
	mark := c.opts.GC.Begin()
	defer c.opts.GC.End(mark, uint64(received))
	err := c.handler.Update(typeURL, next, version)
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.state[typeURL]
	st.received = version
	if err != nil {
		c.stats.Nacks++
		c.stats.LastError = err.Error()
		if IsPartial(err) {
			c.stats.Updates++
			st.resources = next
		}
		return err
	}
	c.stats.Acks++
	c.stats.Updates++
	st.resources = next
	st.version = version
	return nil
}

// Resync asks the client to tell the control plane the handler's current
// verdict on a type (Reporter.Status), if it changed since the client
// last answered. It never blocks.
func (c *Client) Resync(typeURL string) {
	c.mu.Lock()
	if st, ok := c.state[typeURL]; ok {
		st.resync = true
	}
	c.mu.Unlock()
	select {
	case c.resyncs <- struct{}{}:
	default:
	}
}

// report is one re-answer to the latest response of a type.
type report struct {
	typeURL, nonce, version, detail string
	names                           []string
}

// pendingReports asks the handler for the verdicts Resync asked for and
// returns those that differ from what the stream last said. Called with
// the stream's send lock held, so no ACK of a newer update can overtake
// or be overtaken by it.
func (c *Client) pendingReports() []report {
	r, ok := c.handler.(Reporter)
	var out []report
	for _, t := range append(append([]string(nil), wildcardTypes...), namedTypes...) {
		c.mu.Lock()
		st := c.state[t]
		need := st.resync && st.nonce != ""
		st.resync = false
		c.mu.Unlock()
		if !need || !ok {
			continue
		}
		detail := errString(r.Status(t))
		c.mu.Lock()
		if detail != st.reported {
			st.reported = detail
			rep := report{typeURL: t, nonce: st.nonce, version: st.received, detail: detail}
			if detail == "" {
				st.version = st.received // fully accepted now
			}
			if !slices.Contains(wildcardTypes, t) {
				rep.names = slices.Sorted(maps.Keys(st.subscribed))
			}
			out = append(out, rep)
		}
		c.mu.Unlock()
	}
	return out
}

// runReporter sends re-answers (see Resync) until ctx ends or a send
// fails. send must hold the stream's send lock.
func (c *Client) runReporter(ctx context.Context, lock sync.Locker, send func(report) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.resyncs:
		}
		lock.Lock()
		var err error
		for _, r := range c.pendingReports() {
			if r.detail == "" {
				c.log.Info("configuration now fully applied; acknowledging it again", "type", r.typeURL)
			} else {
				c.log.Info("configuration partly rejected since it was acknowledged; reporting it", "type", r.typeURL, "error", r.detail)
			}
			if err = send(r); err != nil {
				break
			}
		}
		lock.Unlock()
		if err != nil {
			return
		}
	}
}

func errorDetail(detail string) *rpcstatus.Status {
	if detail == "" {
		return nil
	}
	return &rpcstatus.Status{Code: 3, Message: detail}
}

// sameSlice reports whether a and b are the very same non-empty slice
// (Handler.Wanted returns its cached slice while nothing it depends on
// changed).
func sameSlice(a, b []string) bool {
	return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0]
}

// wantedChanges returns, per named type, the names to add and remove.
func (c *Client) wantedChanges() map[string][2][]string {
	out := map[string][2][]string{}
	for _, t := range namedTypes {
		names := c.handler.Wanted(t)
		c.mu.Lock()
		st := c.state[t]
		if sameSlice(names, st.wantedFrom) {
			c.mu.Unlock()
			continue
		}
		// The caller applies what is returned: subscribed then holds
		// exactly these names.
		st.wantedFrom = names
		want := make(map[string]bool, len(names))
		for _, n := range names {
			want[n] = true
		}
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
	var reporter sync.WaitGroup
	defer func() { cancel(); reporter.Wait() }()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	// sendMu orders what is sent: the receive loop holds it from applying
	// an update to sending its ACK, the reporter while it re-answers.
	var sendMu sync.Mutex
	first := true
	opening := true // until the receive loop and the reporter start
	send := func(r *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			r.Node, first = c.opts.Node, false
		}
		return openingError(stream.Send(r), opening, stream)
	}
	// Reset subscriptions: a new stream starts from nothing on the server,
	// but tells it which versions we hold so unchanged resources are not
	// sent again.
	c.mu.Lock()
	for _, st := range c.state {
		st.subscribed, st.wantedFrom = map[string]bool{}, nil
		st.requested = false
		st.nonce, st.reported, st.resync = "", "", false
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
	opening = false
	reporter.Add(1)
	go func() {
		defer reporter.Done()
		c.runReporter(ctx, &sendMu, func(r report) error {
			return send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.typeURL, ResponseNonce: r.nonce, ErrorDetail: errorDetail(r.detail)})
		})
	}()
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
		if err := c.handleDelta(resp, &sendMu, send, subscribe); err != nil {
			return err
		}
	}
}

// handleDelta applies one delta response and answers it.
func (c *Client) handleDelta(resp *discoveryv3.DeltaDiscoveryResponse, sendMu *sync.Mutex, send func(*discoveryv3.DeltaDiscoveryRequest) error, subscribe func() error) error {
	sendMu.Lock()
	defer sendMu.Unlock()
	t := resp.TypeUrl
	c.log.V(1).Info("received", "type", t, "resources", len(resp.Resources), "removed", len(resp.RemovedResources))
	c.mu.Lock()
	st, known := c.state[t]
	var next map[string]Resource
	if known {
		next = maps.Clone(st.resources)
		st.nonce = resp.Nonce
	}
	c.mu.Unlock()
	if !known {
		return send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.Nonce,
			ErrorDetail: &rpcstatus.Status{Message: "unsupported resource type " + t}})
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
	received := 0
	for _, r := range resp.Resources {
		received += len(r.GetResource().GetValue())
	}
	err := c.apply(t, next, resp.SystemVersionInfo, received)
	if err != nil {
		c.log.Error(err, "rejected configuration (NACK)", "type", t, "partly", IsPartial(err))
		ack.ErrorDetail = errorDetail(err.Error())
	}
	c.mu.Lock()
	st.reported = errString(err)
	c.mu.Unlock()
	if err := send(ack); err != nil {
		return err
	}
	return subscribe()
}

func (c *Client) runSOTW(ctx context.Context, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithCancel(ctx)
	var reporter sync.WaitGroup
	defer func() { cancel(); reporter.Wait() }()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	var sendMu sync.Mutex // see runDelta
	first := true
	opening := true // see runDelta
	send := func(r *discoveryv3.DiscoveryRequest) error {
		if first {
			r.Node, first = c.opts.Node, false
		}
		return openingError(stream.Send(r), opening, stream)
	}
	c.mu.Lock()
	for _, st := range c.state {
		st.subscribed, st.nonce, st.requested, st.wantedFrom = map[string]bool{}, "", false, nil
		st.reported, st.resync = "", false
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
	opening = false
	reporter.Add(1)
	go func() {
		defer reporter.Done()
		c.runReporter(ctx, &sendMu, func(r report) error {
			return send(&discoveryv3.DiscoveryRequest{TypeUrl: r.typeURL, VersionInfo: r.version, ResponseNonce: r.nonce,
				ResourceNames: r.names, ErrorDetail: errorDetail(r.detail)})
		})
	}()
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
		if err := c.handleSOTW(resp, &sendMu, send, subscribe); err != nil {
			return err
		}
	}
}

// handleSOTW applies one state-of-the-world response and answers it.
func (c *Client) handleSOTW(resp *discoveryv3.DiscoveryResponse, sendMu *sync.Mutex, send func(*discoveryv3.DiscoveryRequest) error, subscribe func() error) error {
	sendMu.Lock()
	defer sendMu.Unlock()
	t := resp.TypeUrl
	c.mu.Lock()
	st, known := c.state[t]
	if known {
		st.nonce = resp.Nonce
	}
	c.mu.Unlock()
	if !known {
		return nil
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
	err := decodeErr
	if err == nil {
		received := 0
		for _, a := range resp.Resources {
			received += len(a.GetValue())
		}
		err = c.apply(t, next, resp.VersionInfo, received)
	}
	req.VersionInfo = resp.VersionInfo
	if err != nil {
		c.log.Error(err, "rejected configuration (NACK)", "type", t, "version", resp.VersionInfo, "accepted", accepted, "partly", IsPartial(err))
		// The protocol says a NACK carries the last accepted version,
		// but go-control-plane's cache answers any request whose
		// version differs from its snapshot's at once, with the same
		// snapshot: the proxy would reject it again, forever, as fast
		// as the stream goes. Naming the rejected version (the error
		// detail says it was rejected) waits for the next change.
		req.ErrorDetail = errorDetail(err.Error())
	}
	c.mu.Lock()
	st.reported = errString(err)
	c.mu.Unlock()
	if wildcard {
		req.ResourceNames = nil
	}
	if err := send(req); err != nil {
		return err
	}
	return subscribe()
}

var errNoName = errors.New("resource has no name")

// openingError turns the io.EOF of a send refused while the stream opens
// (the controller ended it: no or wrong credentials, a refused node) into
// the status the controller gave, so the log and the proxy's last error say
// why. Only while nothing else receives on the stream.
func openingError(err error, opening bool, stream grpc.ClientStream) error {
	if !opening || !errors.Is(err, io.EOF) {
		return err
	}
	if rerr := stream.RecvMsg(new(discoveryv3.DiscoveryResponse)); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return err
}
