// Package freeport hands tests loopback TCP ports that stay theirs until
// the process exits.
//
// The usual trick — listen on port 0, note the port, close — leaves a
// window between the close and the moment the code under test binds the
// port. `go test ./...` runs packages as parallel processes, and every
// one of them takes ports from the kernel's ephemeral range all the time
// (listeners on port 0 and the source ports of outgoing connections).
// CI twice saw a proxy test reach another process's socket through a port
// it had been told was free: once a plain HTTP server answered a TLS
// client, once a listener nobody accepted from held a TCP echo forever.
//
// So ports come from below the ephemeral range, where the kernel never
// allocates by itself, and each one is claimed with an flock(2) on a file
// named after it under the system temporary directory. The lock lasts as
// long as the process (the kernel drops it when the process dies, however
// it dies), so no two test processes, and no two callers in one process,
// are handed the same port at once. A port something else on the machine
// listens on is skipped by trying to bind it.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// lowest is the first port handed out: above the well-known and most
// registered service ports a CI machine may run.
const lowest = 15000

// held keeps the lock files open, and so the locks held, until the process
// exits; a port is never handed out twice by one process.
var held struct {
	sync.Mutex
	files []*os.File
}

// Get returns a loopback TCP port no other caller of Get on this machine
// holds and nothing was listening on a moment ago.
func Get() (uint32, error) {
	lo, hi := Range()
	dir := filepath.Join(os.TempDir(), "portico-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, fmt.Errorf("creating the port lock directory: %w", err)
	}
	// Shared like /tmp, whoever made it and whatever the umask: tests run
	// as root in CI and as a user elsewhere. Only its owner can change it.
	_ = os.Chmod(dir, 0o777|os.ModeSticky)
	n := hi - lo
	start := rand.IntN(n)
	for i := range n {
		port := lo + (start+i)%n
		ok, err := claim(dir, port)
		if err != nil {
			return 0, err
		}
		if ok {
			return uint32(port), nil
		}
	}
	return 0, fmt.Errorf("no free port in %d-%d", lo, hi-1)
}

// MustGet is Get for callers without a testing.TB; it panics on failure.
func MustGet() uint32 {
	p, err := Get()
	if err != nil {
		panic(err)
	}
	return p
}

// claim locks port's file and checks that the port can be bound; it keeps
// the lock when both succeed.
func claim(dir string, port int) (bool, error) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDONLY, 0o666)
	if err != nil {
		// Another user's file this user may not open: that port is
		// another user's to use.
		return false, nil
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("locking port %d: %w", port, err)
	}
	l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		f.Close() // closing the file drops the lock
		return false, nil
	}
	l.Close()
	held.Lock()
	held.files = append(held.files, f)
	held.Unlock()
	return true, nil
}

// Range is the half-open range [lo, hi) ports are taken from: from lowest
// up to the start of the kernel's ephemeral range.
func Range() (lo, hi int) {
	hi = 32768 // Linux's default ip_local_port_range starts here
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				hi = v
			}
		}
	}
	if hi-lowest < 1000 {
		// An ephemeral range that starts low leaves nothing below it;
		// take ports above it instead (it ends at 60999 by default).
		return 61000, 65536
	}
	return lowest, hi
}
