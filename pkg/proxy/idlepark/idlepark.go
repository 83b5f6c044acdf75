// Package idlepark lets idle connections wait for their next bytes
// without a goroutine.
//
// A Go server normally blocks one goroutine per connection in Read. For a
// keep-alive connection that waits minutes for its next request, that
// goroutine's stack (8 KiB once a request has been served through it) is
// most of what the connection costs: ten thousand idle connections held
// ~150 MiB, against nginx's ~6 MiB for its event structures. A Parker
// watches parked sockets with one epoll instance and one goroutine; when
// a socket becomes readable (or its peer hangs up, or its deadline
// passes) the connection's resume function runs in a new goroutine. The
// runtime's own netpoller cannot be asked to do this: it only wakes
// goroutines parked in it.
//
// The socket stays registered with the runtime's netpoller too (an fd may
// be in several epoll sets); once resumed, the connection is read the
// usual way. Parking costs two epoll_ctl calls and a goroutine start, so
// callers park only connections that have already been idle a while.
//
// A parked connection must be closed only after Cancel: closing it first
// would let its descriptor number be reused while still named in the
// Parker's table.
package idlepark

import (
	"errors"
	"time"
)

// ErrClosed resumes connections parked when the Parker stops.
var ErrClosed = errors.New("idlepark: parker closed")

// ErrDeadline resumes a connection whose deadline passed while it was
// parked. It reports Timeout() true, as a net.Conn deadline error does.
var ErrDeadline error = deadlineError{}

type deadlineError struct{}

func (deadlineError) Error() string   { return "idlepark: deadline exceeded while parked" }
func (deadlineError) Timeout() bool   { return true }
func (deadlineError) Temporary() bool { return true }

// Waiter is one connection's parking slot. Its owner keeps it (embedded
// in its per-connection state) and reuses it for every park; the zero
// value is ready.
type Waiter struct {
	fd     int
	gen    uint32 // which park this is, so a stale event cannot wake a later one
	parked bool   // guarded by the Parker's mutex
	// deadline is the current park's (zero: none).
	deadline time.Time
	timer    *time.Timer
	resume   func(error)
	p        *Parker
}
