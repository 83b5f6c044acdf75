//go:build !linux

package idlepark

import (
	"context"
	"errors"
	"syscall"
	"time"
)

// Parker is only implemented on Linux; elsewhere Park always fails and
// callers wait the ordinary way.
type Parker struct{}

// New returns a Parker that cannot park.
func New(context.Context) *Parker { return &Parker{} }

var errUnsupported = errors.New("idlepark: not supported on this platform")

// Park reports that it cannot park.
func (p *Parker) Park(*Waiter, syscall.Conn, time.Time, func(error)) error { return errUnsupported }

// Cancel reports that nothing was parked.
func (p *Parker) Cancel(*Waiter, error) bool { return false }

// Len is always 0.
func (p *Parker) Len() int { return 0 }

// Parked is always false.
func (w *Waiter) Parked() bool { return false }
