package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"

	"github.com/portico-gateway/portico/internal/poll"
)

const (
	cds = resourcev3.ClusterType
	lds = resourcev3.ListenerType
)

// handler is the proxy's side, reduced to what the protocol needs: it
// accepts or rejects updates by rule and remembers what it accepted.
type handler struct {
	mu        sync.Mutex
	accepted  map[string]map[string]Resource // type → name → resource
	updates   int
	connected bool
	// reject returns an error for an update (a full rejection) or a
	// *PartialError; status is what Status reports after a Resync.
	reject func(typeURL string, res map[string]Resource) error
	status map[string]error
}

func newHandler() *handler {
	return &handler{accepted: map[string]map[string]Resource{}, status: map[string]error{}}
}

func (h *handler) Update(typeURL string, res map[string]Resource, _ string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.updates++
	var err error
	if h.reject != nil {
		err = h.reject(typeURL, res)
	}
	if err == nil || IsPartial(err) {
		h.accepted[typeURL] = maps.Clone(res)
	}
	return err
}

func (h *handler) Wanted(string) []string { return nil }

func (h *handler) Connected(up bool) {
	h.mu.Lock()
	h.connected = up
	h.mu.Unlock()
}

func (h *handler) Status(typeURL string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status[typeURL]
}

func (h *handler) names(typeURL string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(slices.Sorted(maps.Keys(h.accepted[typeURL])), ",")
}

func (h *handler) isConnected() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connected
}

// request is what the control plane heard: an ACK or a NACK.
type request struct {
	typeURL, version, nonce, detail string
}

// controlPlane is go-control-plane's real cache and ADS server on a real
// gRPC socket, recording what clients send and how many responses go out.
type controlPlane struct {
	cache cachev3.SnapshotCache
	addr  string
	srv   *grpc.Server
	done  chan struct{}

	mu        sync.Mutex
	requests  []request
	responses map[string]int // version → responses sent with it
}

func startControlPlane(t *testing.T, addr string, cache cachev3.SnapshotCache) *controlPlane {
	t.Helper()
	if cache == nil {
		cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	}
	cp := &controlPlane{cache: cache, responses: map[string]int{}, done: make(chan struct{})}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			cp.record(request{r.TypeUrl, r.VersionInfo, r.ResponseNonce, r.GetErrorDetail().GetMessage()})
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			cp.record(request{r.TypeUrl, "", r.ResponseNonce, r.GetErrorDetail().GetMessage()})
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, r *discoveryv3.DiscoveryResponse) {
			cp.mu.Lock()
			cp.responses[r.TypeUrl+"@"+r.VersionInfo]++
			cp.mu.Unlock()
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			cp.mu.Lock()
			cp.responses[r.TypeUrl+"@"+r.SystemVersionInfo]++
			cp.mu.Unlock()
		},
	}
	var lis net.Listener
	err := poll.Wait(context.Background(), func() error { // a restarted server may wait for its port
		var err error
		lis, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = lis.Addr().String()
	cp.srv = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.srv, serverv3.NewServer(context.Background(), cache, cb))
	go func() { cp.srv.Serve(lis); close(cp.done) }()
	t.Cleanup(cp.stop)
	return cp
}

func (cp *controlPlane) stop() {
	cp.srv.Stop()
	<-cp.done
}

func (cp *controlPlane) record(r request) {
	if r.nonce == "" {
		return // a subscription, not an answer
	}
	cp.mu.Lock()
	cp.requests = append(cp.requests, r)
	cp.mu.Unlock()
}

// last returns the last answer for a type.
func (cp *controlPlane) last(typeURL string) (request, bool) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for i := len(cp.requests) - 1; i >= 0; i-- {
		if cp.requests[i].typeURL == typeURL {
			return cp.requests[i], true
		}
	}
	return request{}, false
}

func (cp *controlPlane) sent(typeURL, version string) int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.responses[typeURL+"@"+version]
}

func (cp *controlPlane) publish(t *testing.T, version string, clusters, listeners []string) {
	t.Helper()
	res := map[resourcev3.Type][]types.Resource{}
	for _, c := range clusters {
		res[cds] = append(res[cds], &clusterv3.Cluster{Name: c})
	}
	for _, l := range listeners {
		res[lds] = append(res[lds], &listenerv3.Listener{Name: l})
	}
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), "proxy-1", snap); err != nil {
		t.Fatal(err)
	}
}

func startClient(t *testing.T, addr string, sotw bool, h *handler) *Client {
	t.Helper()
	c := New(Options{Address: addr, Node: &corev3.Node{Id: "proxy-1"}, SOTW: sotw, BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond},
		h, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return c
}

func modes(t *testing.T, f func(t *testing.T, sotw bool)) {
	for _, sotw := range []bool{false, true} {
		t.Run(map[bool]string{false: "delta", true: "sotw"}[sotw], func(t *testing.T) { f(t, sotw) })
	}
}

func waitAnswer(t *testing.T, cp *controlPlane, typeURL, what string, ok func(request) bool) request {
	t.Helper()
	var got request
	poll.NoError(t, poll.Timeout, what, func() error {
		r, found := cp.last(typeURL)
		if !found || !ok(r) {
			return fmt.Errorf("last answer %+v", r)
		}
		got = r
		return nil
	})
	return got
}

// An update the handler accepts is applied and ACKed.
func TestACK(t *testing.T) {
	modes(t, func(t *testing.T, sotw bool) {
		cp := startControlPlane(t, "127.0.0.1:0", nil)
		cp.publish(t, "v1", []string{"c1", "c2"}, []string{"l1"})
		h := newHandler()
		c := startClient(t, cp.addr, sotw, h)
		poll.Until(t, "both types applied", func() bool { return h.names(cds) == "c1,c2" && h.names(lds) == "l1" })
		r := waitAnswer(t, cp, cds, "the CDS ACK", func(r request) bool { return r.detail == "" })
		if sotw && r.version != "v1" {
			t.Errorf("SotW ACK carries version %q, want v1", r.version)
		}
		if st := c.Stats(); !st.Connected || st.Acks < 2 || st.Nacks != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// An update the handler rejects is NACKed with its reason; the previous
// configuration stays; the control plane does not resend the rejected
// version in a loop; the next good version is applied.
func TestNACKWithReasonKeepsLastGoodConfig(t *testing.T) {
	modes(t, func(t *testing.T, sotw bool) {
		cp := startControlPlane(t, "127.0.0.1:0", nil)
		cp.publish(t, "v1", []string{"c1"}, []string{"l1"})
		h := newHandler()
		h.reject = func(typeURL string, res map[string]Resource) error {
			if _, bad := res["bad"]; bad {
				return errors.New("cluster bad: health_checks is not supported")
			}
			return nil
		}
		c := startClient(t, cp.addr, sotw, h)
		poll.Until(t, "v1 applied", func() bool { return h.names(cds) == "c1" })
		cp.publish(t, "v2", []string{"c1", "bad"}, []string{"l1"})
		waitAnswer(t, cp, cds, "the NACK with its reason", func(r request) bool {
			return strings.Contains(r.detail, "cluster bad: health_checks is not supported")
		})
		if got := h.names(cds); got != "c1" {
			t.Errorf("after a NACK the handler holds %q, want the last good c1", got)
		}
		// An observation window for a negative assertion, not a wait for
		// something: go-control-plane answers a SotW request naming any
		// other version with its snapshot at once, so a NACK that named
		// the old version would bring v2 back hundreds of times here.
		time.Sleep(300 * time.Millisecond)
		if n := cp.sent(cds, "v2"); n > 2 {
			t.Errorf("the rejected version was sent %d times: a NACK resend loop", n)
		}
		cp.publish(t, "v3", []string{"c1", "c3"}, []string{"l1"})
		poll.Until(t, "v3 applied", func() bool { return h.names(cds) == "c1,c3" })
		if st := c.Stats(); st.Nacks == 0 || !strings.Contains(st.LastError, "cluster bad") {
			t.Errorf("stats %+v", st)
		}
	})
}

// When the control plane goes away the handler keeps what it has (no
// empty update), and when it is back the client reconnects by itself and
// receives changes again.
func TestReconnectKeepsLastGoodConfig(t *testing.T) {
	modes(t, func(t *testing.T, sotw bool) {
		cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
		cp := startControlPlane(t, "127.0.0.1:0", cache)
		cp.publish(t, "v1", []string{"c1"}, []string{"l1"})
		h := newHandler()
		c := startClient(t, cp.addr, sotw, h)
		poll.Until(t, "v1 applied", func() bool { return h.names(cds) == "c1" && h.names(lds) == "l1" && h.isConnected() })

		cp.stop()
		poll.Until(t, "the disconnect noticed", func() bool { return !h.isConnected() })
		if h.names(cds) != "c1" || h.names(lds) != "l1" {
			t.Fatalf("configuration lost on disconnect: %q %q", h.names(cds), h.names(lds))
		}
		// The control plane comes back on the same address, with a change.
		cp2 := startControlPlane(t, cp.addr, cache)
		cp2.publish(t, "v2", []string{"c1", "c2"}, []string{"l1"})
		poll.Until(t, "v2 after reconnecting", func() bool { return h.names(cds) == "c1,c2" && h.isConnected() })
		if st := c.Stats(); st.Connects < 2 || st.Disconnects < 1 {
			t.Errorf("stats %+v", st)
		}
	})
}

// A partial rejection is NACKed, but the update becomes the client's state
// (later delta updates build on it); when the handler's verdict changes,
// Resync tells the control plane: the NACK is withdrawn by an ACK of the
// same response.
func TestPartialRejectionAndResync(t *testing.T) {
	modes(t, func(t *testing.T, sotw bool) {
		cp := startControlPlane(t, "127.0.0.1:0", nil)
		cp.publish(t, "v1", []string{"c1"}, []string{"l1", "busy"})
		h := newHandler()
		h.reject = func(typeURL string, res map[string]Resource) error {
			if _, ok := res["busy"]; ok && typeURL == lds {
				err := Partial(errors.New("listener busy: cannot bind 0.0.0.0:80: address already in use"))
				h.status[lds] = err
				return err
			}
			return nil
		}
		c := startClient(t, cp.addr, sotw, h)
		nack := waitAnswer(t, cp, lds, "the partial NACK", func(r request) bool { return strings.Contains(r.detail, "listener busy: cannot bind") })
		if sotw && nack.version != "v1" {
			// go-control-plane resends at once any version it does not
			// see acknowledged: the NACK names the version it is about.
			t.Errorf("SotW NACK version %q, want v1", nack.version)
		}
		if got := h.names(lds); got != "busy,l1" {
			t.Errorf("handler holds %q", got)
		}
		// An update of another listener: delta sends only l2, and the
		// client's state must still hold busy and l1.
		cp.publish(t, "v2", []string{"c1"}, []string{"l1", "busy", "l2"})
		poll.Until(t, "v2 applied on top of the partly rejected v1", func() bool { return h.names(lds) == "busy,l1,l2" })

		// The port is freed: the handler says so and resyncs.
		h.mu.Lock()
		h.status[lds] = nil
		h.reject = nil
		h.mu.Unlock()
		c.Resync(lds)
		ack := waitAnswer(t, cp, lds, "the NACK withdrawn", func(r request) bool { return r.detail == "" })
		if sotw && ack.version != "v2" {
			t.Errorf("SotW re-ACK version %q, want v2", ack.version)
		}
		// A second Resync with nothing changed sends nothing.
		cp.mu.Lock()
		before := len(cp.requests)
		cp.mu.Unlock()
		c.Resync(lds)
		cp.publish(t, "v3", []string{"c1", "c9"}, []string{"l1", "busy", "l2"})
		poll.Until(t, "v3 applied", func() bool { return h.names(cds) == "c1,c9" })
		cp.mu.Lock()
		var ldsAnswers int
		for _, r := range cp.requests[before:] {
			if r.typeURL == lds {
				ldsAnswers++
			}
		}
		cp.mu.Unlock()
		if ldsAnswers > 1 { // v3's LDS (unchanged in delta: none) at most
			t.Errorf("%d LDS answers after an idle Resync", ldsAnswers)
		}
	})
}
