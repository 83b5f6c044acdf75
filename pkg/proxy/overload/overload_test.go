package overload

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type closer struct{ closed atomic.Bool }

func (c *closer) Close() error { c.closed.Store(true); return nil }

func TestAdmitEvictsTheLongestIdleThenSheds(t *testing.T) {
	m := New(Options{MaxConnections: 4})
	var cs [4]*closer
	var conns [4]*Conn
	for i := range cs {
		cs[i] = &closer{}
		if conns[i] = m.Admit(cs[i]); conns[i] == nil {
			t.Fatalf("connection %d refused below the cap", i)
		}
	}
	// 1 and 3 become busy; 0 idled first, then 2.
	conns[1].Busy()
	conns[3].Busy()
	conns[0].state.Store(1)
	conns[2].state.Store(2)
	extra := &closer{}
	xc := m.Admit(extra)
	if xc == nil {
		t.Fatal("at the cap with idle connections, a new one must be admitted")
	}
	xc.Busy() // its request arrives
	if !cs[0].closed.Load() || cs[2].closed.Load() || cs[1].closed.Load() {
		t.Errorf("evicted: %v %v %v %v, want only the longest idle (0)", cs[0].closed.Load(), cs[1].closed.Load(), cs[2].closed.Load(), cs[3].closed.Load())
	}
	if !conns[0].Evicted() || m.Evicted.Load() != 1 {
		t.Errorf("eviction not recorded")
	}
	conns[0].Done()           // its owner notices the close and leaves
	conns[2].Head(time.Now()) // its head just started arriving: not evictable yet
	if c := m.Admit(&closer{}); c != nil {
		t.Fatal("at the cap with no idle connection, a new one must be shed")
	}
	if m.Rejected.Load() != 1 || m.Active() != 4 {
		t.Errorf("rejected %d active %d", m.Rejected.Load(), m.Active())
	}
	// A head arriving for longer than HeadGrace (slowloris) makes room.
	conns[2].state.Store(-(time.Now().Add(-2 * HeadGrace).UnixNano()))
	if m.Admit(&closer{}) == nil || !cs[2].closed.Load() {
		t.Fatal("a head slower than HeadGrace must give way")
	}
	conns[2].Done()
	conns[1].Done()
	if m.Admit(&closer{}) == nil {
		t.Fatal("a freed slot must admit")
	}
}

func TestAdmitIsConsistentUnderConcurrency(t *testing.T) {
	m := New(Options{MaxConnections: 50})
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				c := m.Admit(&closer{})
				if c == nil {
					continue
				}
				admitted.Add(1)
				if i%2 == 0 {
					c.Idle(time.Now())
				}
				c.Done()
			}
		}()
	}
	wg.Wait()
	if m.Active() != 0 || len(m.live) != 0 {
		t.Errorf("active %d, live %d after every connection is done", m.Active(), len(m.live))
	}
	if admitted.Load() == 0 {
		t.Error("nothing admitted")
	}
}

func TestBufferBudget(t *testing.T) {
	m := New(Options{MaxBufferedBytes: 100})
	if !m.ReserveBuffer(60) || m.ReserveBuffer(50) || !m.ReserveBuffer(40) {
		t.Fatal("budget of 100: 60 then 50 (refused) then 40")
	}
	if m.Buffered() != 100 {
		t.Errorf("buffered %d", m.Buffered())
	}
	m.ReleaseBuffer(60)
	m.ReleaseBuffer(40)
	if m.Buffered() != 0 {
		t.Errorf("buffered %d after release", m.Buffered())
	}
	var nilm *Manager
	if !nilm.ReserveBuffer(1 << 40) {
		t.Error("no manager: no budget")
	}
}

func TestDefaultMaxConnectionsLeavesDescriptors(t *testing.T) {
	n := DefaultMaxConnections()
	if n < 64 {
		t.Errorf("DefaultMaxConnections() = %d", n)
	}
}
