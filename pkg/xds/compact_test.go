package xds_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

// TestCompactSnapshotsEqualFresh: once a snapshot is built, its virtual
// hosts, clusters and load assignments are compact stand-ins, and the
// translator hands those back for unchanged IR. Over random sequences of
// edits (services changed, added, removed — which adds and removes EDS
// clusters, so the consistency check runs over stand-ins) each
// incremental snapshot must equal a memo-less one of a fresh translation:
// versions, per-resource hashes, published bytes and, expanded, the
// messages and config-dump originals; and nothing the translator keeps
// may be a full message any more.
func TestCompactSnapshotsEqualFresh(t *testing.T) {
	ingress := map[string]string{"istio": "ingressgateway"}
	// 50 VirtualServices are some 350 messages: over parallelFrom, so the
	// cold snapshot takes the parallel path.
	//
	// Streamed: the translator hands new messages to a Stream, which
	// prepares them and puts stand-ins in their place while translating
	// (the controller's way); 200 VirtualServices are several batches.
	for _, tc := range []struct {
		size     int
		streamed bool
	}{{8, false}, {50, false}, {8, true}, {50, true}, {200, true}} {
		size := tc.size
		translateAndSnapshot := func(tr *translate.Translator, p *ir.Proxy, memo *xds.Memo) (*translate.Resources, *xds.Snapshot, *xds.Memo, error) {
			if !tc.streamed {
				inc, err := tr.Translate(p)
				if err != nil {
					t.Fatal(err)
				}
				snap, next, err := xds.NewSnapshot(inc, memo)
				return inc, snap, next, err
			}
			st := xds.NewStream(memo)
			inc, err := tr.TranslateStream(p, st.Compact)
			if err != nil {
				t.Fatal(err)
			}
			snap, next, err := xds.NewSnapshotStream(inc, memo, st)
			return inc, snap, next, err
		}
		rng := rand.New(rand.NewPCG(uint64(size), 7))
		carriedSeen := 0
		o := scale.Options{VirtualServices: size}
		revs := make([]int, size)
		// Cluster and load assignment content changes that keep their
		// number: a DestinationRule's limit, an endpoint's readiness.
		limits, down := make([]int, size), make([]bool, size)
		present := make([]bool, size)
		for i := range present {
			present[i] = true
		}
		bind := func() *ir.Proxy {
			docs := o.Shared()
			for i := range size {
				if present[i] {
					for _, d := range o.Service(i, revs[i]) {
						switch d.Kind {
						case "DestinationRule":
							d.YAML = strings.Replace(d.YAML, "http1MaxPendingRequests: 100", fmt.Sprintf("http1MaxPendingRequests: %d", 100+limits[i]), 1)
						case "EndpointSlice":
							if down[i] {
								d.YAML = strings.Replace(d.YAML, "conditions: {ready: true}", "conditions: {ready: false}", 1)
							}
						}
						docs = append(docs, d)
					}
				}
			}
			res, err := scale.Decode(docs)
			if err != nil {
				t.Fatal(err)
			}
			return gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}}).Proxy(ingress)
		}
		tr := translate.NewTranslator(translate.Options{})
		_, _, memo, err := translateAndSnapshot(tr, bind(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for step := range 20 {
			i := rng.IntN(size)
			switch rng.IntN(5) {
			case 0:
				present[i] = !present[i]
			case 1:
				limits[i]++
			case 2:
				down[i] = !down[i]
			default:
				revs[i]++
			}
			p := bind()
			inc, snap, next, err := translateAndSnapshot(tr, p, memo)
			if err != nil {
				t.Fatalf("size %d streamed %v step %d: %v", size, tc.streamed, step, err)
			}
			fresh, err := translate.Translate(p, translate.Options{})
			if err != nil {
				t.Fatalf("size %d streamed %v step %d: %v", size, tc.streamed, step, err)
			}
			if carried := xds.Carried(memo, next); carried[resourcev3.RouteType] {
				t.Fatalf("size %d streamed %v step %d: route configurations carried over", size, tc.streamed, step)
			} else {
				carriedSeen += len(carried)
			}
			memo = next
			// What the fresh translation's own messages encode to (before
			// a snapshot replaces them by stand-ins).
			direct := map[string]string{}
			for _, rc := range fresh.Routes {
				direct[resourcev3.RouteType+" "+rc.Name] = marshal(t, rc)
			}
			for _, c := range fresh.Clusters {
				direct[resourcev3.ClusterType+" "+c.Name] = marshal(t, c)
			}
			want, _, err := xds.NewSnapshot(fresh, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(snap.Versions, want.Versions) || !reflect.DeepEqual(snap.VersionMap, want.VersionMap) {
				t.Fatalf("size %d streamed %v step %d: versions differ from a memo-less snapshot", size, tc.streamed, step)
			}
			for typ := range want.Versions {
				g, w := snap.GetResources(typ), want.GetResources(typ)
				if len(g) != len(w) {
					t.Fatalf("size %d streamed %v step %d: %s: %d resources, memo-less %d", size, tc.streamed, step, typ, len(g), len(w))
				}
				for name, wr := range w {
					if marshal(t, g[name]) != marshal(t, wr) {
						t.Errorf("size %d streamed %v step %d: %s %s: published bytes differ", size, tc.streamed, step, typ, name)
					}
					// The version delta responses carry is the snapshot's own:
					// go-control-plane's hash of the bytes it sends, or for a
					// route configuration the hash of its parts' hashes.
					wantVersion := cachev3.HashResource([]byte(marshal(t, g[name])))
					if typ == resourcev3.RouteType {
						if wantVersion, err = xds.RouteVersion(xds.Expand(wr).(*routev3.RouteConfiguration)); err != nil {
							t.Fatal(err)
						}
					}
					if v := snap.VersionMap[typ][name]; v != wantVersion {
						t.Errorf("size %d streamed %v step %d: %s %s: version %s is not the hash of the published content (%s)", size, tc.streamed, step, typ, name, v, wantVersion)
					}
					if d, ok := direct[typ+" "+name]; ok && marshal(t, g[name]) != d {
						t.Errorf("size %d streamed %v step %d: %s %s: published bytes differ from the translated message's", size, tc.streamed, step, typ, name)
					}
					if !proto.Equal(xds.Expand(g[name]), xds.Expand(wr)) {
						t.Errorf("size %d streamed %v step %d: %s %s: content differs", size, tc.streamed, step, typ, name)
					}
				}
				go1, wo := snap.Originals(typ), want.Originals(typ)
				for name, wm := range wo {
					if !proto.Equal(go1[name], wm) {
						t.Errorf("size %d streamed %v step %d: %s %s: config dump original differs", size, tc.streamed, step, typ, name)
					}
				}
			}
			// What the translator keeps for the next build is compact.
			for _, c := range inc.Clusters {
				if !compact(c) {
					t.Fatalf("size %d streamed %v step %d: cluster %s kept in full", size, tc.streamed, step, c.Name)
				}
			}
			for _, e := range inc.Endpoints {
				// (One with no endpoints is its name alone: nothing to
				// compact.)
				if !compact(e) && proto.Size(e) != proto.Size(&endpointv3.ClusterLoadAssignment{ClusterName: e.ClusterName}) {
					t.Fatalf("size %d streamed %v step %d: load assignment %s kept in full", size, tc.streamed, step, e.ClusterName)
				}
			}
			for _, rc := range inc.Routes {
				for _, vh := range rc.VirtualHosts {
					if !compact(vh) {
						t.Fatalf("size %d streamed %v step %d: virtual host %s kept in full", size, tc.streamed, step, vh.Name)
					}
				}
			}
		}
		if carriedSeen == 0 {
			t.Fatalf("size %d streamed %v: no type was ever carried over", size, tc.streamed)
		}
	}
}

func compact(m proto.Message) bool { return len(m.ProtoReflect().GetUnknown()) > 0 }

func marshal(t *testing.T, r cachetypes.Resource) string {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRouteVersionFollowsContent: a route configuration's version is the
// same for the same content and new for any change of its shell, of a
// virtual host, or of their order.
func TestRouteVersionFollowsContent(t *testing.T) {
	vh := func(name string) *routev3.VirtualHost {
		return &routev3.VirtualHost{Name: name, Domains: []string{name}}
	}
	base := &routev3.RouteConfiguration{Name: "http.80", VirtualHosts: []*routev3.VirtualHost{vh("a"), vh("b")}}
	variants := map[string]*routev3.RouteConfiguration{
		"shell":      {Name: "http.81", VirtualHosts: []*routev3.VirtualHost{vh("a"), vh("b")}},
		"a host":     {Name: "http.80", VirtualHosts: []*routev3.VirtualHost{vh("a"), vh("c")}},
		"order":      {Name: "http.80", VirtualHosts: []*routev3.VirtualHost{vh("b"), vh("a")}},
		"one less":   {Name: "http.80", VirtualHosts: []*routev3.VirtualHost{vh("a")}},
		"moved into": {Name: "http.80a", VirtualHosts: []*routev3.VirtualHost{vh("b")}},
	}
	want, err := xds.RouteVersion(base)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := xds.RouteVersion(proto.Clone(base).(*routev3.RouteConfiguration)); again != want {
		t.Errorf("the same content got versions %s and %s", want, again)
	}
	for name, rc := range variants {
		if v, _ := xds.RouteVersion(rc); v == want {
			t.Errorf("%s changed, the version did not", name)
		}
	}
}

// TestConsistencyOverStandIns: once clusters are stand-ins, their load
// assignments are known from the memo only; a snapshot missing one of
// them, or holding one no cluster refers to, must still be refused, and
// the error must name it.
func TestConsistencyOverStandIns(t *testing.T) {
	ingress := map[string]string{"istio": "ingressgateway"}
	res, err := scale.Options{VirtualServices: 8}.Resources()
	if err != nil {
		t.Fatal(err)
	}
	p := gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}}).Proxy(ingress)
	tr := translate.NewTranslator(translate.Options{})
	first, err := tr.Translate(p)
	if err != nil {
		t.Fatal(err)
	}
	_, memo, err := xds.NewSnapshot(first, nil)
	if err != nil {
		t.Fatal(err)
	}
	again := func() *translate.Resources {
		inc, err := tr.Translate(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range inc.Clusters {
			if !compact(c) {
				t.Fatalf("cluster %s handed back in full, not as a stand-in", c.Name)
			}
		}
		return inc
	}
	if _, _, err := xds.NewSnapshot(again(), memo); err != nil {
		t.Fatalf("the same translation refused: %v", err)
	}

	missing := again()
	gone := missing.Endpoints[0].ClusterName
	missing.Endpoints = missing.Endpoints[1:]
	if _, _, err := xds.NewSnapshot(missing, memo); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q is referred to but missing", gone)) {
		t.Fatalf("a snapshot missing load assignment %s: got %v", gone, err)
	}

	extra := again()
	extra.Endpoints = append(extra.Endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80||nobody.example.com"})
	if _, _, err := xds.NewSnapshot(extra, memo); err == nil || !strings.Contains(err.Error(), `"outbound|80||nobody.example.com" is referred to by nothing`) {
		t.Fatalf("a snapshot with an unreferenced load assignment: got %v", err)
	}
}
