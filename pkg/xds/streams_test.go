package xds_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/proxy/xdsclient"
	"github.com/portico-gateway/portico/pkg/xds"
)

var allTypes = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.SecretType, resourcev3.ListenerType, resourcev3.RouteType}

// recorder is an xdsclient.Handler that accepts everything and remembers
// the version it applied per type; it asks for every named resource the
// current snapshot holds, as a proxy whose listeners and clusters use them
// all would.
type recorder struct {
	current *atomic.Pointer[xds.Snapshot]
	mu      sync.Mutex
	applied map[string]string
}

func (r *recorder) Update(typeURL string, _ map[string]xdsclient.Resource, version string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied[typeURL] = version
	return nil
}

func (r *recorder) Wanted(typeURL string) []string {
	snap := r.current.Load()
	if snap == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(snap.Originals(typeURL)))
}

func (r *recorder) Connected(bool) {}

func (r *recorder) version(typeURL string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied[typeURL]
}

// runningClient is one proxy connected with pkg/proxy/xdsclient.
type runningClient struct {
	rec    *recorder
	cancel context.CancelFunc
	done   chan struct{}
}

func startClient(t *testing.T, addr, id string, sotw bool, current *atomic.Pointer[xds.Snapshot]) *runningClient {
	t.Helper()
	rec := &recorder{current: current, applied: map[string]string{}}
	c := xdsclient.New(xdsclient.Options{Address: addr, Node: node(id, ingress), SOTW: sotw,
		BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}, rec, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningClient{rec: rec, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(rc.done); c.Run(ctx) }()
	t.Cleanup(rc.stop)
	return rc
}

func (c *runningClient) stop() {
	c.cancel()
	<-c.done
}

// TestMixedSotWAndDeltaClients connects state-of-the-world and delta
// proxies to one server, joining and leaving in every order. After every
// join or leave a change is published, and every connected proxy must
// apply it; /debug/proxies must list exactly the connected proxies, every
// type SYNCED once they have ACKed. (go-control-plane numbers SotW and
// delta streams with separate counters: keyed by bare stream id, the
// second stream 1 was taken for the first, and when one left the other
// lost its snapshot.)
func TestMixedSotWAndDeltaClients(t *testing.T) {
	orders := map[string][]string{
		"delta first, sotw leaves first":      {"+D", "+S", "-S", "-D"},
		"delta first, delta leaves first":     {"+D", "+S", "-D", "-S"},
		"sotw first, sotw leaves first":       {"+S", "+D", "-S", "-D"},
		"sotw first, delta leaves first":      {"+S", "+D", "-D", "-S"},
		"delta alone, then sotw alone":        {"+D", "-D", "+S", "-S"},
		"sotw alone, then delta alone":        {"+S", "-S", "+D", "-D"},
		"two of each, interleaved, rejoins":   {"+D", "+S", "+S2", "+D2", "-S", "-D", "+S", "-D2", "+D", "-S2", "-S", "-D"},
		"sotw rejoins while delta stays":      {"+D", "+S", "-S", "+S", "-S", "+S", "-D", "-S"},
		"delta rejoins while sotw stays":      {"+S", "+D", "-D", "+D", "-D", "+D", "-S", "-D"},
		"same node id over delta and sotw":    {"+D", "+D@S", "-D@S", "-D"},
		"same node id, delta leaves, sotw on": {"+D", "+D@S", "-D", "-D@S"},
	}
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			srv, conn := startServer(t)
			addr := conn.Target()
			ctx := t.Context()
			class := gateway.ClassName(ingress)
			var current atomic.Pointer[xds.Snapshot]
			step := 0
			publish := func() *xds.Snapshot {
				step++
				snap, err := srv.Publish(ctx, class, translateSeed(t, func(s string) string {
					return strings.ReplaceAll(s, "counter.lab.example.com", fmt.Sprintf("counter-%d.lab.example.com", step))
				}))
				if err != nil {
					t.Fatal(err)
				}
				current.Store(snap)
				return snap
			}
			publish()
			connected := map[string]*runningClient{}
			for i, ev := range order {
				// "+S2" joins the SotW proxy "S2"; "+D@S" joins node "D" over SotW.
				op, who := ev[:1], ev[1:]
				id, sotw := who, strings.HasPrefix(who, "S")
				if before, _, ok := strings.Cut(who, "@"); ok {
					id, sotw = before, true
				}
				switch op {
				case "+":
					connected[who] = startClient(t, addr, id, sotw, &current)
				case "-":
					connected[who].stop()
					delete(connected, who)
				}
				snap := publish()
				for who, c := range connected {
					waitFor(t, fmt.Sprintf("step %d (%s): %s to apply routes %s", i, ev, who, snap.Versions[resourcev3.RouteType]), func() bool {
						for _, typ := range allTypes {
							if c.rec.version(typ) != snap.Versions[typ] {
								return false
							}
						}
						return true
					})
				}
				wantIDs := map[string]bool{}
				for who := range connected {
					id, _, _ := strings.Cut(who, "@")
					wantIDs[id] = true
				}
				var last []xds.ProxyStatus
				waitFor(t, fmt.Sprintf("step %d (%s): proxy-status to list %v, all SYNCED", i, ev, slices.Sorted(maps.Keys(wantIDs))), func() bool {
					last = srv.ProxyStatus()
					if len(last) != len(wantIDs) {
						return false
					}
					for _, p := range last {
						if !wantIDs[p.ID] || p.Class != class || p.Sent != snap.Version() {
							return false
						}
						for _, typ := range allTypes {
							if p.Types[xds.ShortType(typ)] != xds.StatusSynced {
								return false
							}
						}
					}
					return true
				})
			}
			if got := srv.ProxyStatus(); got == nil || len(got) != 0 {
				t.Fatalf("with no proxy connected, proxy-status must be an empty list, got %#v", got)
			}
		})
	}
}

// TestProxyStatusStates: NOT SENT before anything of a type was sent,
// STALE while a delta proxy has not ACKed the current resources (delta
// ACKs carry no version: the server remembers what each nonce carried),
// SYNCED once it has, STALE (NACKED) after a NACK.
func TestProxyStatusStates(t *testing.T) {
	srv, conn := startServer(t)
	ctx := t.Context()
	class := gateway.ClassName(ingress)
	stream := openDelta(t, conn)
	if err := stream.Send(deltaReq(node("gw", ingress), resourcev3.ClusterType, "")); err != nil {
		t.Fatal(err)
	}
	status := func() xds.ProxyStatus {
		t.Helper()
		var st xds.ProxyStatus
		waitFor(t, "the proxy to be listed", func() bool {
			for _, p := range srv.ProxyStatus() {
				if p.ID == "gw" {
					st = p
					return true
				}
			}
			return false
		})
		return st
	}
	if st := status(); st.Types["Cluster"] != xds.StatusNotSent || st.Types["Listener"] != xds.StatusNotSent {
		t.Fatalf("before any snapshot: %v", st.Types)
	}
	if _, err := srv.Publish(ctx, class, translateSeed(t, nil)); err != nil {
		t.Fatal(err)
	}
	r := recvDelta(t, stream)
	waitFor(t, "clusters sent, not yet ACKed: STALE", func() bool { return status().Types["Cluster"] == xds.StatusStale })
	if st := status(); st.Types["Listener"] != xds.StatusNotSent {
		t.Errorf("listeners were never asked for: %v", st.Types)
	}
	if err := stream.Send(deltaReq(nil, resourcev3.ClusterType, r.Nonce)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ACK: SYNCED", func() bool { return status().Types["Cluster"] == xds.StatusSynced })

	// A change to one cluster: STALE until ACKed, then SYNCED.
	if _, err := srv.Publish(ctx, class, translateSeed(t, func(s string) string {
		return s + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: counter}\nspec:\n  host: counter\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}\n"
	})); err != nil {
		t.Fatal(err)
	}
	r = recvDelta(t, stream)
	if st := status(); st.Types["Cluster"] != xds.StatusStale {
		t.Errorf("a new version not yet ACKed: %v", st.Types)
	}
	if err := stream.Send(deltaReq(nil, resourcev3.ClusterType, r.Nonce)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "second ACK: SYNCED", func() bool { return status().Types["Cluster"] == xds.StatusSynced })

	// A NACK of the next change.
	if _, err := srv.Publish(ctx, class, translateSeed(t, nil)); err != nil {
		t.Fatal(err)
	}
	r = recvDelta(t, stream)
	nack := deltaReq(nil, resourcev3.ClusterType, r.Nonce)
	nack.ErrorDetail = statusMessage("bad cluster")
	if err := stream.Send(nack); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "NACK: STALE (NACKED)", func() bool { return status().Types["Cluster"] == xds.StatusNacked })
}

func openDelta(t *testing.T, conn *grpc.ClientConn) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

func deltaReq(n *corev3.Node, typeURL, nonce string) *discoveryv3.DeltaDiscoveryRequest {
	return &discoveryv3.DeltaDiscoveryRequest{Node: n, TypeUrl: typeURL, ResponseNonce: nonce}
}

func statusMessage(msg string) *rpcstatus.Status { return &rpcstatus.Status{Code: 3, Message: msg} }

// recvDelta reads the next delta response with a deadline.
func recvDelta(t *testing.T, stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient) *discoveryv3.DeltaDiscoveryResponse {
	t.Helper()
	type result struct {
		r   *discoveryv3.DeltaDiscoveryResponse
		err error
	}
	ch := make(chan result, 1)
	go func() {
		r, err := stream.Recv()
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatal(res.err)
		}
		return res.r
	case <-time.After(10 * time.Second):
		t.Fatal("no delta response")
	}
	return nil
}

// TestDeltaReconnectResendsOnlyWhatChanged: a proxy that reconnects with
// the versions it holds (initial_resource_versions, as Envoy and the edge
// proxy send them) is sent only the resources it lacks or holds another
// version of. The versions the server sends must therefore be the very
// versions its snapshot compares: otherwise every reconnect, e.g. to a
// restarted controller, resends everything.
func TestDeltaReconnectResendsOnlyWhatChanged(t *testing.T) {
	srv, conn := startServer(t)
	class := gateway.ClassName(ingress)
	seed := translateSeed(t, nil)
	if _, err := srv.Publish(t.Context(), class, seed); err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, rc := range seed.Routes {
		routes = append(routes, rc.Name)
	}
	for _, typ := range []struct {
		url       string
		subscribe []string // nil: wildcard
	}{{resourcev3.ClusterType, nil}, {resourcev3.RouteType, routes}} {
		request := func(initial map[string]string) *discoveryv3.DeltaDiscoveryRequest {
			req := deltaReq(node("gw", ingress), typ.url, "")
			req.ResourceNamesSubscribe, req.InitialResourceVersions = typ.subscribe, initial
			return req
		}
		first := openDelta(t, conn)
		if err := first.Send(request(nil)); err != nil {
			t.Fatal(err)
		}
		held := map[string]string{}
		for _, r := range recvDelta(t, first).Resources {
			held[r.Name] = r.Version
		}
		if len(held) < 2 {
			t.Fatalf("%s: the seed has %d; the test needs 2", typ.url, len(held))
		}
		names := slices.Sorted(maps.Keys(held))
		for _, tc := range []struct {
			name    string
			initial func(map[string]string)
		}{
			{"one lacked", func(v map[string]string) { delete(v, names[0]) }},
			{"one of another version", func(v map[string]string) { v[names[0]] = "an-older-version" }},
		} {
			initial := maps.Clone(held)
			tc.initial(initial)
			stream := openDelta(t, conn)
			if err := stream.Send(request(initial)); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range recvDelta(t, stream).Resources {
				got = append(got, r.Name)
				if r.Version != held[r.Name] {
					t.Errorf("%s, %s: %s resent with version %q, first sent as %q", typ.url, tc.name, r.Name, r.Version, held[r.Name])
				}
			}
			slices.Sort(got)
			if want := names[:1]; !slices.Equal(got, want) {
				t.Errorf("%s, %s: reconnecting with the others current, resent %v; want only %v", typ.url, tc.name, got, want)
			}
		}
	}
}
