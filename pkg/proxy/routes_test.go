package proxy

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/proxy/router"
)

func vhost(name, domain, cluster string) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: []string{domain}, Routes: []*routev3.Route{{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
	}}}
}

func domainsOf(vhosts []compiledVirtualHost) string {
	var out []string
	for _, vh := range vhosts {
		out = append(out, vh.domains...)
	}
	return strings.Join(out, ",")
}

func wire(t *testing.T, rc *routev3.RouteConfiguration) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCompileRouteConfigurationReusesVirtualHosts: a route configuration
// arriving again with one virtual host changed decodes and compiles only
// that one; the result equals a full decode.
func TestCompileRouteConfigurationReusesVirtualHosts(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "http.80", ValidateClusters: wrapperspb.Bool(false), IgnorePortInHostMatching: true,
		VirtualHosts: []*routev3.VirtualHost{vhost("a:80", "a.example.com", "ca"), vhost("b:80", "b.example.com", "cb"), vhost("c:80", "*.example.org", "cc")}}
	first := map[string]compiledVirtualHost{}
	t1, m1, err := compileWire(t, wire(t, rc), nil, first, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := domainsOf(m1); got != "a.example.com,b.example.com,*.example.org" {
		t.Fatalf("virtual hosts with domains %s", got)
	}
	if len(first) != 3 || strings.Join(t1.Clusters, ",") != "ca,cb,cc" || !t1.IgnorePortInHost {
		t.Fatalf("%d virtual hosts remembered, clusters %v", len(first), t1.Clusters)
	}

	changed := proto.Clone(rc).(*routev3.RouteConfiguration)
	changed.VirtualHosts[1] = vhost("b:80", "b.example.com", "cb-v2")
	second := map[string]compiledVirtualHost{}
	t2, m2, err := compileWire(t, wire(t, changed), first, second, t1, m1)
	if err != nil {
		t.Fatal(err)
	}
	if got := domainsOf(m2); got != "a.example.com,b.example.com,*.example.org" {
		t.Fatalf("virtual hosts with domains %s", got)
	}
	if m2[0].vh != m1[0].vh || m2[2].vh != m1[2].vh {
		t.Error("unchanged virtual hosts were compiled again")
	}
	if m2[1].vh == m1[1].vh || m2[1].key == m1[1].key {
		t.Error("the changed virtual host was not compiled")
	}
	if got := t2.VirtualHost("b.example.com").Routes[0].Clusters[0].Name; got != "cb-v2" {
		t.Errorf("b.example.com routes to %s", got)
	}
	if got := t2.VirtualHost("x.example.org:80").Routes[0].Clusters[0].Name; got != "cc" {
		t.Errorf("*.example.org routes to %s", got)
	}
	if len(second) != 3 {
		t.Errorf("%d virtual hosts remembered, want 3 (the old b forgotten)", len(second))
	}

	bad := proto.Clone(rc).(*routev3.RouteConfiguration)
	bad.VirtualHosts[2].IncludeAttemptCountInResponse = true
	if _, _, err := compileWire(t, wire(t, bad), first, map[string]compiledVirtualHost{}, t1, m1); err == nil || !strings.Contains(err.Error(), "c:80") {
		t.Errorf("an unsupported field in a virtual host: %v", err)
	}
	dup := proto.Clone(rc).(*routev3.RouteConfiguration)
	dup.VirtualHosts[1].Domains = []string{"a.example.com"}
	if _, _, err := compileWire(t, wire(t, dup), first, map[string]compiledVirtualHost{}, t1, m1); err == nil {
		t.Error("a domain in two virtual hosts must be rejected")
	}

	// Moved: found by their bytes' hash, not at their old places.
	moved := proto.Clone(rc).(*routev3.RouteConfiguration)
	moved.VirtualHosts[0], moved.VirtualHosts[2] = moved.VirtualHosts[2], moved.VirtualHosts[0]
	_, m3, err := compileWire(t, wire(t, moved), first, map[string]compiledVirtualHost{}, t1, m1)
	if err != nil {
		t.Fatal(err)
	}
	if m3[0].vh != m1[2].vh || m3[2].vh != m1[0].vh || m3[1].vh != m1[1].vh {
		t.Error("moved virtual hosts were compiled again, or taken from the wrong place")
	}

	// A configuration's hash is that of its content.
	again, err := splitRoutes(wire(t, rc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if same, _ := splitRoutes(wire(t, rc), m1); same.hash != again.hash {
		t.Error("the same bytes hash differently when compared by place")
	}
	if other, _ := splitRoutes(wire(t, changed), m1); other.hash == again.hash {
		t.Error("a changed virtual host left the configuration's hash unchanged")
	}
	if other, _ := splitRoutes(wire(t, moved), m1); other.hash == again.hash {
		t.Error("virtual hosts in another order left the configuration's hash unchanged")
	}
}

// compileWire splits and compiles a route configuration's bytes.
func compileWire(t *testing.T, raw []byte, prev, next map[string]compiledVirtualHost, last *router.Table, lastVHosts []compiledVirtualHost) (*router.Table, []compiledVirtualHost, error) {
	t.Helper()
	sp, err := splitRoutes(raw, lastVHosts)
	if err != nil {
		return nil, nil, err
	}
	return compileRouteConfiguration(sp, prev, next, last, lastVHosts)
}
