package h2

import "testing"

// The receive window's bookkeeping, step by step: what may arrive, when
// a WINDOW_UPDATE is owed and how large.
func TestInflow(t *testing.T) {
	type step struct {
		op        string // "take" or "consume"
		n         int64
		wantOK    bool   // take
		wantInc   uint32 // consume
		wantAvail int64
	}
	cases := []struct {
		name      string
		avail     int64
		threshold int64
		steps     []step
	}{
		{"within the window", 100, 50, []step{
			{"take", 60, true, 0, 40},
			{"take", 40, true, 0, 0},
			{"take", 1, false, 0, 0},
		}},
		{"grants once the threshold is owed", 100, 50, []step{
			{"take", 100, true, 0, 0},
			{"consume", 30, false, 0, 0},
			{"consume", 19, false, 0, 0},
			{"consume", 1, false, 50, 50},
			{"take", 50, true, 0, 0},
			{"take", 1, false, 0, 0},
			{"consume", 50, false, 50, 50},
		}},
		{"a consume beyond the threshold grants all of it", 10, 4, []step{
			{"take", 10, true, 0, 0},
			{"consume", 10, false, 10, 10},
		}},
		{"nothing consumed, nothing granted", 10, 0, []step{
			{"consume", 0, false, 0, 10},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := inflow{avail: tc.avail}
			for i, s := range tc.steps {
				switch s.op {
				case "take":
					if ok := w.take(s.n); ok != s.wantOK {
						t.Fatalf("step %d: take(%d) = %v, want %v", i, s.n, ok, s.wantOK)
					}
				case "consume":
					if inc := w.consumed(s.n, tc.threshold); inc != s.wantInc {
						t.Fatalf("step %d: consumed(%d) = %d, want %d", i, s.n, inc, s.wantInc)
					}
				}
				if w.avail != s.wantAvail {
					t.Fatalf("step %d: avail %d, want %d", i, w.avail, s.wantAvail)
				}
			}
		})
	}
}

func TestGrowWindow(t *testing.T) {
	cases := []struct {
		w, n   int64
		wantOK bool
	}{
		{0, maxWindow, true},
		{1, maxWindow, false},
		{-100, maxWindow, true}, // SETTINGS may have pushed it below zero
		{maxWindow, -5, true},
	}
	for _, tc := range cases {
		w := tc.w
		if ok := growWindow(&w, tc.n); ok != tc.wantOK || w != tc.w+tc.n {
			t.Errorf("growWindow(%d, %d) = %v, window %d", tc.w, tc.n, ok, w)
		}
	}
}
