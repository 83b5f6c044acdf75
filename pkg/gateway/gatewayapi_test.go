package gateway_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/randconfig"
	"github.com/portico-gateway/portico/pkg/gateway"
)

// TestGatewayAPIBuilderMatchesBuild drives random configurations mixing
// Istio and Gateway API objects through edit sequences and checks, after
// every edit, that the Builder (whose caches see the synthetic objects
// the conversion makes anew each time) equals a fresh Build, Gateway API
// statuses included. It also checks the sequences really exercised the
// conversion: routes accepted and bound, listeners programmed, conflicts
// with Istio Gateways, refused references; a generator that stopped
// producing them would make the comparison vacuous.
func TestGatewayAPIBuilderMatchesBuild(t *testing.T) {
	seqs, steps := 60, 15
	if testing.Short() {
		seqs = 10
	}
	seen := map[string]int{}
	for seed := uint64(1); seed <= uint64(seqs); seed++ {
		w := randconfig.New(seed, randconfig.Options{Kubernetes: seed%2 == 0})
		opts := gateway.Options{Classes: randconfig.Classes, Now: func() time.Time { return randconfig.Now }}
		b := gateway.NewBuilder()
		var history []string
		for step := 0; step <= steps; step++ {
			if step > 0 {
				history = append(history, w.Edit())
			}
			res := w.Resources()
			got, want := b.Build(res, opts), gateway.Build(res, opts)
			if !reflect.DeepEqual(got, want) {
				g, _ := yaml.Marshal(got)
				wt, _ := yaml.Marshal(want)
				if string(g) != string(wt) {
					t.Fatalf("seed %d step %d: Builder differs from Build after\n  %s\nconfiguration:\n%s", seed, step, strings.Join(history, "\n  "), w.Dump())
				}
			}
			countCoverage(got, seen)
			for _, st := range got.Statuses {
				if got := st.Key; strings.Contains(got.Name, "~") {
					t.Fatalf("seed %d step %d: the status of synthetic object %s was returned in Result.Statuses", seed, step, got)
				}
			}
		}
	}
	for _, what := range []string{"route Accepted", "route not Accepted", "route ResolvedRefs False", "listener Programmed",
		"listener Conflicted", "listener ResolvedRefs False", "Envoy route from a Gateway API route", "TCP chain from a TCPRoute or TLSRoute"} {
		if seen[what] == 0 {
			t.Errorf("no sequence produced a %s: the generator no longer covers the conversion (seen: %v)", what, seen)
		}
	}
	t.Logf("coverage: %v", seen)
}

func countCoverage(r *gateway.Result, seen map[string]int) {
	for _, s := range r.APIStatuses {
		switch st := s.Status.(type) {
		case *gwv1.RouteStatus:
			for _, p := range st.Parents {
				for _, c := range p.Conditions {
					switch {
					case c.Type == "Accepted" && c.Status == metav1.ConditionTrue:
						seen["route Accepted"]++
					case c.Type == "Accepted":
						seen["route not Accepted"]++
					case c.Type == "ResolvedRefs" && c.Status == metav1.ConditionFalse:
						seen["route ResolvedRefs False"]++
					}
				}
			}
		case *gwv1.GatewayStatus:
			for _, l := range st.Listeners {
				for _, c := range l.Conditions {
					switch {
					case c.Type == "Programmed" && c.Status == metav1.ConditionTrue:
						seen["listener Programmed"]++
					case c.Type == "Conflicted" && c.Status == metav1.ConditionTrue:
						seen["listener Conflicted"]++
					case c.Type == "ResolvedRefs" && c.Status == metav1.ConditionFalse:
						seen["listener ResolvedRefs False"]++
					}
				}
			}
		}
	}
	for _, p := range r.Proxies {
		for _, rc := range p.RouteConfigs {
			for _, vh := range rc.VirtualHosts {
				for _, rt := range vh.Routes {
					if strings.HasPrefix(rt.Name, "httproute.") || strings.HasPrefix(rt.Name, "grpcroute.") {
						seen["Envoy route from a Gateway API route"]++
					}
				}
			}
		}
		for _, l := range p.Listeners {
			for _, fc := range l.FilterChains {
				if fc.TCP != nil && (strings.Contains(fc.TCP.Source.Name, "tcproute~") || strings.Contains(fc.TCP.Source.Name, "tlsroute~")) {
					seen["TCP chain from a TCPRoute or TLSRoute"]++
				}
			}
		}
	}
}
