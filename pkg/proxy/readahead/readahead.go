// Package readahead hands a connection on after some of its first bytes
// were already read (by the TLS inspector, or to recognise the HTTP/2
// preface): the next reader gets those bytes first, then the socket.
package readahead

import "net"

// Conn replays Ahead before reading the connection. It owns Ahead: nothing
// pooled is shared with whatever goroutines read through it.
type Conn struct {
	net.Conn
	Ahead []byte
}

func (c *Conn) Read(p []byte) (int, error) {
	if len(c.Ahead) > 0 {
		n := copy(p, c.Ahead)
		c.Ahead = c.Ahead[n:]
		if len(c.Ahead) == 0 {
			c.Ahead = nil // let the read-ahead buffer go
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the underlying connection, when it can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
