package idlegc

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// heapCase is a heap's state after a change that began at m and
// allocated extra bytes before, and the answer wanted for it.
type heapCase struct {
	name  string
	s     heapState
	m     Mark
	extra uint64
	want  bool
}

func TestDue(t *testing.T) {
	const mb = 1 << 20
	// Live 300 MB, goal 600 MB: the runtime may start a cycle from 510 MB.
	at := func(heap, allocs uint64) heapState {
		return heapState{allocs: allocs, goal: 600 * mb, live: 300 * mb, heap: heap}
	}
	for _, tc := range []heapCase{
		{"far from the trigger", at(320*mb, 1000*mb), Mark{990 * mb}, 0, false},
		{"the next change would cross it", at(495*mb, 1000*mb), Mark{990 * mb}, 0, true},
		{"the next change stays short of it", at(485*mb, 1000*mb), Mark{990 * mb}, 0, false},
		{"received bytes count", at(485*mb, 1000*mb), Mark{990 * mb}, 10 * mb, true},
		{"already past it", at(560*mb, 1000*mb), Mark{1000 * mb}, 0, true},
		{"a small heap is left alone", heapState{allocs: 100 * mb, goal: 40 * mb, live: 20 * mb, heap: 39 * mb}, Mark{90 * mb}, 0, false},
		{"no goal (GOGC=off)", heapState{allocs: 100 * mb, goal: 0, live: 20 * mb, heap: 39 * mb}, Mark{90 * mb}, 0, false},
		{"a mark from before the counter", at(495*mb, 1000*mb), Mark{1001 * mb}, 0, false},
	} {
		if got := due(tc.s, tc.m, tc.extra); got != tc.want {
			t.Errorf("%s: due = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fake returns a Collector whose heap reads state() and whose
// collections are counted on the returned channel.
func fake(quiet time.Duration, state func() heapState) (*Collector, chan struct{}) {
	c := New(logr.Discard(), quiet)
	c.read = state
	collected := make(chan struct{}, 10)
	c.collect = func() { collected <- struct{}{} }
	return c, collected
}

func TestEndCollectsWhenDue(t *testing.T) {
	const mb = 1 << 20
	heap := uint64(320 * mb)
	allocs := uint64(1000 * mb)
	c, collected := fake(0, func() heapState { return heapState{allocs: allocs, goal: 600 * mb, live: 300 * mb, heap: heap} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	m := c.Begin()
	allocs += 10 * mb
	c.End(m, 0)
	// Not due: a due change after it must be the only collection.
	m = c.Begin()
	allocs += 10 * mb
	heap = 500 * mb
	c.End(m, 0)
	select {
	case <-collected:
	case <-time.After(10 * time.Second):
		t.Fatal("no collection after a change that brought the heap near its trigger")
	}
	select {
	case <-collected:
		t.Fatal("two collections for one due change")
	default:
	}
}

func TestCollectionDroppedWhenAChangeBegins(t *testing.T) {
	const mb = 1 << 20
	state := func() heapState { return heapState{allocs: 1000 * mb, goal: 600 * mb, live: 300 * mb, heap: 590 * mb} }
	for _, quiet := range []time.Duration{0, time.Millisecond} {
		c, collected := fake(quiet, state)
		dropped := make(chan struct{}, 10)
		c.dropped = func() { dropped <- struct{}{} }
		// A due change, then another begins before Run gets to it: the
		// collection is dropped.
		c.End(c.Begin(), 0)
		c.Begin()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		select {
		case <-dropped:
		case <-collected:
			t.Errorf("quiet %v: collected although a change had begun", quiet)
		case <-time.After(10 * time.Second):
			t.Fatalf("quiet %v: the collection was neither run nor dropped", quiet)
		}
		cancel()
		<-done
	}

	// Cancelling the context ends Run while it waits out quiet.
	c, collected := fake(time.Hour, state)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.End(c.Begin(), 0)
	go func() { c.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end with its context while waiting to collect")
	}
	if len(collected) != 0 {
		t.Error("collected while waiting out quiet")
	}
}

func TestNilCollectorDoesNothing(t *testing.T) {
	var c *Collector
	c.End(c.Begin(), 1<<40)
}

func TestReadHeapReadsTheRuntime(t *testing.T) {
	s := readHeap()
	if s.allocs == 0 || s.goal == 0 || s.heap == 0 {
		t.Errorf("runtime metrics missing: %+v", s)
	}
}

func TestBurst(t *testing.T) {
	const mb = 1 << 20
	s := heapState{allocs: 1000 * mb, goal: 300 * mb, live: 140 * mb, heap: 150 * mb}
	for _, tc := range []heapCase{
		{"a cold start: more allocated than kept", s, Mark{700 * mb}, 0, true},
		{"an ordinary change", s, Mark{990 * mb}, 0, false},
		{"received bytes count", s, Mark{900 * mb}, 50 * mb, true},
		{"a small heap is left alone", heapState{allocs: 1000 * mb, goal: 40 * mb, live: 20 * mb, heap: 30 * mb}, Mark{700 * mb}, 0, false},
		{"a mark from before the counter", s, Mark{1001 * mb}, 0, false},
	} {
		if got := burst(tc.s, tc.m, tc.extra); got != tc.want {
			t.Errorf("%s: burst = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestEndReleasesAfterABurst: after a change that allocated more than the
// live heap, the collection returns free memory; ordinary due changes
// after it collect only.
func TestEndReleasesAfterABurst(t *testing.T) {
	const mb = 1 << 20
	allocs, heap := uint64(1000*mb), uint64(150*mb)
	c, collected := fake(0, func() heapState { return heapState{allocs: allocs, goal: 300 * mb, live: 140 * mb, heap: heap} })
	freed := make(chan struct{}, 10)
	c.free = func() { freed <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	m := c.Begin()
	allocs += 400 * mb // the first build of a cold start
	c.End(m, 0)
	select {
	case <-freed:
	case <-collected:
		t.Fatal("a burst was followed by a plain collection")
	case <-time.After(10 * time.Second):
		t.Fatal("no release after a burst")
	}
	m = c.Begin()
	allocs += 10 * mb
	heap = 290 * mb // due
	c.End(m, 0)
	select {
	case <-collected:
	case <-freed:
		t.Fatal("an ordinary change released memory")
	case <-time.After(10 * time.Second):
		t.Fatal("no collection after a due change")
	}
}
