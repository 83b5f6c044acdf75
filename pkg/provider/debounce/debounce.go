// Package debounce decides when the providers take a snapshot after change
// events: a holdoff after the last event of a burst, bounded by a maximum
// delay from its first (Istio's PILOT_DEBOUNCE_AFTER and
// PILOT_DEBOUNCE_MAX), and optionally at once for a lone event.
//
// The leading edge is for sources whose events each describe a complete
// state, like the Kubernetes informers' (the object is in the store before
// the handler runs): after a quiet period, waiting only adds the holdoff to
// every change's propagation. A file write is not complete when its first
// event arrives (an in-place write truncates, then writes), so the file
// provider waits for the holdoff, except for a file renamed into place,
// which is complete when its event comes.
package debounce

import "time"

// Batcher is the state of the debounce; the zero value with Holdoff and
// MaxDelay set is ready. It is not safe for concurrent use: the provider's
// loop owns it.
type Batcher struct {
	// Holdoff is how long to wait after an event for more.
	Holdoff time.Duration
	// MaxDelay bounds the wait from a burst's first event.
	MaxDelay time.Duration
	// Leading takes an event at once when nothing was taken during the
	// Holdoff before it and no batch is waiting.
	Leading bool

	pending bool
	first   time.Time // first event of the waiting batch
	taken   time.Time // when the last batch was taken
}

// Event records an event at now. It returns now=true when the batch is to
// be taken at once (the caller then calls Taken), otherwise how long to
// wait from now before taking it; a later event may shorten or extend
// that wait, never past MaxDelay from the batch's first event.
func (b *Batcher) Event(at time.Time) (now bool, wait time.Duration) {
	if !b.pending {
		if b.Leading && (b.taken.IsZero() || at.Sub(b.taken) >= b.Holdoff) {
			return true, 0
		}
		b.pending, b.first = true, at
	}
	return false, max(0, min(b.Holdoff, b.MaxDelay-at.Sub(b.first)))
}

// Taken records that the batch was taken at at.
func (b *Batcher) Taken(at time.Time) {
	b.pending, b.taken = false, at
}

// Pending reports whether a batch is waiting.
func (b *Batcher) Pending() bool { return b.pending }
