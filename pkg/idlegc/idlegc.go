// Package idlegc starts the garbage collector between configuration
// changes rather than in the middle of one.
//
// At 30,000 routes on one port the controller's live heap is ~370 MB and
// the proxy's ~330 MB; a collection of either marks for 150–300 ms on a
// 2-core machine, and a change that propagates while one runs took two to
// three times its median (200–300 ms against ~95 ms): the three slowest
// changes of a 30-change run were each one that overlapped a collection.
// Each change allocates 10–35 MB, so the runtime starts a collection every
// ten to forty changes, wherever the heap happens to reach its trigger.
//
// A Collector watches the heap after each change. When the next change
// could take the heap past the point where the runtime may start a cycle
// (GOGC's pacer starts one no earlier than 70% of the way from the last
// live heap to the goal), it runs the collection now, while nothing is
// propagating. The collections are as many, give or take one in a few,
// and their work is the same; only their timing moves.
//
// After a change that allocated more than the heap keeps (a cold start,
// a bulk apply), the collection also returns the free memory to the
// operating system. The runtime would keep it: its scavenger releases
// only what lies beyond the heap goal, twice the live heap, so a
// controller that took 5,000 VirtualServices in stayed at its cold
// start's 300 MiB RSS for good, though it needed 220.
package idlegc

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// Names of the runtime metrics read.
const (
	metricAllocs = "/gc/heap/allocs:bytes"
	metricGoal   = "/gc/heap/goal:bytes"
	metricLive   = "/gc/heap/live:bytes"
	metricHeap   = "/memory/classes/heap/objects:bytes"
)

// minGoal is the smallest heap goal worth acting on: below it a
// collection marks in a few milliseconds wherever it falls.
const minGoal = 64 << 20

// Collector runs a collection between changes when the next change would
// likely start one. Begin and End bracket a change; Run does the
// collecting. The zero value is not usable; use New.
type Collector struct {
	log   logr.Logger
	kick  chan struct{}
	quiet time.Duration
	// begun counts Begin calls, and asked is begun when End last asked
	// for a collection: one waiting out quiet is dropped when a change
	// began since (that change's End decides again).
	begun, asked atomic.Uint64
	// release is whether the collection asked for returns free memory
	// to the operating system.
	release atomic.Bool
	// read reads the heap's state; a test replaces it.
	read func() heapState
	// collect runs a collection, and free one that returns free memory;
	// a test replaces them.
	collect, free func()
	// dropped, if set, is called when a collection is dropped (tests).
	dropped func()
}

// heapState is what End decides on.
type heapState struct {
	allocs, goal, live, heap uint64
}

// New returns a Collector logging to log. A collection End asks for
// waits quiet first, for what the change set off after End (a
// controller's sends to its proxies), and is dropped if another change
// begins meanwhile.
func New(log logr.Logger, quiet time.Duration) *Collector {
	return &Collector{log: log, kick: make(chan struct{}, 1), quiet: quiet, read: readHeap, collect: runtime.GC, free: debug.FreeOSMemory}
}

func readHeap() heapState {
	s := []metrics.Sample{{Name: metricAllocs}, {Name: metricGoal}, {Name: metricLive}, {Name: metricHeap}}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return heapState{allocs: v(0), goal: v(1), live: v(2), heap: v(3)}
}

// Mark is the heap's allocation count when a change began.
type Mark struct{ allocs uint64 }

// Begin marks the start of a change. A nil Collector returns a Mark End
// ignores.
func (c *Collector) Begin() Mark {
	if c == nil {
		return Mark{}
	}
	c.begun.Add(1)
	return Mark{allocs: c.read().allocs}
}

// End marks the end of the change begun at m, which also allocated extra
// bytes before Begin (a response's buffer, received before it could be
// told from others). It asks Run for a collection when the heap is within
// twice this change's allocation of the earliest point the runtime may
// start one, and for a release too after a burst. It never blocks; a nil
// Collector does nothing.
func (c *Collector) End(m Mark, extra uint64) {
	if c == nil {
		return
	}
	s := c.read()
	if burst(s, m, extra) {
		c.release.Store(true)
	}
	if c.release.Load() || due(s, m, extra) {
		c.asked.Store(c.begun.Load())
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// due reports whether a collection should run now, after a change that
// began at m and allocated extra bytes before.
func due(s heapState, m Mark, extra uint64) bool {
	if s.goal < minGoal || s.goal <= s.live || s.allocs < m.allocs {
		return false
	}
	change := s.allocs - m.allocs + extra
	earliest := s.live + (s.goal-s.live)*7/10
	return s.heap+2*change >= earliest
}

// burst reports whether a change that began at m and allocated extra
// bytes before allocated more than the live heap (and the heap is worth
// acting on): what it leaves free is then worth returning.
func burst(s heapState, m Mark, extra uint64) bool {
	return s.goal >= minGoal && s.allocs >= m.allocs && s.allocs-m.allocs+extra >= s.live
}

// Run collects whenever End asks, until ctx ends.
func (c *Collector) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
			if c.quiet > 0 {
				t := time.NewTimer(c.quiet)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			if c.begun.Load() != c.asked.Load() {
				if c.dropped != nil {
					c.dropped()
				}
				continue
			}
			start := time.Now()
			if c.release.Swap(false) {
				c.free()
				c.log.V(1).Info("collected garbage and returned free memory after a burst", "duration", time.Since(start))
				continue
			}
			c.collect()
			c.log.V(1).Info("collected garbage between changes", "duration", time.Since(start))
		}
	}
}
