package idlepark

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parker waits for parked sockets to become readable. Its goroutine
// starts with the first Park and stops when the context given to New
// ends; every connection still parked then resumes with ErrClosed.
type Parker struct {
	ctx context.Context

	mu   sync.Mutex
	epfd int // -1 until started
	// file holds epfd for the runtime's netpoller, which wakes the loop
	// when parked sockets have events: no thread of its own blocks in
	// epoll_wait. Closing it stops the loop.
	file    *os.File
	stopped bool
	waiting map[int]*Waiter // by descriptor
	gen     uint32
	started bool
}

// New returns a Parker that stops when ctx ends.
func New(ctx context.Context) *Parker {
	return &Parker{ctx: ctx, epfd: -1, waiting: map[int]*Waiter{}}
}

// Len is the number of parked connections.
func (p *Parker) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiting)
}

// start creates the epoll instance and the loop. Called with mu held.
func (p *Parker) start() error {
	if p.started {
		return nil
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("creating the idle connections' epoll instance: %w", err)
	}
	// Non-blocking, so os.NewFile registers it with the netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return fmt.Errorf("creating the idle connections' epoll instance: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "idlepark-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("watching the idle connections' epoll instance: %w", err)
	}
	p.epfd, p.file, p.started = epfd, f, true
	go p.loop(rc)
	context.AfterFunc(p.ctx, p.stop)
	return nil
}

// Park registers the socket of c; resume runs in a new goroutine, once,
// when the socket is readable or hung up (nil), when deadline passes
// (ErrDeadline, if deadline is not zero), when Cancel is called (its
// error) or when the Parker stops (ErrClosed). It returns an error, and
// does not park, if the socket cannot be watched: the caller then waits
// the ordinary way.
func (p *Parker) Park(w *Waiter, c syscall.Conn, deadline time.Time, resume func(error)) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("parking a connection: %w", err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return fmt.Errorf("parking a connection: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || p.ctx.Err() != nil {
		return ErrClosed
	}
	if w.parked {
		return fmt.Errorf("parking a connection: already parked")
	}
	if err := p.start(); err != nil {
		return err
	}
	p.gen++
	w.fd, w.gen, w.resume, w.p = fd, p.gen, resume, p
	// Level-triggered and one-shot: bytes that arrived before the
	// registration still report at once, and at most one event comes.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd), Pad: int32(w.gen)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("parking a connection: epoll_ctl: %w", err)
	}
	w.parked = true
	p.waiting[fd] = w
	w.deadline = time.Time{}
	if !deadline.IsZero() {
		d := time.Until(deadline)
		w.deadline = deadline
		if w.timer == nil {
			w.timer = time.AfterFunc(d, func() { w.p.expire(w) })
		} else {
			w.timer.Reset(d)
		}
	}
	return nil
}

// Cancel resumes w with err if it is parked, and reports whether it was.
// When Cancel returns, the Parker no longer refers to the socket, so the
// caller may close it.
func (p *Parker) Cancel(w *Waiter, err error) bool {
	return p.wake(w, err)
}

// expire wakes w with ErrDeadline if its deadline has passed: a timer of
// an earlier park that fired as it was stopped must not end a later one.
func (p *Parker) expire(w *Waiter) {
	p.mu.Lock()
	if !w.parked || w.deadline.IsZero() || time.Now().Before(w.deadline) {
		p.mu.Unlock()
		return
	}
	p.unpark(w)
	p.mu.Unlock()
	go w.resume(ErrDeadline)
}

// wake takes w out of the table and resumes it with err, unless it is
// not parked (already woken).
func (p *Parker) wake(w *Waiter, err error) bool {
	p.mu.Lock()
	if !w.parked {
		p.mu.Unlock()
		return false
	}
	p.unpark(w)
	p.mu.Unlock()
	go w.resume(err)
	return true
}

// unpark removes w from the epoll set and the table. Called with mu held.
func (p *Parker) unpark(w *Waiter) {
	w.parked = false
	delete(p.waiting, w.fd)
	if w.timer != nil {
		w.timer.Stop()
	}
	// The socket is open (closing it parked is the caller's bug), so
	// this succeeds; after a one-shot event it is registered but
	// disarmed, and must go before its descriptor can be reused.
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, w.fd, nil)
}

func (p *Parker) loop(rc syscall.RawConn) {
	events := make([]unix.EpollEvent, 256)
	var ready []*Waiter
	// Read calls the function whenever the netpoller reports the epoll
	// instance readable, and returns only when the file is closed
	// (stop): the function drains what is ready and asks to wait again.
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return true // not expected; stop resumes everyone
			}
			ready = ready[:0]
			p.mu.Lock()
			for _, ev := range events[:n] {
				w := p.waiting[int(ev.Fd)]
				if w == nil || !w.parked || w.gen != uint32(ev.Pad) {
					continue // cancelled, timed out or re-parked meanwhile
				}
				p.unpark(w)
				ready = append(ready, w)
			}
			p.mu.Unlock()
			for _, w := range ready {
				go w.resume(nil)
			}
			if n < len(events) {
				return false
			}
		}
	})
	p.stop()
}

// stop resumes every parked connection with ErrClosed and ends the loop.
func (p *Parker) stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	var all []*Waiter
	for _, w := range p.waiting {
		p.unpark(w)
		all = append(all, w)
	}
	// Nothing refers to the instance any more (stopped refuses new
	// parks): closing it ends the loop's Read.
	p.file.Close()
	p.mu.Unlock()
	for _, w := range all {
		go w.resume(ErrClosed)
	}
}

// Parked reports whether w waits in its Parker now. For tests.
func (w *Waiter) Parked() bool {
	if w.p == nil {
		return false
	}
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.parked
}
