package telemetry

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/portico-gateway/portico/pkg/status"
)

// TestResolverEqualsFreshMerges: a Resolver, which remembers which
// filters compile, gives for every random set of Telemetry resources
// exactly what the three merges give computed afresh, filters that do
// not compile included, however often it has seen them before.
func TestResolverEqualsFreshMerges(t *testing.T) {
	m := mesh(t, logMeshYAML+`
defaultProviders: {tracing: [otel]}
`)
	scope := Scope{RootNamespace: "istio-system", Namespace: "gw", Labels: map[string]string{"istio": "ingressgateway"}}
	filters := []string{"response.code >= 400", "response.code >=", "request.headers['x-debug'] == 'true'", "nope(", ""}
	providers := []string{"json-file", "text-file", "plain", "als", "nope", "envoy"}
	r := NewResolver(m)
	rng := rand.New(rand.NewPCG(7, 19))
	for step := range 200 {
		var tels []Telemetry
		for i := range rng.IntN(4) {
			ns := []string{"istio-system", "gw", "other"}[rng.IntN(3)]
			spec := fmt.Sprintf(`accessLogging: [{providers: [{name: %s}], filter: {expression: %q}}]
tracing: [{randomSamplingPercentage: %d}]
metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: %v}]}]`,
				providers[rng.IntN(len(providers))], filters[rng.IntN(len(filters))], rng.IntN(120), rng.IntN(2) == 0)
			tels = append(tels, tel(t, ns, fmt.Sprintf("t%d", i), spec))
		}
		got := r.Resolve(scope, tels)
		var want Class
		var tp, ap, mp []Problem
		want.Tracing, tp = Tracing(m, scope, tels)
		want.AccessLogging, ap = AccessLogging(m, scope, tels)
		want.Metrics, mp = Metrics(m, scope, tels)
		want.Problems = append(append(append(want.Problems, tp...), ap...), mp...)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: the resolver's\n%+v\ndiffers from the fresh merges'\n%+v", step, got, want)
		}
	}
}

// TestProblemStatus: each kind of problem becomes its Istio code on the
// resource, naming the field.
func TestProblemStatus(t *testing.T) {
	for _, tc := range []struct {
		kind         ProblemKind
		code, reason string
	}{
		{Invalid, "IST0106", status.ReasonInvalidSpec},
		{NotFound, "IST0101", status.ReasonProviderNotFound},
		{Unsupported, "PTC0001", status.ReasonUnsupported},
	} {
		m := Problem{Namespace: "ns", Name: "t", Field: "spec.tracing[0]", Message: "why", Kind: tc.kind}.Status()
		if m.Code.ID != tc.code || m.Reason != tc.reason || m.Field != "spec.tracing[0]" || m.Message != "why" || m.Level != status.Error {
			t.Errorf("kind %d: %+v, want code %s, reason %s, the field and the message", tc.kind, m, tc.code, tc.reason)
		}
	}
}
