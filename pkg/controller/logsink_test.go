package controller_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// TestLogSinkMemoEqualsComparingByKey: over random sequences of updates
// whose statuses are added, removed, changed, replaced by equal copies
// and shuffled, the sink logs exactly the resources whose status differs
// from the one the previous update had under the same key (or that it
// did not have), however the list is ordered.
func TestLogSinkMemoEqualsComparingByKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 29))
	key := func(i int) resource.Key {
		return resource.Key{Kind: "VirtualService", Namespace: fmt.Sprintf("ns-%d", i%3), Name: fmt.Sprintf("vs-%03d", i)}
	}
	make1 := func(k resource.Key, msg string) *status.Status {
		r := status.NewReport()
		r.Track(k, 1)
		if msg != "" {
			r.Add(k, status.Message{Code: status.ReferencedResourceNotFound, Level: status.Warning, Reason: status.ReasonSubsetNotFound, Message: msg})
		}
		return r.Finalize()[0]
	}
	for seq := range 40 {
		logs := &lines{}
		s := controller.NewLogSink(logs.logger())
		msgs := map[int]string{} // resource -> its message ("" for none)
		var prev map[resource.Key]*status.Status
		var list []*status.Status
		for step := range 30 {
			next := list[:0:0]
			for _, st := range list {
				if rng.IntN(12) == 0 {
					continue // deleted
				}
				next = append(next, st)
			}
			for range rng.IntN(4) {
				i := rng.IntN(60)
				if !slices.ContainsFunc(next, func(st *status.Status) bool { return st.Key == key(i) }) {
					next = append(next, make1(key(i), msgs[i]))
				}
			}
			for j, st := range next {
				var i int
				fmt.Sscanf(st.Key.Name, "vs-%d", &i)
				switch rng.IntN(10) {
				case 0: // changed
					msgs[i] = []string{"", "subset v2 not found", "subset v3 not found"}[rng.IntN(3)]
					next[j] = make1(st.Key, msgs[i])
				case 1: // an equal copy
					next[j] = make1(st.Key, msgs[i])
				}
			}
			if rng.IntN(4) == 0 {
				rng.Shuffle(len(next), func(a, b int) { next[a], next[b] = next[b], next[a] })
			} else if len(next) > 1 && rng.IntN(3) == 0 {
				a, b := rng.IntN(len(next)), rng.IntN(len(next))
				next[a], next[b] = next[b], next[a]
			}
			list = next

			var want []string
			for _, st := range list {
				old := prev[st.Key]
				if old == nil || !slices.Equal(old.Conditions, st.Conditions) || !slices.Equal(old.Messages, st.Messages) {
					want = append(want, st.Key.String())
				}
			}
			before := len(logs.all)
			s.Update(context.Background(), &gateway.Result{Statuses: slices.Clone(list)})
			var got []string
			for _, st := range list {
				if len(logs.matchingSince(before, `"`+st.Key.String()+`"`)) > 0 {
					got = append(got, st.Key.String())
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("sequence %d, step %d: logged %v, want %v", seq, step, got, want)
			}
			if n := len(logs.all) - before; n < len(want) {
				t.Fatalf("sequence %d, step %d: %d lines for %d changed statuses", seq, step, n, len(want))
			}
			prev = map[resource.Key]*status.Status{}
			for _, st := range list {
				prev[st.Key] = st
			}
		}
	}
}
