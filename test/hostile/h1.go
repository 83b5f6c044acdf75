package hostile

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// h1 is a raw HTTP/1.x client: it writes parts (with {T} and {P}
// expanded), reads up to reads final responses, then probes the
// connection with one more request to tell "keep" from "close" (or
// "hang": the server still waits for bytes of the previous request).
type h1 struct {
	parts []string
	// gap is waited between parts.
	gap time.Duration
	// reads is how many final (non-1xx) responses to read; default 1.
	reads int
	// external dials from Env.External (the case needs an external client).
	external bool
	// afterFirst is written after the first response (interim or final)
	// arrived (Expect: 100-continue bodies).
	afterFirst string
	// wait overrides Env.Wait for the first response (slow cases).
	wait func(env *Env) time.Duration
	// noProbe skips the keep/close probe: the result ends with the
	// statuses ("-" for none) and "open" or "close" as last observed.
	noProbe bool
}

// run implements Case.Run.
func (s h1) run(ctx context.Context, env *Env) (string, error) {
	nc, err := dial(ctx, env, env.HTTP, s.external)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	return s.runOn(nc, env)
}

// runOn plays the client on an established connection.
func (s h1) runOn(nc net.Conn, env *Env) (string, error) {
	for i, p := range s.parts {
		if i > 0 && s.gap > 0 {
			time.Sleep(s.gap)
		}
		nc.SetWriteDeadline(time.Now().Add(env.Wait))
		if _, err := io.WriteString(nc, expand(p, env)); err != nil {
			break // the server closed early; read what it said
		}
	}
	reads := s.reads
	if reads == 0 {
		reads = 1
	}
	wait := env.Wait
	if s.wait != nil {
		wait = s.wait(env)
	}
	br := newReader(nc)
	var statuses []string
	state := ""
	for final := 0; final < reads && state == ""; {
		nc.SetReadDeadline(time.Now().Add(wait))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			state = readState(err)
			break
		}
		statuses = append(statuses, fmt.Sprint(resp.StatusCode))
		if resp.StatusCode >= 200 {
			final++
			nc.SetReadDeadline(time.Now().Add(env.Wait))
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				state = readState(err)
			}
			if state == "" && s.noProbe && resp.Close {
				// Said it closes: does it?
				if _, err := br.ReadByte(); err != nil {
					state = readState(err)
				}
				if state == "hang" {
					state = "open"
				}
			}
		}
		resp.Body.Close()
		if s.afterFirst != "" && len(statuses) == 1 && state == "" {
			io.WriteString(nc, expand(s.afterFirst, env))
		}
		wait = env.Wait
	}
	if state == "" && s.noProbe {
		state = "open"
	}
	if state == "" {
		state = probe(nc, br, env)
	}
	return statusList(statuses) + " " + state, nil
}

func newReader(nc net.Conn) *bufio.Reader { return bufio.NewReaderSize(nc, 64<<10) }

// probe sends one ordinary request on a connection that should be
// reusable: "keep" if it is answered, "close" if the connection ends,
// "hang" if nothing comes (the server is still reading a body).
func probe(nc net.Conn, br *bufio.Reader, env *Env) string {
	nc.SetWriteDeadline(time.Now().Add(env.Wait))
	if _, err := fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: probe.example.com\r\n\r\n", env.Probe); err != nil {
		return "close"
	}
	nc.SetReadDeadline(time.Now().Add(env.Wait))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return readState(err)
	}
	resp.Body.Close()
	return "keep"
}

// readState names why a read ended.
func readState(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return "close"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return "hang"
	}
	return "junk" // bytes that are not an HTTP/1.1 response
}

func statusList(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, " ")
}

// dial connects to addr, from Env.External when external is set (to the
// listener's port on that same address: the proxy listens on all
// addresses).
func dial(ctx context.Context, env *Env, addr string, external bool) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if external {
		if env.External == "" {
			return nil, errors.New("no external (non-private, non-loopback) local address on this machine")
		}
		_, port, _ := net.SplitHostPort(addr)
		addr = net.JoinHostPort(env.External, port)
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(env.External)}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return nc, nil
}

// raw is the common case: one write, one response, then the probe.
func raw(s string) func(context.Context, *Env) (string, error) {
	return h1{parts: []string{s}}.run
}
