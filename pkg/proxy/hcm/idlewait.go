package hcm

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// errNoWait: the connection is not a plain socket (TLS, a read-ahead
// wrapper), so waiting for readability without a buffer is not possible.
var errNoWait = errors.New("connection cannot be waited on without a buffer")

// waitReadable blocks until c has bytes to read, its peer closed, or its
// read deadline passed — without a read buffer: a keep-alive connection
// waiting for its next request then holds none (4 KiB each, ten
// thousand idle connections 40 MiB). It asks the kernel with a
// non-blocking MSG_PEEK of one byte, parked on the runtime's netpoller
// between tries; nothing is consumed.
func waitReadable(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errNoWait
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return errNoWait
	}
	var b [1]byte
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			_, _, e := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // nothing yet: park until the socket is readable
			case nil:
				return true // data, or EOF (0 bytes): the reader will see it
			default:
				rerr = e
				return true
			}
		}
	})
	if err != nil {
		return err
	}
	return rerr
}
