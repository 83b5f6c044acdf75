package router

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// AssembleFrom, patching the previous table, equals Assemble from scratch
// after every step of random edits: a virtual host's routes or clusters
// changing (what a one-VirtualService change looks like), its domains
// changing (exact, wildcard and "*"), hosts added and removed.
func TestAssembleFromEqualsAssemble(t *testing.T) {
	// Enough hosts that a one-host change is patched (AssembleFrom
	// rebuilds when more than an eighth changed).
	domains := []string{"*.example.com", "*.b.example.com", "api.*", "www.*", "*"}
	for i := range 80 {
		domains = append(domains, fmt.Sprintf("h%d.example.com", i))
	}
	clusters := []string{"c1", "c2", "c3", "c4"}
	total := 0
	for seed := uint64(1); seed <= 200; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		serial := 0
		newHost := func(ds []string) *CompiledVirtualHost {
			serial++
			var cs []string
			for _, c := range clusters {
				if r.IntN(3) == 0 {
					cs = append(cs, c)
				}
			}
			return &CompiledVirtualHost{VirtualHost: &VirtualHost{Name: fmt.Sprintf("vh-%d", serial)}, Domains: ds, Clusters: cs}
		}
		// Disjoint domains for a start, so that the table assembles.
		perm := r.Perm(len(domains))
		var vhosts []*CompiledVirtualHost
		for i := 0; i < len(perm); {
			n := 1 + r.IntN(2)
			var ds []string
			for ; n > 0 && i < len(perm); n-- {
				ds = append(ds, domains[perm[i]])
				i++
			}
			vhosts = append(vhosts, newHost(ds))
		}
		prev, err := Assemble("http.80", true, vhosts)
		if err != nil {
			t.Fatal(err)
		}
		patched := 0
		for step := range 30 {
			next := slices.Clone(vhosts)
			var what string
			switch k := r.IntN(10); {
			case k < 6: // content only
				i := r.IntN(len(next))
				next[i] = newHost(slices.Clone(next[i].Domains))
				what = "content of " + next[i].VirtualHost.Name
			case k < 7: // domains, possibly clashing
				i := r.IntN(len(next))
				next[i] = newHost([]string{domains[r.IntN(len(domains))]})
				what = "domains of " + next[i].VirtualHost.Name
			case k < 8 && len(next) > 1: // removed
				i := r.IntN(len(next))
				what = "removed " + next[i].VirtualHost.Name
				next = slices.Delete(next, i, i+1)
			case k < 9: // added, possibly clashing
				next = append(next, newHost([]string{domains[r.IntN(len(domains))]}))
				what = "added"
			default:
				what = "nothing"
			}
			before, err := Assemble("http.80", true, prev.from)
			if err != nil {
				t.Fatal(err)
			}
			got, gerr := AssembleFrom(prev, "http.80", true, next)
			want, werr := Assemble("http.80", true, next)
			// The previous table may still be serving: it is not touched.
			if !reflect.DeepEqual(prev, before) {
				t.Fatalf("seed %d step %d (%s): AssembleFrom modified the previous table", seed, step, what)
			}
			if (gerr == nil) != (werr == nil) {
				t.Fatalf("seed %d step %d (%s): AssembleFrom error %v, Assemble error %v", seed, step, what, gerr, werr)
			}
			if werr != nil {
				continue // the update is refused; the previous table stays
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d (%s): patched table differs\n got  %+v\n want %+v", seed, step, what, got, want)
			}
			if len(next) >= 16 && strings.HasPrefix(what, "content of") {
				patched++ // one change in at least 16: patched, not rebuilt
			}
			prev, vhosts = got, next
		}
		total += patched
	}
	if total == 0 {
		t.Fatal("no step took the patch path")
	}
	t.Logf("%d steps patched", total)
}
