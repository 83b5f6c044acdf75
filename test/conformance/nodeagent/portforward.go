//go:build linux

package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"golang.org/x/sys/unix"
)

// PortForward serves `kubectl port-forward` (and the portico CLI's pod
// mode): virtual-kubelet's kubelet API hands each forwarded connection's
// data stream here, and it is connected, as a kubelet does, to
// localhost:port inside the pod's network namespace — so ports a
// container binds on 127.0.0.1 only (an admin interface) are reachable,
// and nothing else of the node is.
func (a *Agent) PortForward(ctx context.Context, namespace, name string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	netns, ok := a.NetNS(namespace, name)
	if !ok {
		return errdefs.NotFoundf("pod %s/%s is not running on this node", namespace, name)
	}
	if port <= 0 || port > 65535 {
		return errdefs.InvalidInputf("port %d", port)
	}
	conn, err := dialInNetNS(ctx, netns, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("failed to connect to localhost:%d inside namespace of pod %s/%s: %w", port, namespace, name, err)
	}
	defer conn.Close()
	toPod := make(chan error, 1)
	go func() { // ends when the stream ends (the client closed) or conn is closed below
		_, err := io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		toPod <- err
	}()
	_, err = io.Copy(stream, conn)
	conn.Close() // stops the copy above if the client still sends
	if e := <-toPod; err == nil && e != nil && !errors.Is(e, net.ErrClosed) {
		err = e
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// dialInNetNS dials addr from inside a named network namespace: the
// socket is created by a thread switched into the namespace, and keeps
// belonging to it. The thread is never switched back: its goroutine ends
// locked to it, so Go discards the thread instead of reusing it in the
// wrong namespace.
func dialInNetNS(ctx context.Context, netns, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		f, err := os.Open("/run/netns/" + netns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("entering network namespace %s: %w", netns, err)}
			return
		}
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.conn, r.err
}
