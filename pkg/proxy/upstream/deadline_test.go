package upstream

import (
	"net"
	"os"
	"testing"
	"time"
)

type deadlineCount struct {
	net.Conn
	n int
}

func (c *deadlineCount) SetDeadline(t time.Time) error { c.n++; return c.Conn.SetDeadline(t) }

// TestConnSetDeadlineSkipsWhatIsSet: requests without a timeout on a
// pooled connection set no deadline at all; a new deadline is set, and
// bites.
func TestConnSetDeadlineSkipsWhatIsSet(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	nc := &deadlineCount{Conn: a}
	c := &Conn{NC: nc}
	for i := 0; i < 5; i++ { // request without a timeout: set, then cleared
		c.SetDeadline(time.Time{})
		c.SetDeadline(time.Time{})
	}
	if nc.n != 0 {
		t.Errorf("%d deadlines set for requests without a timeout, want 0", nc.n)
	}
	c.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.NC.Read(make([]byte, 1)); !os.IsTimeout(err) {
		t.Errorf("read past the deadline: %v, want a timeout", err)
	}
	c.SetDeadline(time.Time{})
	if nc.n != 2 {
		t.Errorf("%d deadlines set, want 2 (one and its clearing)", nc.n)
	}
}
