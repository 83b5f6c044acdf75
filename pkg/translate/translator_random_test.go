package translate_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/translate"
)

// TestTranslatorMemoEqualsFresh drives a Translator through random edit
// sequences of a proxy's IR — clusters (EDS and DNS) and virtual hosts
// added, removed, changed, reordered; route configurations appearing and
// going; the tracing collector's cluster coming and going, routed or
// not — and checks every build against a fresh translation. Like the xDS
// server, its stream replaces every new message by an equal one of its
// own, and after each build the test replaces the returned messages in
// place again, as the server does with compact stand-ins: what the next
// build reuses must be those replacements (the memo's slots), never a
// message of another resource.
func TestTranslatorMemoEqualsFresh(t *testing.T) {
	for seed := range uint64(150) {
		rng := rand.New(rand.NewPCG(seed, 11))
		w := &irWorld{rng: rng}
		tr := translate.NewTranslator(translate.Options{})
		replaced := map[proto.Message]bool{} // every message the test or the stream put in place
		for step := range 40 {
			if step > 0 {
				w.edit()
			}
			tracing := w.tracing()
			tr.SetTracing(tracing)
			p := w.proxy()
			stream := func(batch []proto.Message) {
				for i, m := range batch {
					c := proto.Clone(m)
					replaced[c] = true
					batch[i] = c
				}
			}
			got, err := tr.TranslateStream(p, stream)
			if err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			want, err := translate.Translate(p, translate.Options{Tracing: tracing})
			if err != nil {
				t.Fatalf("seed %d step %d: fresh: %v", seed, step, err)
			}
			if d := diff(got, want); d != "" {
				t.Fatalf("seed %d step %d: the Translator differs from a fresh translation: %s", seed, step, d)
			}
			// Reused messages are the slots' current ones: each a
			// replacement made by the stream or below.
			collector := ""
			if tracing != nil {
				collector = tracing.Provider.ClusterName()
			}
			for _, cl := range got.Clusters {
				if !replaced[cl] && cl.Name != collector {
					t.Fatalf("seed %d step %d: cluster %s is neither new through the stream nor a slot's", seed, step, cl.Name)
				}
			}
			for _, cla := range got.Endpoints {
				if !replaced[cla] && cla.ClusterName != collector {
					t.Fatalf("seed %d step %d: load assignment %s is neither new through the stream nor a slot's", seed, step, cla.ClusterName)
				}
			}
			for _, rc := range got.Routes {
				for _, vh := range rc.VirtualHosts {
					if !replaced[vh] {
						t.Fatalf("seed %d step %d: virtual host %s is neither new through the stream nor a slot's", seed, step, vh.Name)
					}
				}
			}
			// What the xDS server does once a snapshot is built.
			for i, cl := range got.Clusters {
				c := proto.Clone(cl).(*clusterv3.Cluster)
				replaced[c] = true
				got.Clusters[i] = c
			}
			for i, cla := range got.Endpoints {
				c := proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
				replaced[c] = true
				got.Endpoints[i] = c
			}
			for _, rc := range got.Routes {
				for i, vh := range rc.VirtualHosts {
					c := proto.Clone(vh).(*routev3.VirtualHost)
					replaced[c] = true
					rc.VirtualHosts[i] = c
				}
			}
		}
	}
}

func diff(got, want *translate.Resources) string {
	if len(got.Routes) != len(want.Routes) || len(got.Clusters) != len(want.Clusters) || len(got.Endpoints) != len(want.Endpoints) {
		return fmt.Sprintf("counts %d/%d/%d, fresh %d/%d/%d", len(got.Routes), len(got.Clusters), len(got.Endpoints),
			len(want.Routes), len(want.Clusters), len(want.Endpoints))
	}
	for i := range want.Routes {
		if !proto.Equal(got.Routes[i], want.Routes[i]) {
			return "route configuration " + want.Routes[i].Name
		}
	}
	for i := range want.Clusters {
		if !proto.Equal(got.Clusters[i], want.Clusters[i]) {
			return "cluster " + want.Clusters[i].Name
		}
	}
	for i := range want.Endpoints {
		if !proto.Equal(got.Endpoints[i], want.Endpoints[i]) {
			return "load assignment " + want.Endpoints[i].ClusterName
		}
	}
	return ""
}

// irWorld is a random proxy IR: clusters in any order (the binder sorts
// its own, other producers need not) and route configurations of virtual
// hosts routing to them.
type irWorld struct {
	rng      *rand.Rand
	clusters []*ir.Cluster
	routes   map[string][]*ir.VirtualHost
	trace    int // 0 off, 1 a collector of its own, 2 a collector that is also a routed cluster
	rev      int
}

func (w *irWorld) cluster() *ir.Cluster {
	w.rev++
	host := fmt.Sprintf("svc-%d.ns.svc.cluster.local", w.rng.IntN(40))
	port := uint32(80 + w.rng.IntN(2))
	c := &ir.Cluster{Name: fmt.Sprintf("outbound|%d||%s", port, host), Service: host, Port: port, Discovery: ir.DiscoveryEDS,
		ConnectTimeout: ir.Duration{Duration: 10e9}}
	if w.rng.IntN(3) == 0 {
		c.Discovery = ir.DiscoveryStrictDNS
	}
	for range 1 + w.rng.IntN(2) {
		c.Endpoints = append(c.Endpoints, ir.Endpoint{Address: fmt.Sprintf("10.0.%d.%d", w.rev%250, w.rng.IntN(250)), Port: 8080})
	}
	return c
}

func (w *irWorld) vhost() *ir.VirtualHost {
	host := fmt.Sprintf("h%d.example.com", w.rng.IntN(30))
	vh := &ir.VirtualHost{Name: host + ":80", Domains: []string{host}}
	for i := range 1 + w.rng.IntN(3) {
		r := &ir.Route{Name: fmt.Sprintf("r%d", i), Match: ir.Match{Path: &ir.StringMatch{Type: ir.MatchPrefix, Value: fmt.Sprintf("/p%d", w.rng.IntN(5))}}}
		if len(w.clusters) > 0 && w.rng.IntN(4) > 0 {
			r.Forward = &ir.Forward{Clusters: []ir.WeightedCluster{{Name: w.clusters[w.rng.IntN(len(w.clusters))].Name, Weight: 100}}}
		} else {
			r.DirectResponse = &ir.DirectResponse{Status: uint32(200 + w.rng.IntN(5))}
		}
		vh.Routes = append(vh.Routes, r)
	}
	return vh
}

func addUnique[T any](list []T, x T, name func(T) string) []T {
	if slices.ContainsFunc(list, func(y T) bool { return name(y) == name(x) }) {
		return list
	}
	return append(list, x)
}

func clusterName(c *ir.Cluster) string    { return c.Name }
func vhostName(vh *ir.VirtualHost) string { return vh.Name }

func (w *irWorld) edit() {
	if w.routes == nil {
		w.routes = map[string][]*ir.VirtualHost{}
	}
	rcName := fmt.Sprintf("http.%d", 80+w.rng.IntN(2))
	vhs := w.routes[rcName]
	switch w.rng.IntN(10) {
	case 0, 1:
		w.clusters = addUnique(slices.Clone(w.clusters), w.cluster(), clusterName)
	case 2:
		if len(w.clusters) > 0 { // a new version, maybe equal
			i := w.rng.IntN(len(w.clusters))
			c := *w.clusters[i]
			if w.rng.IntN(2) == 0 {
				c.Endpoints = append(slices.Clone(c.Endpoints), ir.Endpoint{Address: "10.9.9.9", Port: 8080})
			}
			w.clusters = slices.Clone(w.clusters)
			w.clusters[i] = &c
		}
	case 3:
		if len(w.clusters) > 0 {
			i := w.rng.IntN(len(w.clusters))
			w.clusters = slices.Delete(slices.Clone(w.clusters), i, i+1)
		}
	case 4:
		w.clusters = slices.Clone(w.clusters)
		w.rng.Shuffle(len(w.clusters), func(i, j int) { w.clusters[i], w.clusters[j] = w.clusters[j], w.clusters[i] })
	case 5, 6:
		w.routes[rcName] = addUnique(slices.Clone(vhs), w.vhost(), vhostName)
	case 7:
		if len(vhs) > 0 { // the binder makes a new virtual host every build
			i := w.rng.IntN(len(vhs))
			vh := *vhs[i]
			if w.rng.IntN(2) == 0 {
				vh.RequireTLS = !vh.RequireTLS
			}
			vhs = slices.Clone(vhs)
			vhs[i] = &vh
			w.routes[rcName] = vhs
		}
	case 8:
		if len(vhs) > 0 {
			i := w.rng.IntN(len(vhs))
			w.routes[rcName] = slices.Delete(slices.Clone(vhs), i, i+1)
		} else {
			delete(w.routes, rcName)
		}
	case 9:
		w.trace = w.rng.IntN(3)
	}
}

func (w *irWorld) tracing() *translate.Tracing {
	switch w.trace {
	case 1:
		return &translate.Tracing{Provider: &translate.TracingProvider{Name: "otel", Kind: "opentelemetry", Service: "collector.obs.svc.cluster.local", Port: 4317}}
	case 2:
		if len(w.clusters) > 0 {
			c := w.clusters[0]
			return &translate.Tracing{Provider: &translate.TracingProvider{Name: "otel", Kind: "opentelemetry", Service: c.Service, Port: c.Port}}
		}
	}
	return nil
}

func (w *irWorld) proxy() *ir.Proxy {
	p := &ir.Proxy{Name: "class", Clusters: w.clusters}
	names := make([]string, 0, len(w.routes))
	for n := range w.routes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		// New virtual host objects, as the binder makes each build.
		rc := &ir.RouteConfig{Name: n}
		for _, vh := range w.routes[n] {
			c := *vh
			rc.VirtualHosts = append(rc.VirtualHosts, &c)
		}
		p.RouteConfigs = append(p.RouteConfigs, rc)
	}
	return p
}
