package gateway

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

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
