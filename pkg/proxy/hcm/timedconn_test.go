package hcm

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// deadlineCounter counts the deadlines given to the connection under it.
type deadlineCounter struct {
	net.Conn
	reads, writes int
}

func (c *deadlineCounter) SetReadDeadline(t time.Time) error {
	c.reads++
	return c.Conn.SetReadDeadline(t)
}

func (c *deadlineCounter) SetWriteDeadline(t time.Time) error {
	c.writes++
	return c.Conn.SetWriteDeadline(t)
}

func (c *deadlineCounter) SetDeadline(t time.Time) error {
	c.reads++
	c.writes++
	return c.Conn.SetDeadline(t)
}

// TestTimedConnArmsDeadlinesWhenUsed: a keep-alive request without a body
// costs the socket one read deadline (for the read that waited for it)
// and, once the stream idle timeout is armed, no write deadline; a head
// that needs a second read gets the head's deadline, and a body read the
// stream idle timeout.
func TestTimedConnArmsDeadlinesWhenUsed(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	dc := &deadlineCounter{Conn: server}
	tc := &timedConn{Conn: dc}
	go func() { // the client: requests in, responses out
		buf := make([]byte, 64)
		for {
			if _, err := client.Write([]byte("req")); err != nil {
				return
			}
			if _, err := client.Read(buf); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 3)
	request := func(i int) {
		t.Helper()
		now := time.Now()
		tc.readBy(now.Add(idleRelease + time.Duration(i))) // a new deadline each time
		if _, err := io.ReadFull(tc, buf); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		tc.readBy(now.Add(time.Hour)) // the head's deadline: no read needs it
		tc.slide(time.Minute)
		if _, err := tc.Write([]byte("resp")); err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
	}
	request(0)
	if dc.reads != 1 || dc.writes != 1 {
		t.Fatalf("first request: %d read and %d write deadlines, want 1 and 1", dc.reads, dc.writes)
	}
	for i := 1; i <= 10; i++ {
		request(i)
	}
	if dc.reads != 11 || dc.writes != 1 {
		t.Errorf("eleven requests: %d read and %d write deadlines, want 11 and 1", dc.reads, dc.writes)
	}

	// A read while sliding arms the stream idle timeout once, whatever
	// deadline the head had.
	reads := dc.reads
	tc.readBy(time.Now().Add(time.Hour))
	tc.slide(time.Minute)
	for i := 0; i < 3; i++ {
		if _, err := io.ReadFull(tc, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := tc.Write([]byte("resp")); err != nil {
			t.Fatal(err)
		}
	}
	if dc.reads != reads+1 {
		t.Errorf("body reads armed %d read deadlines, want 1", dc.reads-reads)
	}

	// No stream idle timeout any more: the armed write deadline goes.
	writes := dc.writes
	tc.slide(0)
	if _, err := io.ReadFull(tc, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Write([]byte("resp")); err != nil {
		t.Fatal(err)
	}
	if dc.writes != writes+1 {
		t.Errorf("disabling the timeout cleared %d write deadlines, want 1", dc.writes-writes)
	}
}

// TestTimedConnDeadlinesStillBite: the deadlines armed lazily still end a
// head that does not arrive, and a write deadline armed for an earlier
// response is pushed, not inherited: a client that stops reading a later
// response is cut off after the stream idle timeout counted from then.
func TestTimedConnDeadlinesStillBite(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	tc := &timedConn{Conn: server}

	start := time.Now()
	tc.readBy(start.Add(100 * time.Millisecond))
	_, err := tc.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a head that never came: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("the head's deadline passed after %v, want 100ms", d)
	}

	const idle = 200 * time.Millisecond
	tc.slide(idle)
	read := make(chan struct{})
	go func() { io.ReadFull(client, make([]byte, 4)); close(read) }()
	if _, err := tc.Write([]byte("resp")); err != nil {
		t.Fatal(err)
	}
	<-read
	armed := time.Now()
	for time.Since(armed) < 2*idle { // the first response's deadline is past
		time.Sleep(10 * time.Millisecond)
	}
	tc.slide(idle) // the next request; its client reads nothing
	start = time.Now()
	_, err = tc.Write([]byte("resp"))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a stalled client: %v, want a timeout", err)
	}
	if d := time.Since(start); d < idle-slack(idle)-10*time.Millisecond {
		t.Errorf("the stalled write failed after %v: the earlier response's deadline was kept", d)
	}
}
