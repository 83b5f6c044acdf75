package proxy

import (
	"fmt"
	"reflect"
	"testing"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/internal/randconfig"
	"github.com/portico-gateway/portico/pkg/proxy/xdsclient"
)

// Wanted's cached answer equals a fresh computation after every step of
// random edits applied as the control plane would send them (clusters,
// endpoints, secrets, listeners, routes), and it is the very same slice
// while neither clusters nor listeners were replaced, which is what lets
// the xDS client skip comparing names after a route change.
func TestWantedEqualsFreshAndStaysWhileUnchanged(t *testing.T) {
	named := []string{resourcev3.EndpointType, resourcev3.SecretType, resourcev3.RouteType}
	checked := 0
	for seed := uint64(1); seed <= 20; seed++ {
		w := randconfig.New(seed, randconfig.Options{Kubernetes: seed%2 == 1})
		p := New(Options{NodeID: "test", Labels: randconfig.Classes[0]}, logr.Discard())
		for step := range 15 {
			if step > 0 {
				w.Edit()
			}
			snap := published(w)
			if snap == nil {
				continue
			}
			for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.SecretType, resourcev3.ListenerType, resourcev3.RouteType} {
				in := received(t, snap, typ)
				p.Update(typ, in, fmt.Sprint(step)) // a rejected type keeps its previous state; Wanted follows either
				for _, nt := range named {
					got := p.Wanted(nt)
					p.mu.Lock()
					want := p.wantedNames(nt)
					p.mu.Unlock()
					if !reflect.DeepEqual(got, want) && (len(got) > 0 || len(want) > 0) {
						t.Fatalf("seed %d step %d after %s: Wanted(%s) = %v, fresh %v", seed, step, typ, nt, got, want)
					}
					if again := p.Wanted(nt); len(got) > 0 && &again[0] != &got[0] {
						t.Fatalf("seed %d step %d: Wanted(%s) computed again with nothing changed", seed, step, nt)
					}
					checked++
				}
			}
			// A route update replaces neither clusters nor listeners.
			before := p.Wanted(resourcev3.EndpointType)
			p.Update(resourcev3.RouteType, map[string]xdsclient.Resource{}, "routes-only")
			if after := p.Wanted(resourcev3.EndpointType); len(before) > 0 && &after[0] != &before[0] {
				t.Fatalf("seed %d step %d: a route update invalidated the endpoints' wanted names", seed, step)
			}
		}
		p.cancel()
		p.Listeners.Close()
		p.Clusters.Close()
	}
	if checked == 0 {
		t.Fatal("nothing was checked")
	}
	t.Logf("%d answers checked", checked)
}
