package proxy

import (
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
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/portico-gateway/portico/internal/randconfig"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
	"github.com/portico-gateway/portico/pkg/proxy/xdsclient"
)

// The reconcile shortcuts (clusters applied only when they or what is
// kept changed, load assignments forgotten only when they changed) leave
// the proxy exactly as applying and forgetting every time does: two
// proxies, one with the shortcuts off, take the same random sequence of
// updates (types in random order, some left out for a step) and end each
// step with the same clusters, hosts and active route tables. Clusters
// and load assignments sometimes arrive with some left out (a cluster a
// route still uses is then kept; a forgotten assignment must not reach a
// cluster made later), and time sometimes passes beyond the clusters'
// linger. Listeners are left out: both proxies would bind the same ports.
func TestReconcileShortcutsEqualApplyingEveryTime(t *testing.T) {
	compared := 0
	for seed := uint64(1); seed <= 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		w := randconfig.New(seed, randconfig.Options{Kubernetes: seed%2 == 0})
		fast := New(Options{NodeID: "test", Labels: randconfig.Classes[0]}, logr.Discard())
		full := New(Options{NodeID: "test", Labels: randconfig.Classes[0]}, logr.Discard())
		full.applyAlways = true
		types := []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.SecretType, resourcev3.RouteType}
		for step := range 20 {
			if step > 0 {
				w.Edit()
			}
			snap := published(w)
			if snap == nil {
				continue
			}
			r.Shuffle(len(types), func(i, j int) { types[i], types[j] = types[j], types[i] })
			for _, typ := range types {
				if r.IntN(5) == 0 {
					continue // this type arrives a step late
				}
				in := received(t, snap, typ)
				if (typ == resourcev3.ClusterType || typ == resourcev3.EndpointType) && r.IntN(3) == 0 {
					for _, name := range slices.Sorted(maps.Keys(in)) {
						if r.IntN(3) == 0 {
							delete(in, name)
						}
					}
				}
				errFast, errFull := fast.Update(typ, in, fmt.Sprint(step)), full.Update(typ, in, fmt.Sprint(step))
				// Lingering ends only where the test says so, not on the
				// clock between the two proxies' updates.
				for _, p := range []*Proxy{fast, full} {
					p.mu.Lock()
					for i := range p.lingering {
						p.lingering[i].until = time.Now().Add(time.Hour)
					}
					p.mu.Unlock()
				}
				if (errFast == nil) != (errFull == nil) {
					t.Fatalf("seed %d step %d %s: errors differ: %v / %v", seed, step, typ, errFast, errFull)
				}
				if d := reconcileDiff(fast, full); d != "" {
					t.Fatalf("seed %d step %d after %s: %s", seed, step, typ, d)
				}
				compared++
			}
			if r.IntN(3) == 0 { // past every linger
				for _, p := range []*Proxy{fast, full} {
					p.mu.Lock()
					for i := range p.lingering {
						p.lingering[i].until = time.Time{}
					}
					p.reconcile()
					p.mu.Unlock()
				}
				if d := reconcileDiff(fast, full); d != "" {
					t.Fatalf("seed %d step %d after the linger: %s", seed, step, d)
				}
			}
		}
		for _, p := range []*Proxy{fast, full} {
			p.cancel()
			p.Listeners.Close()
			p.Clusters.Close()
		}
	}
	if compared < 200 {
		t.Fatalf("only %d states compared", compared)
	}
}

func reconcileDiff(a, b *Proxy) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	na, nb := a.Clusters.Names(), b.Clusters.Names()
	if !slices.Equal(na, nb) {
		return fmt.Sprintf("clusters %v, applying every time %v", na, nb)
	}
	for _, n := range na {
		ca, cb := a.Clusters.Get(n), b.Clusters.Get(n)
		if ca.Config().Discovery != upstream.EDS {
			continue // resolved by a goroutine of its own, on its own time
		}
		if ca.Warm() != cb.Warm() {
			return fmt.Sprintf("cluster %s warm %v, applying every time %v", n, ca.Warm(), cb.Warm())
		}
		var ha, hb []string
		for _, h := range ca.Hosts() {
			ha = append(ha, h.Addr)
		}
		for _, h := range cb.Hosts() {
			hb = append(hb, h.Addr)
		}
		if !slices.Equal(ha, hb) {
			return fmt.Sprintf("cluster %s hosts %v, applying every time %v", n, ha, hb)
		}
	}
	if len(a.activeRoutes) != len(b.activeRoutes) {
		return fmt.Sprintf("%d active route tables, applying every time %d", len(a.activeRoutes), len(b.activeRoutes))
	}
	for n, rc := range a.activeRoutes {
		if o := b.activeRoutes[n]; o == nil || o.hash != rc.hash {
			return fmt.Sprintf("active route table %s differs", n)
		}
	}
	return ""
}

// A new version of a route configuration waits for the clusters of the
// virtual hosts its active version lacks, and only for those.
func TestRouteVersionWaitsForItsNewClustersOnly(t *testing.T) {
	p := New(Options{NodeID: "test", Labels: map[string]string{"istio": "ingressgateway"}, WarmingTimeout: time.Hour}, logr.Discard())
	defer func() { p.cancel(); p.Listeners.Close(); p.Clusters.Close() }()
	update := func(typ string, msgs map[string]proto.Message) {
		t.Helper()
		in := map[string]xdsclient.Resource{}
		for name, m := range msgs {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			in[name] = xdsclient.Resource{Name: name, Any: &anypb.Any{TypeUrl: typ, Value: b}}
		}
		if err := p.Update(typ, in, "v"); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	}
	eds := func(name string) *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}
	}
	cla := func(name string) *endpointv3.ClusterLoadAssignment {
		return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 80}}}}}}}}}}}
	}
	rc := func(vhosts ...*routev3.VirtualHost) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: "http.80", VirtualHosts: vhosts}
	}
	active := func() string {
		p.mu.Lock()
		defer p.mu.Unlock()
		a := p.activeRoutes["http.80"]
		if a == nil {
			return ""
		}
		var out []string
		for _, vh := range a.vhosts {
			out = append(out, vh.domains...)
		}
		return fmt.Sprint(out)
	}

	update(resourcev3.ClusterType, map[string]proto.Message{"a": eds("a"), "b": eds("b")})
	update(resourcev3.EndpointType, map[string]proto.Message{"a": cla("a")})
	update(resourcev3.RouteType, map[string]proto.Message{"http.80": rc(vhost("a:80", "a.example.com", "a"))})
	if got := active(); got != "[a.example.com]" {
		t.Fatalf("first version not active: %s", got)
	}
	// b has no endpoints yet: a version adding a host that routes to it waits.
	update(resourcev3.RouteType, map[string]proto.Message{"http.80": rc(vhost("a:80", "a.example.com", "a"), vhost("b:80", "b.example.com", "b"))})
	if got := active(); got != "[a.example.com]" {
		t.Fatalf("a version routing to cluster b, not warm, became active: %s", got)
	}
	update(resourcev3.EndpointType, map[string]proto.Message{"a": cla("a"), "b": cla("b")})
	if got := active(); got != "[a.example.com b.example.com]" {
		t.Fatalf("the version did not become active once b was warm: %s", got)
	}
	// A cluster the active version already routes to is not waited for
	// again: c replaces a's cluster under host a, but c is new, so it is.
	update(resourcev3.ClusterType, map[string]proto.Message{"a": eds("a"), "b": eds("b"), "c": eds("c")})
	update(resourcev3.RouteType, map[string]proto.Message{"http.80": rc(vhost("a:80", "a.example.com", "c"), vhost("b:80", "b.example.com", "b"))})
	if got, _ := p.activeRoutes["http.80"], 0; got.vhosts[0].vh.Clusters[0] != "a" {
		t.Fatalf("a version routing host a to c, not warm, became active")
	}
	update(resourcev3.RouteType, map[string]proto.Message{"http.80": rc(vhost("b:80", "b.example.com", "b"))})
	if got := active(); got != "[b.example.com]" {
		t.Fatalf("a version dropping a host (its other hosts' clusters warm) did not become active: %s", got)
	}
}
