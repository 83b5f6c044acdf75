package poll

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recorder captures what the helpers report instead of failing the test.
type recorder struct{ failed string }

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	start := time.Now()
	r := &recorder{}
	UntilWithin(r, 5*time.Second, "the third poll", func() bool { return n.Add(1) >= 3 })
	if r.failed != "" {
		t.Fatalf("failed: %s", r.failed)
	}
	if n.Load() != 3 {
		t.Errorf("polled %d times, want 3", n.Load())
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("took %v for three polls", el)
	}
}

func TestNoErrorFailsWithTheLastReason(t *testing.T) {
	r := &recorder{}
	var n atomic.Int32
	NoError(r, 50*time.Millisecond, "the impossible", func() error { return fmt.Errorf("attempt %d: still broken", n.Add(1)) })
	if !strings.Contains(r.failed, "the impossible") || !strings.Contains(r.failed, "still broken") {
		t.Errorf("failure message %q lacks what and why", r.failed)
	}
	if !strings.Contains(r.failed, fmt.Sprintf("attempt %d:", n.Load())) {
		t.Errorf("failure message %q is not the last error (%d attempts)", r.failed, n.Load())
	}
}

func TestWaitStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Wait(ctx, func() error { return errors.New("never") })
	if err == nil {
		t.Fatal("Wait returned nil for a condition that never holds")
	}
}
