// Package poll is how tests wait for something asynchronous: poll a
// condition until it holds or a deadline passes, never a bare sleep. The
// failure says what was awaited and, when the condition explains itself,
// why it still did not hold.
package poll

import (
	"context"
	"errors"
	"time"
)

// Timeout is the default deadline: generous, because tests share two
// CPUs with compilers and other test binaries, and a passing poll returns
// as soon as its condition holds.
const Timeout = 15 * time.Second

// TB is the part of testing.TB the helpers use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Until polls cond until it returns true, failing t after Timeout.
func Until(t TB, what string, cond func() bool) {
	t.Helper()
	UntilWithin(t, Timeout, what, cond)
}

// UntilWithin polls cond until it returns true, failing t after d.
func UntilWithin(t TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	NoError(t, d, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("condition not met")

// NoError polls check until it returns nil, failing t after d with the
// last error, so the failure says why the condition never held.
func NoError(t TB, d time.Duration, what string, check func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := Wait(ctx, check); err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
	}
}

// Wait polls check until it returns nil or ctx ends; it then returns the
// last error check returned. Polls start a millisecond apart and slow down
// to 20 ms, so a condition that holds soon is seen soon without spinning.
func Wait(ctx context.Context, check func() error) error {
	return WaitUpTo(ctx, 20*time.Millisecond, check)
}

// WaitUpTo is Wait with polls slowing down to at most maxInterval apart,
// for checks that cost something (a request to an API server).
func WaitUpTo(ctx context.Context, maxInterval time.Duration, check func() error) error {
	interval := time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return last
		case <-t.C:
		}
		if last = check(); last == nil {
			return nil
		}
		t.Reset(interval)
		interval = min(interval*2, maxInterval)
	}
}
