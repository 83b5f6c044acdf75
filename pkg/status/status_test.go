package status

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portico-gateway/portico/pkg/resource"
)

var vs = resource.Key{Kind: "VirtualService", Namespace: "default", Name: "vs"}

func msg(level Level, reason, field, text string) Message {
	return Message{Code: SchemaValidationError, Level: level, Reason: reason, Field: field, Message: text}
}

func TestConditionsFollowMessages(t *testing.T) {
	cases := []struct {
		name                     string
		msgs                     []Message
		reject                   bool
		accepted, reason, substr string
		resolved, resolvedReason string
	}{
		{"nothing wrong", nil, false, "True", ReasonAccepted, "Configuration is valid and in use", "True", ReasonResolvedRefs},
		{"a warning", []Message{msg(Warning, ReasonUnsupported, "spec.x", "ignored")}, false,
			"True", ReasonAccepted, "In use, with warnings: Warning [IST0106] spec.x: ignored", "True", ReasonResolvedRefs},
		{"an error", []Message{msg(Warning, ReasonUnsupported, "", "w"), msg(Error, ReasonInvalidSpec, "spec.http[0]", "bad regex")}, false,
			"True", ReasonPartiallyInvalid, "Partly in use: Error [IST0106] spec.http[0]: bad regex", "True", ReasonResolvedRefs},
		{"rejected", []Message{msg(Warning, ReasonUnsupported, "", "w"), msg(Error, ReasonConflictingServer, "spec.servers[0]", "lost")}, true,
			"False", ReasonConflictingServer, "spec.servers[0]: lost", "True", ReasonResolvedRefs},
		{"rejected with only a warning", []Message{msg(Warning, ReasonUnsupported, "", "mesh only")}, true,
			"False", ReasonUnsupported, "mesh only", "True", ReasonResolvedRefs},
		{"missing references", []Message{msg(Warning, ReasonSubsetNotFound, "a", "no v3"), msg(Error, ReasonGatewayNotFound, "b", "no gw")}, false,
			"True", ReasonPartiallyInvalid, "no gw", "False", ReasonGatewayNotFound},
	}
	for _, c := range cases {
		r := NewReport()
		r.Track(vs, 3)
		for _, m := range c.msgs {
			r.Add(vs, m)
		}
		if c.reject {
			r.Get(vs).Reject()
		}
		st := r.Finalize()[0]
		acc, res := st.Condition(Accepted), st.Condition(ResolvedRefs)
		if acc.Status != c.accepted || acc.Reason != c.reason || !strings.Contains(acc.Message, c.substr) {
			t.Errorf("%s: Accepted = %+v", c.name, acc)
		}
		if res.Status != c.resolved || res.Reason != c.resolvedReason {
			t.Errorf("%s: ResolvedRefs = %+v", c.name, res)
		}
		if acc.ObservedGeneration != 3 || res.ObservedGeneration != 3 {
			t.Errorf("%s: observedGeneration %d/%d", c.name, acc.ObservedGeneration, res.ObservedGeneration)
		}
		for i := 1; i < len(st.Messages); i++ {
			if levelRank(st.Messages[i-1].Level) > levelRank(st.Messages[i].Level) {
				t.Errorf("%s: messages not ordered by severity: %v", c.name, st.Messages)
			}
		}
	}
}

func TestReportKeepsOneCopyAndTheHighestGeneration(t *testing.T) {
	r := NewReport()
	m := msg(Error, ReasonInvalidSpec, "spec", "bad")
	r.Add(vs, m)
	r.Add(vs, m) // the same resource bound for a second class
	r.Track(vs, 2)
	r.Track(vs, 1)
	st := r.Finalize()[0]
	if len(st.Messages) != 1 || st.ObservedGeneration != 2 {
		t.Errorf("status %+v", st)
	}
	r.Reject(resource.Key{Kind: "Gateway", Name: "gw"}, m)
	if !r.Get(resource.Key{Kind: "Gateway", Name: "gw"}).Rejected() {
		t.Error("Reject did not reject")
	}
}

func TestFinalizeSortsByKindNamespaceName(t *testing.T) {
	r := NewReport()
	for _, k := range []resource.Key{{Kind: "VirtualService", Namespace: "b", Name: "a"}, {Kind: "Gateway", Namespace: "z", Name: "z"},
		{Kind: "VirtualService", Namespace: "a", Name: "b"}, {Kind: "VirtualService", Namespace: "a", Name: "a"}} {
		r.Track(k, 1)
	}
	var got []string
	for _, s := range r.Finalize() {
		got = append(got, s.Key.String())
	}
	want := "Gateway z/z,VirtualService a/a,VirtualService a/b,VirtualService b/a"
	if strings.Join(got, ",") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

// WithMessages must not touch the status it copies: a build's statuses
// may be shared with a cache.
func TestWithMessagesCopies(t *testing.T) {
	r := NewReport()
	r.Track(vs, 1)
	r.SetExtra(vs, "ports", "80")
	orig := r.Finalize()[0]
	m := Message{Code: GatewayNotServed, Level: Error, Reason: ReasonPortUnavailable, Field: "spec.servers[0].port", Message: "proxy p cannot serve port 80"}
	cp := orig.WithMessages(m, m)
	if len(orig.Messages) != 0 || orig.Condition(Accepted).Reason != ReasonAccepted {
		t.Errorf("the original changed: %+v", orig)
	}
	if len(cp.Messages) != 1 || cp.Condition(Accepted).Reason != ReasonPartiallyInvalid || !strings.Contains(cp.Condition(Accepted).Message, "port 80") {
		t.Errorf("copy: %+v", cp)
	}
	cp.Extra["ports"] = "changed"
	if orig.Extra["ports"] != "80" {
		t.Error("the copy shares Extra with the original")
	}
}

func TestMessageString(t *testing.T) {
	if s := msg(Error, ReasonInvalidSpec, "spec.a", "x").String(); s != "Error [IST0106] spec.a: x" {
		t.Errorf("%q", s)
	}
	if s := msg(Info, ReasonInvalidSpec, "", "x").String(); s != "Info [IST0106] x" {
		t.Errorf("%q", s)
	}
}

// TestSortStatusesEqualsSort: random keys in random order, few or many
// namespaces, ties broken by group, sort exactly as a plain sort by
// compareKeys does.
func TestSortStatusesEqualsSort(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 7))
	kinds := []string{"VirtualService", "Gateway", "DestinationRule", "HTTPRoute"}
	groups := []string{"networking.istio.io", "gateway.networking.k8s.io"}
	for round := range 300 {
		n := rng.IntN(200)
		namespaces := 1 + rng.IntN(1+n)
		seen := map[resource.Key]bool{}
		var in []*Status
		for range n {
			k := resource.Key{Kind: kinds[rng.IntN(len(kinds))], Group: groups[rng.IntN(len(groups))],
				Namespace: fmt.Sprintf("ns-%d", rng.IntN(namespaces)), Name: fmt.Sprintf("n-%d", rng.IntN(n+1))}
			if !seen[k] {
				seen[k] = true
				in = append(in, &Status{Key: k})
			}
		}
		switch rng.IntN(3) {
		case 0: // as the builder tracks them: by kind, then name, then namespace
			slices.SortFunc(in, func(a, b *Status) int {
				return cmp.Or(strings.Compare(a.Key.Kind, b.Key.Kind), strings.Compare(a.Key.Name, b.Key.Name),
					strings.Compare(a.Key.Namespace, b.Key.Namespace), strings.Compare(a.Key.Group, b.Key.Group))
			})
		case 1:
			rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
		}
		want := slices.Clone(in)
		slices.SortFunc(want, func(a, b *Status) int { return compareKeys(a.Key, b.Key) })
		got := slices.Clone(in)
		sortStatuses(got)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("seed %d round %d: position %d is %v, want %v", seed, round, i, got[i].Key, want[i].Key)
			}
		}
	}
}

// TestFinalizeSharesOnlyWhatIsEqual: a report of random statuses (with
// and without messages, rejected or not, few generations) finalizes each
// to exactly the conditions finalizing it alone gives; statuses share
// conditions only when they carry nothing else, and a shared slice is
// full, so appending to it copies.
func TestFinalizeSharesOnlyWhatIsEqual(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 9))
	levels := []Level{Error, Warning, Info}
	reasons := []string{ReasonDestinationNotFound, ReasonInvalidSpec, ReasonConflictingServer}
	sharing := 0
	for round := range 200 {
		r := NewReport()
		var alone []*Status
		for i := range 1 + rng.IntN(50) {
			key := resource.Key{Kind: "VirtualService", Namespace: "ns", Name: fmt.Sprintf("vs-%d", i)}
			r.Track(key, int64(1+rng.IntN(3)))
			for range rng.IntN(3) {
				r.Add(key, Message{Level: levels[rng.IntN(len(levels))], Reason: reasons[rng.IntN(len(reasons))], Message: fmt.Sprint(rng.IntN(5))})
			}
			s := r.Get(key)
			if len(s.Messages) > 0 && rng.IntN(4) == 0 {
				s.Reject()
			}
			cp := *s
			cp.Messages = slices.Clone(s.Messages)
			alone = append(alone, &cp)
		}
		byKey := map[resource.Key]*Status{}
		for _, s := range r.Finalize() {
			byKey[s.Key] = s
		}
		shared := map[*Condition][]*Status{}
		for _, want := range alone {
			want.finalize()
			got := byKey[want.Key]
			if !slices.Equal(got.Conditions, want.Conditions) {
				t.Fatalf("seed %d round %d: %s: conditions %v, alone %v", seed, round, want.Key, got.Conditions, want.Conditions)
			}
			if len(got.Conditions) != cap(got.Conditions) {
				t.Fatalf("seed %d round %d: %s: conditions have spare capacity %d", seed, round, want.Key, cap(got.Conditions)-len(got.Conditions))
			}
			shared[&got.Conditions[0]] = append(shared[&got.Conditions[0]], got)
		}
		for _, group := range shared {
			sharing += len(group) - 1
			for _, s := range group[1:] {
				if len(s.Messages) > 0 || s.Rejected() || s.ObservedGeneration != group[0].ObservedGeneration || len(group[0].Messages) > 0 {
					t.Fatalf("seed %d round %d: %s shares conditions with %s", seed, round, s.Key, group[0].Key)
				}
			}
		}
	}
	if sharing == 0 {
		t.Fatal("no two statuses shared their conditions")
	}
}

// TestReportMemoEqualsFreshReport: over random sequences of builds that
// track keys in the last build's order but for keys added, removed,
// swapped or shuffled, with random generations, then add messages to
// tracked and untracked keys and look keys up, a report made through a
// ReportMemo behaves exactly like a fresh one (every Get, and the
// finalized statuses, some of them handed on from the last build), and
// the memo's index holds exactly the last build's keys; a build that
// did not finish leaves the next one working.
func TestReportMemoEqualsFreshReport(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 17))
	key := func(i int) resource.Key {
		return resource.Key{Kind: []string{"Gateway", "VirtualService"}[i%2], Namespace: fmt.Sprintf("ns-%d", i%3), Name: fmt.Sprintf("r-%02d", i)}
	}
	handedOn := 0 // statuses the last build's Finalize returned, returned again
	for seq := range 200 {
		var m ReportMemo
		var last []*Status
		var keys []int
		for i := range rng.IntN(12) {
			keys = append(keys, i)
		}
		for step := range 15 {
			keys = slices.Clone(keys)
			switch rng.IntN(6) {
			case 0: // one added somewhere
				i := rng.IntN(40)
				if !slices.Contains(keys, i) {
					keys = slices.Insert(keys, rng.IntN(len(keys)+1), i)
				}
			case 1:
				if len(keys) > 0 {
					i := rng.IntN(len(keys))
					keys = slices.Delete(keys, i, i+1)
				}
			case 2:
				if len(keys) > 1 {
					a, b := rng.IntN(len(keys)), rng.IntN(len(keys))
					keys[a], keys[b] = keys[b], keys[a]
				}
			case 3:
				rng.Shuffle(len(keys), func(a, b int) { keys[a], keys[b] = keys[b], keys[a] })
			case 4:
				if len(keys) > 0 {
					keys = keys[:rng.IntN(len(keys))] // the last ones gone
				}
			}
			got, want := m.NewReport(), NewReport()
			gens := map[resource.Key]int64{} // the highest generation tracked
			for _, i := range keys {
				g := int64(rng.IntN(3))
				got.Track(key(i), g)
				want.Track(key(i), g)
				gens[key(i)] = max(gens[key(i)], g)
			}
			for range rng.IntN(8) {
				k := key(rng.IntN(44))
				switch rng.IntN(4) {
				case 3: // tracked again, at a later generation
					got.Track(k, 4)
					want.Track(k, 4)
					gens[k] = 4
				case 0:
					msg := Message{Code: SchemaValidationError, Level: Error, Reason: ReasonInvalidSpec, Message: fmt.Sprint(rng.IntN(3))}
					got.Add(k, msg)
					want.Add(k, msg)
				case 1:
					msg := Message{Code: ReferencedResourceNotFound, Level: Warning, Reason: ReasonInvalidSpec, Message: "gone"}
					got.Reject(k, msg)
					want.Reject(k, msg)
				default:
					g, w := got.Get(k), want.Get(k)
					if (g == nil) != (w == nil) || g != nil && g.Key != k {
						t.Fatalf("sequence %d, step %d: Get(%v) = %v, want %v", seq, step, k, g, w)
					}
				}
			}
			if rng.IntN(20) == 0 { // a build that did not finish
				m.Keep(got)
				continue
			}
			gs, ws := got.Finalize(), want.Finalize()
			if !reflect.DeepEqual(gs, ws) {
				t.Fatalf("sequence %d, step %d: statuses\n%+v\nwant\n%+v", seq, step, gs, ws)
			}
			for _, st := range gs {
				if slices.Contains(last, st) {
					handedOn++
				}
				if st.ObservedGeneration != gens[st.Key] {
					t.Fatalf("sequence %d, step %d: %v observed generation %d, tracked up to %d", seq, step, st.Key, st.ObservedGeneration, gens[st.Key])
				}
			}
			m.Keep(got)
			last = gs
			if len(m.index) != got.Len() {
				t.Fatalf("sequence %d, step %d: the memo's index holds %d keys, the report tracked %d", seq, step, len(m.index), got.Len())
			}
		}
	}
	if handedOn == 0 {
		t.Error("no status was handed on from the last build: the reuse went untested")
	}
}
