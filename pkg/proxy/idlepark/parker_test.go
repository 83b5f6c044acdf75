//go:build linux

package idlepark

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"syscall"
	"testing"
	"time"
)

// pair returns the two ends of a real loopback TCP connection.
func pair(t testing.TB, ln net.Listener) (server, client net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// resumed records how a park ended.
func resumed() (func(error), chan error) {
	ch := make(chan error, 2)
	return func(err error) { ch <- err }, ch
}

func wait(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("not resumed within 10s")
		return nil
	}
}

func TestParkResumes(t *testing.T) {
	ln := listen(t)
	for _, tc := range []struct {
		name string
		// before runs before Park, after runs after it.
		before, after func(p *Parker, w *Waiter, client net.Conn)
		deadline      time.Duration
		want          func(error) bool
	}{
		{name: "bytes arrive", after: func(_ *Parker, _ *Waiter, c net.Conn) { c.Write([]byte("GET")) },
			want: func(err error) bool { return err == nil }},
		{name: "bytes already there", before: func(_ *Parker, _ *Waiter, c net.Conn) { c.Write([]byte("GET")) },
			want: func(err error) bool { return err == nil }},
		{name: "peer closes", after: func(_ *Parker, _ *Waiter, c net.Conn) { c.Close() },
			want: func(err error) bool { return err == nil }},
		{name: "peer half-closes", after: func(_ *Parker, _ *Waiter, c net.Conn) { c.(*net.TCPConn).CloseWrite() },
			want: func(err error) bool { return err == nil }},
		{name: "deadline", deadline: 50 * time.Millisecond,
			want: func(err error) bool {
				var te interface{ Timeout() bool }
				return errors.Is(err, ErrDeadline) && errors.As(err, &te) && te.Timeout()
			}},
		{name: "cancel", after: func(p *Parker, w *Waiter, _ net.Conn) { p.Cancel(w, net.ErrClosed) },
			want: func(err error) bool { return errors.Is(err, net.ErrClosed) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := New(t.Context())
			s, c := pair(t, ln)
			var w Waiter
			if tc.before != nil {
				tc.before(p, &w, c)
			}
			resume, ch := resumed()
			var deadline time.Time
			if tc.deadline > 0 {
				deadline = time.Now().Add(tc.deadline)
			}
			if err := p.Park(&w, s.(syscall.Conn), deadline, resume); err != nil {
				t.Fatal(err)
			}
			if tc.after != nil {
				tc.after(p, &w, c)
			}
			if err := wait(t, ch); !tc.want(err) {
				t.Fatalf("resumed with %v", err)
			}
			if w.Parked() || p.Len() != 0 {
				t.Fatalf("still parked after resuming: %v, %d", w.Parked(), p.Len())
			}
			if p.Cancel(&w, net.ErrClosed) {
				t.Fatal("Cancel after resuming reported a park")
			}
			// Nothing later resumes it again.
			c.Write([]byte("more"))
			select {
			case err := <-ch:
				t.Fatalf("resumed twice (second: %v)", err)
			case <-time.After(50 * time.Millisecond):
			}
		})
	}
}

// A connection parks again and again through the same Waiter: the
// timer of an earlier park must not end a later one.
func TestReparkIgnoresStaleTimer(t *testing.T) {
	ln := listen(t)
	p := New(t.Context())
	s, c := pair(t, ln)
	var w Waiter
	for i := range 20 {
		resume, ch := resumed()
		// A deadline that is about to pass, then data right away: the
		// data usually wins and the timer is stopped as it fires.
		if err := p.Park(&w, s.(syscall.Conn), time.Now().Add(time.Millisecond), resume); err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		wait(t, ch)
		buf := make([]byte, 16)
		s.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := s.Read(buf); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		// A long park must not be ended by the previous round's timer.
		resume, ch = resumed()
		if err := p.Park(&w, s.(syscall.Conn), time.Now().Add(time.Hour), resume); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-ch:
			t.Fatalf("round %d: a long park resumed early with %v", i, err)
		case <-time.After(5 * time.Millisecond):
		}
		if !p.Cancel(&w, net.ErrClosed) {
			t.Fatalf("round %d: not parked", i)
		}
		wait(t, ch)
	}
}

func TestStopResumesEveryParkedConnection(t *testing.T) {
	ln := listen(t)
	ctx, cancel := context.WithCancel(t.Context())
	p := New(ctx)
	const n = 50
	chans := make([]chan error, n)
	waiters := make([]Waiter, n)
	for i := range n {
		s, _ := pair(t, ln)
		var resume func(error)
		resume, chans[i] = resumed()
		if err := p.Park(&waiters[i], s.(syscall.Conn), time.Time{}, resume); err != nil {
			t.Fatal(err)
		}
	}
	if p.Len() != n {
		t.Fatalf("Len = %d, want %d", p.Len(), n)
	}
	cancel()
	for i := range n {
		if err := wait(t, chans[i]); !errors.Is(err, ErrClosed) {
			t.Fatalf("connection %d resumed with %v", i, err)
		}
	}
	s, _ := pair(t, ln)
	var w Waiter
	if err := p.Park(&w, s.(syscall.Conn), time.Time{}, func(error) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Park after stop: %v", err)
	}
}

// Many connections, each ended by a random one of data, hang-up,
// deadline or cancel, in random order, some parked several times: each
// park resumes exactly once, for its own reason.
func TestRandomParksResumeOnceForTheirReason(t *testing.T) {
	ln := listen(t)
	p := New(t.Context())
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	const n = 200
	type conn struct {
		s, c net.Conn
		w    Waiter
	}
	conns := make([]*conn, n)
	for i := range conns {
		s, c := pair(t, ln)
		conns[i] = &conn{s: s, c: c}
	}
	for round := range 3 {
		type park struct {
			how int // 0 data, 1 hang-up, 2 deadline, 3 cancel
			ch  chan error
		}
		parks := make([]park, n)
		for i, cn := range conns {
			how := rng.IntN(4)
			if round < 2 && how == 1 {
				how = 0 // keep connections usable until the last round
			}
			var deadline time.Time
			if how == 2 {
				deadline = time.Now().Add(time.Duration(1+rng.IntN(30)) * time.Millisecond)
			} else {
				deadline = time.Now().Add(time.Minute)
			}
			resume, ch := resumed()
			if err := p.Park(&cn.w, cn.s.(syscall.Conn), deadline, resume); err != nil {
				t.Fatal(err)
			}
			parks[i] = park{how, ch}
		}
		for _, i := range rng.Perm(n) {
			switch parks[i].how {
			case 0:
				conns[i].c.Write([]byte("x"))
			case 1:
				conns[i].c.Close()
			case 3:
				p.Cancel(&conns[i].w, net.ErrClosed)
			}
		}
		for i := range parks {
			err := wait(t, parks[i].ch)
			ok := false
			switch parks[i].how {
			case 0, 1:
				ok = err == nil
			case 2:
				ok = errors.Is(err, ErrDeadline)
			case 3:
				ok = errors.Is(err, net.ErrClosed)
			}
			if !ok {
				t.Fatalf("round %d conn %d (how %d): resumed with %v", round, i, parks[i].how, err)
			}
			if parks[i].how == 0 {
				buf := make([]byte, 8)
				conns[i].s.Read(buf)
			}
		}
		if p.Len() != 0 {
			t.Fatalf("round %d: %d still parked", round, p.Len())
		}
		for i := range parks {
			select {
			case err := <-parks[i].ch:
				t.Fatalf("round %d conn %d resumed twice (%v)", round, i, err)
			default:
			}
		}
	}
}

// BenchmarkParkResume is what a connection pays per request when it
// parks between requests: park, a byte arrives, resume in a new
// goroutine, read it. BenchmarkBlockedRead is the same exchange with a
// goroutine blocked in Read instead.
func BenchmarkParkResume(b *testing.B) {
	ln := listen(b)
	p := New(b.Context())
	s, c := pair(b, ln)
	var w Waiter
	ch := make(chan error, 1)
	resume := func(err error) { ch <- err }
	buf := make([]byte, 1)
	for b.Loop() {
		if err := p.Park(&w, s.(syscall.Conn), time.Now().Add(time.Minute), resume); err != nil {
			b.Fatal(err)
		}
		c.Write(buf)
		if err := <-ch; err != nil {
			b.Fatal(err)
		}
		s.Read(buf)
	}
}

func BenchmarkBlockedRead(b *testing.B) {
	ln := listen(b)
	s, c := pair(b, ln)
	ch := make(chan error, 1)
	go func() {
		buf := make([]byte, 1)
		for {
			_, err := s.Read(buf)
			ch <- err
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 1)
	for b.Loop() {
		c.Write(buf)
		if err := <-ch; err != nil {
			b.Fatal(err)
		}
	}
}
