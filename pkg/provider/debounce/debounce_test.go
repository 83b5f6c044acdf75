package debounce

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// run drives a Batcher with events at the given offsets (ms) and a timer
// the way the providers' loops do, and returns the offsets at which
// batches were taken.
func run(b *Batcher, events []int) []int {
	var taken []int
	due := -1 // timer deadline, -1 when stopped
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	i := 0
	for i < len(events) || due >= 0 {
		if due >= 0 && (i == len(events) || due < events[i]) {
			b.Taken(at(due))
			taken = append(taken, due)
			due = -1
			continue
		}
		ms := events[i]
		i++
		if now, wait := b.Event(at(ms)); now {
			b.Taken(at(ms))
			taken = append(taken, ms)
		} else {
			due = ms + int(wait/time.Millisecond)
		}
	}
	return taken
}

func TestBatcher(t *testing.T) {
	for _, tc := range []struct {
		name    string
		leading bool
		events  []int
		want    []int
	}{
		{"trailing: one event waits the holdoff", false, []int{0}, []int{10}},
		{"trailing: a burst is one batch", false, []int{0, 3, 6, 9}, []int{19}},
		{"trailing: spaced events are their own batches", false, []int{0, 50}, []int{10, 60}},
		{"trailing: a long burst is cut at the maximum delay", false, []int{0, 8, 16, 24, 32, 40, 48, 56}, []int{30, 62}},
		{"leading: a lone event is taken at once", true, []int{0}, []int{0}},
		{"leading: the rest of a burst waits the holdoff", true, []int{0, 3, 6}, []int{0, 16}},
		{"leading: quiet again, at once again", true, []int{0, 3, 40}, []int{0, 13, 40}},
		{"leading: an event just after a taken batch waits", true, []int{0, 5}, []int{0, 15}},
		{"leading: an event a holdoff after the last batch is taken at once", true, []int{0, 10}, []int{0, 10}},
		{"leading: a long burst is still cut at the maximum delay", true, []int{0, 1, 9, 17, 25, 33, 41}, []int{0, 31, 51}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &Batcher{Holdoff: 10 * time.Millisecond, MaxDelay: 30 * time.Millisecond, Leading: tc.leading}
			if got := run(b, tc.events); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("events %v: taken at %v, want %v", tc.events, got, tc.want)
			}
			if b.Pending() {
				t.Error("a batch is still pending")
			}
		})
	}
}

// TestBatcherBounds checks, on random event times, what the providers
// rely on: every event is followed by a batch taken no earlier than it and
// no later than MaxDelay after the first event of its batch (nothing is
// lost or held back), and with the leading edge only a lone event is
// taken at once.
func TestBatcherBounds(t *testing.T) {
	const holdoff, maxDelay = 10, 30
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 2000 {
		var events []int
		at := 0
		for range 1 + r.IntN(20) {
			at += 1 + r.IntN(25) // distinct times: which batch a tie joins is the loop's order
			events = append(events, at)
		}
		for _, leading := range []bool{false, true} {
			b := &Batcher{Holdoff: holdoff * time.Millisecond, MaxDelay: maxDelay * time.Millisecond, Leading: leading}
			taken := run(b, events)
			// Each event is covered by the first batch at or after it.
			batchFirst := map[int]int{}
			for _, e := range events {
				j := 0
				for j < len(taken) && taken[j] < e {
					j++
				}
				if j == len(taken) {
					t.Fatalf("trial %d leading=%v: event at %d never taken (events %v, taken %v)", trial, leading, e, events, taken)
				}
				if f, ok := batchFirst[j]; !ok || e < f {
					batchFirst[j] = e
				}
			}
			for j, f := range batchFirst {
				if taken[j]-f > maxDelay {
					t.Fatalf("trial %d leading=%v: batch at %d waited %d ms from its first event at %d (events %v, taken %v)",
						trial, leading, taken[j], taken[j]-f, f, events, taken)
				}
			}
			// No batch is taken early: at least a holdoff after its last
			// event, unless the maximum delay cut it or (leading) it is a
			// lone event a holdoff after the previous batch.
			for j, ms := range taken {
				last, n := -1, 0
				for _, e := range events {
					if e <= ms && (j == 0 || e > taken[j-1]) {
						last, n = e, n+1
					}
				}
				if last < 0 || ms-last >= holdoff || ms-batchFirst[j] == maxDelay {
					continue
				}
				lone := leading && n == 1 && ms == last && (j == 0 || ms-taken[j-1] >= holdoff)
				if !lone {
					t.Fatalf("trial %d leading=%v: batch at %d taken %d ms after its last event (events %v, taken %v)",
						trial, leading, ms, ms-last, events, taken)
				}
			}
		}
	}
}
