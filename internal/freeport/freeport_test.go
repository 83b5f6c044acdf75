package freeport

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

func TestPortsAreDistinctBindableAndBelowTheEphemeralRange(t *testing.T) {
	lo, hi := Range()
	seen := map[uint32]bool{}
	for range 50 {
		p, err := Get()
		if err != nil {
			t.Fatal(err)
		}
		if int(p) < lo || int(p) >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d cannot be bound: %v", p, err)
		}
		l.Close()
	}
}

// Another process's claim is an flock on the port's file; a second open
// file description in this process conflicts with it the same way.
func TestClaimSkipsLockedAndListenedPorts(t *testing.T) {
	dir := t.TempDir()
	lo, hi := Range()
	port := -1
	for p := lo; p < hi; p++ { // a port nothing listens on, for this test
		if l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			port = p
			break
		}
	}
	if port < 0 {
		t.Fatal("no bindable port in range")
	}

	other, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDONLY, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if ok, err := claim(dir, port); ok || err != nil {
		t.Fatalf("claimed a port another holder has locked: %v %v", ok, err)
	}
	other.Close()

	l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := claim(dir, port); ok || err != nil {
		t.Fatalf("claimed a port something listens on: %v %v", ok, err)
	}
	l.Close()

	if ok, err := claim(dir, port); !ok || err != nil {
		t.Fatalf("a free, unlocked port was not claimed: %v %v", ok, err)
	}
	if ok, _ := claim(dir, port); ok {
		t.Fatal("one process claimed the same port twice")
	}
}
