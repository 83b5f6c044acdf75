//go:build linux

package nodeagent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPortForwardDialsInsideThePod: a forwarded connection reaches a
// server the pod binds on 127.0.0.1 inside its network namespace (what
// a kubelet's port-forward reaches), not the node's own 127.0.0.1; an
// unknown pod and a port nothing listens on are errors.
func TestPortForwardDialsInsideThePod(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	ns := fmt.Sprintf("ptpf-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	lis := listenInNetNS(t, ns)
	defer lis.Close()
	go func() { // a greeting server inside the pod
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "pod says %s", line)
			}()
		}
	}()
	port := lis.Addr().(*net.TCPAddr).Port
	// The node's own 127.0.0.1 has nothing on that port (or something
	// else): a forward that dialled there would not get the greeting.
	a := New(Config{})
	a.pods["default/web"] = &pod{netns: ns}

	client, agentSide := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- a.PortForward(context.Background(), "default", "web", int32(port), agentSide) }()
	fmt.Fprintf(client, "hello\n")
	got, err := bufio.NewReader(client).ReadString('\n')
	if err != nil || got != "pod says hello\n" {
		t.Fatalf("through the forward: %q %v", got, err)
	}
	client.Close()
	if err := <-done; err != nil {
		t.Errorf("PortForward: %v", err)
	}

	_, agentSide = net.Pipe()
	if err := a.PortForward(context.Background(), "default", "nope", int32(port), agentSide); err == nil || !strings.Contains(err.Error(), "not running on this node") {
		t.Errorf("unknown pod: %v", err)
	}
	_, agentSide = net.Pipe()
	if err := a.PortForward(context.Background(), "default", "web", 1, agentSide); err == nil || !strings.Contains(err.Error(), "inside namespace of pod default/web") {
		t.Errorf("closed port: %v", err)
	}
}

// listenInNetNS listens on 127.0.0.1:0 inside a network namespace.
func listenInNetNS(t *testing.T, ns string) net.Listener {
	t.Helper()
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // the thread is discarded with this goroutine
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		ch <- result{l, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.l
}
