package gateway

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	networking "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/portico-gateway/portico/pkg/ir"
)

// TestAppendRoutesReordersLikeCatchAllLast: a virtual host filled
// contribution by contribution (each cut after its first catch-all, as
// httpRoutes cuts them) ends with the routes catchAllLast makes of
// everything appended, although only hosts appendRoutes marked are
// reordered; and appendRoutes names the first catch-all already there.
func TestAppendRoutesReordersLikeCatchAllLast(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 11))
	route := func(vs, i int) *ir.Route {
		r := &ir.Route{Name: fmt.Sprintf("vs%d-%d", vs, i), Source: ir.Ref{Kind: "VirtualService", Name: fmt.Sprintf("vs%d", vs)}}
		switch rng.IntN(6) {
		case 0: // no path: every request
		case 1:
			r.Match.Path = &ir.StringMatch{Type: ir.MatchPrefix, Value: "/"}
		case 2:
			r.Match.Path = &ir.StringMatch{Type: ir.MatchRegex, Value: ".*"}
		case 3:
			r.Match.Path = &ir.StringMatch{Type: ir.MatchPrefix, Value: "/"}
			r.Match.Headers = []ir.HeaderMatch{{Name: "x", Match: ir.StringMatch{Type: ir.MatchExact, Value: "1"}}}
		default:
			r.Match.Path = &ir.StringMatch{Type: ir.MatchPrefix, Value: fmt.Sprintf("/p%d", rng.IntN(5))}
		}
		return r
	}
	for round := range 2000 {
		tbl := &routeTable{}
		vh := &ir.VirtualHost{}
		var all []*ir.Route
		for vs := range rng.IntN(5) {
			var routes []*ir.Route
			for i := range 1 + rng.IntN(4) {
				routes = append(routes, route(vs, i))
			}
			routes = untilCatchAll(routes)
			var want *ir.Ref
			if i := slices.IndexFunc(all, isCatchAll); i >= 0 {
				want = &all[i].Source
			}
			got := tbl.appendRoutes("h", vh, routes)
			if (got == nil) != (want == nil) || got != nil && *got != *want {
				t.Fatalf("seed %d round %d: appendRoutes named %v as the catch-all owner, want %v", seed, round, got, want)
			}
			all = append(all, routes...)
		}
		want := catchAllLast(slices.Clone(all))
		if got := tbl.finalRoutes("h", vh); !slices.Equal(got, want) {
			t.Fatalf("seed %d round %d: routes %v, want %v", seed, round, routeNames(got), routeNames(want))
		}
	}
}

func routeNames(routes []*ir.Route) []string {
	var out []string
	for _, r := range routes {
		out = append(out, r.Name)
	}
	return out
}

// TestHostIntersectionsEqualsMapDedupe: with few or many matching hosts
// (past the point where duplicates are found by a map), duplicates,
// wildcards on either side and namespace-scoped server hosts,
// hostIntersections lists the intersections in first-seen order, once
// each, as a map-deduplicated walk does, and hostsIntersect agrees with
// it being non-empty.
func TestHostIntersectionsEqualsMapDedupe(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 13))
	host := func() string {
		switch rng.IntN(4) {
		case 0:
			return "*"
		case 1:
			return fmt.Sprintf("*.d%d.example.com", rng.IntN(3))
		default:
			return fmt.Sprintf("h%d.d%d.example.com", rng.IntN(30), rng.IntN(3))
		}
	}
	for round := range 3000 {
		info := &vsInfo{obj: &networking.VirtualService{}}
		info.obj.Namespace = fmt.Sprintf("ns%d", rng.IntN(2))
		for range rng.IntN(40) {
			info.hosts = append(info.hosts, host())
		}
		s := &gwServer{}
		for range 1 + rng.IntN(4) {
			ns := "*"
			if rng.IntN(3) == 0 {
				ns = fmt.Sprintf("ns%d", rng.IntN(2))
			}
			s.hosts = append(s.hosts, serverHost{Namespace: ns, Host: host()})
		}
		var want []string
		seen := map[string]bool{}
		for _, vh := range info.hosts {
			for _, sh := range s.hosts {
				if sh.Namespace != "*" && sh.Namespace != info.obj.Namespace {
					continue
				}
				if h, ok := intersectHosts(vh, sh.Host); ok && !seen[h] {
					seen[h] = true
					want = append(want, h)
				}
			}
		}
		got := hostIntersections(info, s)
		if !slices.Equal(got, want) {
			t.Fatalf("seed %d round %d: %v, want %v", seed, round, got, want)
		}
		if hostsIntersect(info, s) != (len(want) > 0) {
			t.Fatalf("seed %d round %d: hostsIntersect %v with %d intersections", seed, round, !(len(want) > 0), len(want))
		}
	}
}
