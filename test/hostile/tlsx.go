package hostile

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// tlsGet completes a TLS handshake with cfg (ServerName, RootCAs default
// to a.example.com and Env.CA; wrap may alter the connection, e.g. to
// write in 1-byte segments) and makes one GET over whatever ALPN chose:
// "ok 200", "ok h2 200", or how the handshake failed: "alert(protocol
// version not supported)", "close", "hang".
func tlsGet(cfg *tls.Config, wrap func(net.Conn) net.Conn) func(context.Context, *Env) (string, error) {
	return func(ctx context.Context, env *Env) (string, error) {
		nc, err := dial(ctx, env, env.TLS, false)
		if err != nil {
			return "", err
		}
		defer nc.Close()
		stop := context.AfterFunc(ctx, func() { nc.Close() })
		defer stop()
		c := cfg.Clone()
		if c.ServerName == "" && !c.InsecureSkipVerify {
			c.ServerName = "a.example.com"
		}
		if c.RootCAs == nil {
			c.RootCAs = env.CA
		}
		conn := nc
		if wrap != nil {
			conn = wrap(nc)
		}
		tc := tls.Client(conn, c)
		tc.SetDeadline(time.Now().Add(env.Wait))
		if err := tc.HandshakeContext(ctx); err != nil {
			return handshakeError(err), nil
		}
		tc.SetDeadline(time.Now().Add(env.Wait))
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			return "ok h2 " + h2GetOver(tc, env), nil
		}
		fmt.Fprintf(tc, "GET /%s HTTP/1.1\r\nHost: a.example.com\r\n\r\n", env.Token)
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return "ok " + readState(err), nil
		}
		resp.Body.Close()
		return fmt.Sprintf("ok %d", resp.StatusCode), nil
	}
}

// h2GetOver makes one GET over an established HTTP/2 TLS connection and
// returns its status.
func h2GetOver(tc *tls.Conn, env *Env) string {
	tr := &http.Transport{Protocols: new(http.Protocols), DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
		return tc, nil
	}}
	tr.Protocols.SetHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: env.Wait}).Get("https://a.example.com/" + env.Token)
	if err != nil {
		return "error"
	}
	resp.Body.Close()
	return fmt.Sprint(resp.StatusCode)
}

// handshakeError names how a handshake failed.
func handshakeError(err error) string {
	s := err.Error()
	if i := strings.Index(s, "remote error: tls: "); i >= 0 {
		return "alert(" + s[i+len("remote error: tls: "):] + ")"
	}
	return readState(err)
}

// segmented writes every byte of a Write as its own TCP segment: a
// ClientHello that arrives one byte at a time.
type segmented struct {
	net.Conn
	first bool // only the first Write (the ClientHello) is split
}

func (s *segmented) Write(p []byte) (int, error) {
	if s.first {
		return s.Conn.Write(p)
	}
	s.first = true
	if tc, ok := s.Conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	for i := range p {
		if _, err := s.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
		if i%64 == 63 {
			time.Sleep(time.Millisecond) // let segments leave one by one
		}
	}
	return len(p), nil
}

// rawTLS writes bytes to the TLS port and names the first thing the
// server answers: "serverhello", "alert(N)", an HTTP status, "close",
// "hang" or "junk".
func rawTLS(parts ...func() []byte) func(context.Context, *Env) (string, error) {
	return rawTLSWait(nil, parts...)
}

func rawTLSWait(wait func(*Env) time.Duration, parts ...func() []byte) func(context.Context, *Env) (string, error) {
	return func(ctx context.Context, env *Env) (string, error) {
		nc, err := dial(ctx, env, env.TLS, false)
		if err != nil {
			return "", err
		}
		defer nc.Close()
		stop := context.AfterFunc(ctx, func() { nc.Close() })
		defer stop()
		for _, p := range parts {
			nc.SetWriteDeadline(time.Now().Add(env.Wait))
			if _, err := nc.Write(p()); err != nil {
				break
			}
		}
		w := env.Wait
		if wait != nil {
			w = wait(env)
		}
		nc.SetReadDeadline(time.Now().Add(w))
		var hdr [5]byte
		n, err := io.ReadFull(nc, hdr[:])
		switch {
		case n >= 1 && hdr[0] == 0x16:
			return "serverhello", nil
		case n == 5 && hdr[0] == 0x15:
			var body [2]byte
			io.ReadFull(nc, body[:])
			return fmt.Sprintf("alert(%d)", body[1]), nil
		case n == 5 && string(hdr[:]) == "HTTP/":
			var rest [7]byte // "1.1 400"
			io.ReadFull(nc, rest[:])
			return strings.TrimSpace(string(rest[4:])) + " close", nil
		case err != nil && n == 0:
			return readState(err), nil
		}
		return "junk", nil
	}
}

// helloOpts shape a hand-built ClientHello.
type helloOpts struct {
	recordVersion, clientVersion uint16
	sni                          string
	tls13                        bool // supported_versions and key_share for TLS 1.3
	padding                      int  // bytes of padding extension (RFC 7685)
	recordSize                   int  // split the handshake message into records of this size (0: 16,384)
}

// clientHello builds a ClientHello that Go's and OpenSSL's servers answer
// (ECDHE-ECDSA suites, x25519, P-256 signatures), in TLS records.
func clientHello(o helloOpts) []byte {
	u16 := func(b []byte, v int) []byte { return binary.BigEndian.AppendUint16(b, uint16(v)) }
	ext := func(b []byte, typ int, body []byte) []byte { return append(u16(u16(b, typ), len(body)), body...) }
	var exts []byte
	if o.sni != "" {
		name := append(u16([]byte{0}, len(o.sni)), o.sni...)      // host_name entry
		exts = ext(exts, 0, append(u16(nil, len(name)), name...)) // server_name list
	}
	exts = ext(exts, 10, []byte{0, 4, 0, 0x1d, 0, 0x17})             // supported_groups: x25519, P-256
	exts = ext(exts, 11, []byte{1, 0})                               // ec_point_formats: uncompressed
	exts = ext(exts, 13, []byte{0, 6, 0x04, 0x03, 0x08, 0x04, 4, 1}) // signature_algorithms
	exts = ext(exts, 0xff01, []byte{0})                              // renegotiation_info
	if o.tls13 {
		exts = ext(exts, 43, []byte{4, 3, 4, 3, 3}) // supported_versions: 1.3, 1.2
		share := make([]byte, 32)
		rand.Read(share)
		ks := append([]byte{0, 0x1d, 0, 32}, share...)
		exts = ext(exts, 51, append(u16(nil, len(ks)), ks...)) // key_share
	}
	if o.padding > 0 {
		exts = ext(exts, 21, make([]byte, o.padding))
	}
	body := u16(nil, int(o.clientVersion))
	random := make([]byte, 32)
	rand.Read(random)
	body = append(body, random...)
	body = append(body, 0) // session id
	suites := []byte{0x13, 0x01, 0xc0, 0x2b, 0xcc, 0xa9, 0xc0, 0x2f, 0x00, 0x2f}
	body = append(u16(body, len(suites)), suites...)
	body = append(body, 1, 0) // compression: null
	if len(exts) > 0 {
		body = append(u16(body, len(exts)), exts...)
	}
	msg := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	size := o.recordSize
	if size == 0 {
		size = 16384
	}
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 0x16)
		out = u16(out, int(o.recordVersion))
		out = u16(out, n)
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func bytesOf(b []byte) func() []byte { return func() []byte { return b } }
