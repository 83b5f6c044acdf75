package xds

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// deltaStream is one side of a simulated delta stream of one type: its
// subscription, as go-control-plane's server keeps it, and its open watch.
type deltaStream struct {
	sub    streamv3.Subscription
	out    chan cachev3.DeltaResponse
	cancel func()
	nonce  int
}

// TestDeltaCacheEqualsSnapshotCache drives Portico's delta cache and
// go-control-plane's snapshot cache through the same random sequences —
// snapshots (each type changed, carried over as the same map, or rebuilt
// equal), ACKs, subscriptions and unsubscriptions, reconnects with
// initial versions — and requires the same answer from both after every
// step: whether a response is sent, and its resources, versions, removals
// and the versions the stream holds afterwards.
func TestDeltaCacheEqualsSnapshotCache(t *testing.T) {
	types := []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.RouteType}
	wildcard := map[string]bool{resourcev3.ClusterType: true}
	names := []string{"a", "b", "c", "d", "e", "f"}
	make1 := func(typ, name string, variant int) cachetypes.Resource {
		switch typ {
		case resourcev3.ClusterType:
			return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Duration(variant+1) * time.Second)}
		case resourcev3.EndpointType:
			return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: make([]*endpointv3.LocalityLbEndpoints, variant)}
		}
		return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: fmt.Sprint(variant), Domains: []string{"*"}}}}
	}
	responses := 0
	for seed := uint64(1); seed <= 60; seed++ {
		r := rand.New(rand.NewPCG(seed, 3))
		ctx := context.Background()
		node := &corev3.Node{Id: "node"}
		ours := newDeltaCache(cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), cachev3.IDHash{})
		theirs := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
		streams := map[string][2]*deltaStream{}
		items := map[string]map[string]cachetypes.ResourceWithTTL{}
		var history []string
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d after %v: %s", seed, history, fmt.Sprintf(format, args...))
		}
		// compare takes what each side's open watch has received, if
		// anything, checks both agree, and lets both streams ACK it.
		var watch func(typ string, ss [2]*deltaStream)
		compare := func(typ string) {
			ss := streams[typ]
			var got [2]cachev3.DeltaResponse
			for i, s := range ss {
				select {
				case got[i] = <-s.out:
				default:
				}
			}
			if (got[0] == nil) != (got[1] == nil) {
				fail("%s: response sent by ours %v, by go-control-plane %v", typ, got[0] != nil, got[1] != nil)
			}
			if got[0] == nil {
				return
			}
			responses++
			var desc [2]string
			for i, resp := range got {
				d, err := resp.GetDeltaDiscoveryResponse()
				if err != nil {
					fail("%v", err)
				}
				desc[i] = describeDelta(d, resp.GetReturnedResources())
			}
			if desc[0] != desc[1] {
				fail("%s: ours sent\n%s\ngo-control-plane sent\n%s", typ, desc[0], desc[1])
			}
			for i, s := range ss {
				s.sub.SetReturnedResources(got[i].GetReturnedResources())
				s.cancel = nil
			}
			watch(typ, ss) // the ACK opens the next watch
		}
		watch = func(typ string, ss [2]*deltaStream) {
			for i, s := range ss {
				if s.cancel != nil {
					s.cancel()
				}
				s.nonce++
				req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typ, ResponseNonce: fmt.Sprint(s.nonce - 1)}
				if s.nonce == 1 {
					req.ResponseNonce = ""
				}
				c := []cachev3.Cache{ours, theirs}[i]
				cancel, err := c.CreateDeltaWatch(req, s.sub, s.out)
				if err != nil {
					fail("%v", err)
				}
				s.cancel = cancel
			}
			compare(typ)
		}
		open := func(typ string, initial map[string]string) {
			var ss [2]*deltaStream
			var subscribe []string
			if !wildcard[typ] {
				subscribe = []string{names[r.IntN(len(names))], names[r.IntN(len(names))]}
			}
			for i := range ss {
				ss[i] = &deltaStream{sub: streamv3.NewDeltaSubscription(subscribe, nil, maps.Clone(initial), true), out: make(chan cachev3.DeltaResponse, 1)}
			}
			streams[typ] = ss
			watch(typ, ss)
		}
		for _, typ := range types {
			open(typ, nil)
		}
		for step := range 40 {
			switch r.IntN(6) {
			case 0, 1, 2: // a new snapshot
				snap := &cachev3.Snapshot{}
				for _, typ := range types {
					m := items[typ]
					switch r.IntN(3) {
					case 0: // carried over: the very same map
					case 1: // rebuilt equal: a new map with the same resources
						m = maps.Clone(m)
					default: // changed
						m = map[string]cachetypes.ResourceWithTTL{}
						for _, n := range names {
							if r.IntN(2) == 0 {
								m[n] = cachetypes.ResourceWithTTL{Resource: make1(typ, n, r.IntN(2))}
							}
						}
					}
					items[typ] = m
					snap.Resources[cachev3.GetResponseType(typ)] = cachev3.Resources{Version: fmt.Sprint(step), Items: m}
				}
				history = append(history, "snapshot")
				if err := ours.SetSnapshot(ctx, "node", snap); err != nil {
					fail("%v", err)
				}
				if err := theirs.SetSnapshot(ctx, "node", snap); err != nil {
					fail("%v", err)
				}
				for _, typ := range types {
					compare(typ)
				}
			case 3: // a subscription change on a named type
				typ := types[1+r.IntN(2)]
				sub, unsub := []string{names[r.IntN(len(names))]}, []string{names[r.IntN(len(names))]}
				history = append(history, fmt.Sprintf("%s +%v -%v", typ[len(typ)-6:], sub, unsub))
				for _, s := range streams[typ] {
					s.sub.UpdateResourceSubscriptions(sub, unsub)
				}
				watch(typ, streams[typ])
			case 4: // a wildcard stream unsubscribes a name (it must be sent again or removed)
				n := names[r.IntN(len(names))]
				history = append(history, "cds -"+n)
				for _, s := range streams[resourcev3.ClusterType] {
					s.sub.UpdateResourceSubscriptions(nil, []string{n})
				}
				watch(resourcev3.ClusterType, streams[resourcev3.ClusterType])
			default: // a reconnect, announcing what the stream holds
				typ := types[r.IntN(len(types))]
				held := maps.Clone(streams[typ][0].sub.ReturnedResources())
				history = append(history, "reconnect "+typ[len(typ)-6:])
				for _, s := range streams[typ] {
					if s.cancel != nil {
						s.cancel()
					}
				}
				open(typ, held)
			}
		}
	}
	if responses < 500 {
		t.Fatalf("only %d responses compared", responses)
	}
}

func describeDelta(d *discoveryv3.DeltaDiscoveryResponse, next map[string]string) string {
	var res []string
	for _, r := range d.Resources {
		res = append(res, r.Name+"@"+r.Version[:8])
	}
	slices.Sort(res)
	removed := slices.Clone(d.RemovedResources)
	slices.Sort(removed)
	var held []string
	for n, v := range next {
		if len(v) > 8 {
			v = v[:8]
		}
		held = append(held, n+"@"+v)
	}
	slices.Sort(held)
	return fmt.Sprintf("resources %v removed %v system %q; then holds %v", res, removed, d.SystemVersionInfo, held)
}
