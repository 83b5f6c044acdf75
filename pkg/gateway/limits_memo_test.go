package gateway

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/portico-gateway/portico/pkg/resource"
)

// TestLimitsMemoEqualsChecking drives a Builder through random edits of
// VirtualServices and DestinationRules of which some break Envoy's limits
// (an empty header prefix, a hash header name with a newline): new
// versions that break or mend them, objects added and
// deleted (every later one moves), and, in Kubernetes mode, informer
// copies of unchanged versions. After every edit the statuses must be
// those of a fresh Build: the memo must never hand one object's verdict to
// another that took its place.
func TestLimitsMemoEqualsChecking(t *testing.T) {
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 3))
		kube := seed%2 == 1
		rv := 0
		// stamp names an object, and in Kubernetes mode gives it a UID and
		// the next resource version.
		stamp := func(m *metav1.ObjectMeta, uid, name string) {
			rv++
			m.Name, m.Namespace = name, "ns"
			if kube {
				m.UID, m.ResourceVersion = types.UID(uid+name), fmt.Sprint(rv)
			}
		}
		newVS := func(name string, bad bool) *networking.VirtualService {
			vs := &networking.VirtualService{}
			stamp(&vs.ObjectMeta, "uid-", name)
			prefix := "/x"
			if bad {
				prefix = ""
			}
			vs.Spec.Hosts = []string{name + ".example.com"}
			vs.Spec.Http = []*networkingapi.HTTPRoute{{
				Match: []*networkingapi.HTTPMatchRequest{{Headers: map[string]*networkingapi.StringMatch{
					"x-a": {MatchType: &networkingapi.StringMatch_Prefix{Prefix: prefix}}}}},
				Route: []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: "web.example.com"}}},
			}}
			return vs
		}
		// A DestinationRule of the same name for each: two lists of one
		// length, checked one after the other.
		newDR := func(name string, bad bool) *networking.DestinationRule {
			dr := &networking.DestinationRule{}
			stamp(&dr.ObjectMeta, "dr-uid-", name)
			header := "x-user"
			if bad {
				header = "x\nuser"
			}
			dr.Spec.Host = name + ".example.com"
			dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{LoadBalancer: &networkingapi.LoadBalancerSettings{
				LbPolicy: &networkingapi.LoadBalancerSettings_ConsistentHash{ConsistentHash: &networkingapi.LoadBalancerSettings_ConsistentHashLB{
					HashKey: &networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName{HttpHeaderName: header}}}}}
			return dr
		}
		var list []*networking.VirtualService
		var drs []*networking.DestinationRule
		next := 0
		for range 8 {
			next++
			list = append(list, newVS(fmt.Sprintf("vs-%02d", next), rng.IntN(3) == 0))
			drs = append(drs, newDR(fmt.Sprintf("vs-%02d", next), rng.IntN(3) == 0))
		}
		bl := NewBuilder()
		for step := range 40 {
			switch op := rng.IntN(5); {
			case op == 0 && len(list) > 0: // a new version, breaking or not
				i := rng.IntN(len(list))
				list, drs = slices.Clone(list), slices.Clone(drs)
				if rng.IntN(2) == 0 {
					list[i] = newVS(list[i].Name, rng.IntN(2) == 0)
				} else {
					drs[i] = newDR(drs[i].Name, rng.IntN(2) == 0)
				}
			case op == 1:
				next++
				name := fmt.Sprintf("vs-%02d", next%40)
				list = append(slices.Clone(list), newVS(name, rng.IntN(3) == 0))
				slices.SortFunc(list, func(a, b *networking.VirtualService) int { return compareNames(a.Name, b.Name) })
				list = slices.CompactFunc(list, func(a, b *networking.VirtualService) bool { return a.Name == b.Name })
				drs = append(slices.Clone(drs), newDR(name, rng.IntN(3) == 0))
				slices.SortFunc(drs, func(a, b *networking.DestinationRule) int { return compareNames(a.Name, b.Name) })
				drs = slices.CompactFunc(drs, func(a, b *networking.DestinationRule) bool { return a.Name == b.Name })
			case op == 2 && len(list) > 0:
				i := rng.IntN(len(list))
				list = slices.Delete(slices.Clone(list), i, i+1)
				drs = slices.Delete(slices.Clone(drs), i, i+1)
			case op == 3 && kube: // an informer's copy of every unchanged version
				list, drs = slices.Clone(list), slices.Clone(drs)
				for i, vs := range list {
					list[i] = vs.DeepCopy()
				}
				for i, dr := range drs {
					drs[i] = dr.DeepCopy()
				}
			}
			res := &resource.Resources{VirtualServices: list, DestinationRules: drs}
			got, want := bl.Build(res, Options{}), Build(res, Options{})
			if !reflect.DeepEqual(got.Statuses, want.Statuses) {
				t.Fatalf("seed %d step %d: the Builder's statuses differ from a fresh Build's:\n%s\nwant:\n%s", seed, step, dump(got.Statuses), dump(want.Statuses))
			}
		}
	}
}

func compareNames(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func dump(v any) string { return fmt.Sprintf("%+v", v) }
