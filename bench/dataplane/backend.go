package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"sync"
)

// The backends answer as cheaply as possible so that what is measured is
// the proxy: a fixed HTTP/1.1 response, and a TCP echo.
var response = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n")

type backends struct {
	httpAddr, tcpAddr string
	lns               []net.Listener
	wg                sync.WaitGroup
}

func startBackends(ctx context.Context) (*backends, error) {
	b := &backends{}
	h, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.Close()
		return nil, err
	}
	b.lns = []net.Listener{h, t}
	b.httpAddr, b.tcpAddr = h.Addr().String(), t.Addr().String()
	b.wg.Add(2)
	go b.serve(ctx, h, serveHTTP)
	go b.serve(ctx, t, serveEcho)
	context.AfterFunc(ctx, b.close)
	return b, nil
}

func (b *backends) close() {
	for _, l := range b.lns {
		l.Close()
	}
}

func (b *backends) serve(ctx context.Context, l net.Listener, handle func(net.Conn)) {
	defer b.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			defer c.Close()
			handle(c)
		}()
	}
}

func serveHTTP(c net.Conn) {
	br := bufio.NewReaderSize(c, 16<<10)
	for {
		length := 0
		for first := true; ; first = false {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				if first {
					continue // tolerate a stray CRLF between requests
				}
				break
			}
			if name, value, ok := bytes.Cut(line, []byte(":")); ok && asciiEqualFold(bytes.TrimSpace(name), "content-length") {
				length, _ = strconv.Atoi(string(bytes.TrimSpace(value)))
			}
		}
		if length > 0 {
			if _, err := br.Discard(length); err != nil {
				return
			}
		}
		if _, err := c.Write(response); err != nil {
			return
		}
	}
}

func serveEcho(c net.Conn) { io.Copy(c, c) }
