package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/internal/freeport"
	"github.com/portico-gateway/portico/pkg/proxy/hcm"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func freePort(t *testing.T) uint32 {
	p, err := freeport.Get()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
func spec(name string, port uint32) *Spec { return specOn(name, "127.0.0.1", port) }
func specOn(name, addr string, port uint32) *Spec {
	return &Spec{Name: name, Address: addr, Port: port, Chains: []*ChainSpec{{Name: "c", Hash: "h", HTTP: &hcm.Config{StatPrefix: name, RouteConfig: "r"}}}}
}

// occupy listens on 127.0.0.1:port as another process would, until the
// test ends.
func occupy(t *testing.T, port uint32) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newTestManager(t *testing.T) (*Manager, *fakeClock) {
	ctx, cancel := context.WithCancel(context.Background())
	st := stats.NewStore()
	m := NewManager(ctx, Deps{HTTP: &hcm.Env{Stats: st, Log: logr.Discard(), Ctx: ctx}, Stats: st, Log: logr.Discard()}, time.Second, nil)
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	m.now = clock.now
	t.Cleanup(func() { m.Close(); cancel() })
	return m, clock
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestApplyBindsEachListenerOnItsOwn(t *testing.T) {
	m, clock := newTestManager(t)
	okPort, busyPort := freePort(t), freePort(t)
	busy := occupy(t, busyPort)

	failed := m.Apply(map[string]*Spec{"ok": spec("ok", okPort), "busy": spec("busy", busyPort)})
	if len(failed) != 1 || failed["busy"] == nil {
		t.Fatalf("failures %v, want only busy", failed)
	}
	var be *BindError
	if !errors.As(failed["busy"], &be) || !errors.Is(be, syscall.EADDRINUSE) || !strings.Contains(be.Error(), "in use by another process") ||
		!strings.Contains(be.Error(), "--port-map") {
		t.Errorf("bind error %v: want EADDRINUSE with a hint", failed["busy"])
	}
	if !dialable(fmt.Sprintf("127.0.0.1:%d", okPort)) || m.BoundAddress("busy") != "" {
		t.Fatalf("ok must serve and busy must not run: names %v", m.Names())
	}

	// Retried with backoff, not at every Apply.
	specs := map[string]*Spec{"ok": m.Spec("ok"), "busy": spec("busy", busyPort)}
	m.Apply(specs)
	if n := m.BindAttempts("busy"); n != 1 {
		t.Errorf("%d attempts before the backoff elapsed, want 1", n)
	}
	clock.advance(firstBindRetry)
	m.Apply(specs)
	if n := m.BindAttempts("busy"); n != 2 {
		t.Errorf("%d attempts after the backoff, want 2", n)
	}
	clock.advance(firstBindRetry) // the delay doubled: not yet
	m.Apply(specs)
	if n := m.BindAttempts("busy"); n != 2 {
		t.Errorf("%d attempts, want the second retry to wait %v", n, 2*firstBindRetry)
	}

	busy.Close()
	clock.advance(maxBindRetry)
	if failed := m.Apply(specs); len(failed) != 0 {
		t.Fatalf("after the port was freed: %v", failed)
	}
	if !dialable(fmt.Sprintf("127.0.0.1:%d", busyPort)) || m.BindAttempts("busy") != 0 {
		t.Error("busy did not start once its port was free")
	}
}

func TestApplyKeepsAListenerWhoseNewAddressIsBusy(t *testing.T) {
	m, _ := newTestManager(t)
	p1, p2 := freePort(t), freePort(t)
	occupy(t, p2)
	if failed := m.Apply(map[string]*Spec{"l": spec("l", p1)}); len(failed) != 0 {
		t.Fatal(failed)
	}
	failed := m.Apply(map[string]*Spec{"l": spec("l", p2)})
	if failed["l"] == nil {
		t.Fatal("moving to a busy port did not fail")
	}
	if got := m.BoundAddress("l"); got != fmt.Sprintf("127.0.0.1:%d", p1) {
		t.Errorf("the listener left its old address for a busy one: %q", got)
	}
}

func TestApplyRenamedListenerTakesOverItsPort(t *testing.T) {
	m, _ := newTestManager(t)
	p := freePort(t)
	if failed := m.Apply(map[string]*Spec{"old": spec("old", p)}); len(failed) != 0 {
		t.Fatal(failed)
	}
	if failed := m.Apply(map[string]*Spec{"new": spec("new", p)}); len(failed) != 0 {
		t.Fatalf("a renamed listener could not bind the port its predecessor held: %v", failed)
	}
	if names := m.Names(); len(names) != 1 || names[0] != "new" || !dialable(fmt.Sprintf("127.0.0.1:%d", p)) {
		t.Errorf("running %v", names)
	}
}
