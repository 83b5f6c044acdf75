package listener

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
)

// ClientHello is what the TLS inspector learns from a connection's first
// bytes.
type ClientHello struct {
	TLS        bool
	ServerName string
	ALPN       []string
}

var errNotHello = errors.New("not a TLS ClientHello")

// maxHello bounds how much the inspector reads (Envoy's is 64 KiB).
// ClientHellos of 16 KiB and more are normal with post-quantum key shares.
const maxHello = 64 << 10

// helloReader accumulates a connection's first bytes. It starts small and
// grows only for what a ClientHello actually needs, so that the many
// connections waiting for their first bytes hold little memory.
type helloReader struct {
	r   io.Reader
	buf []byte
}

// fill reads until at least n bytes are held.
func (h *helloReader) fill(n int) error {
	if n > maxHello+5 {
		return errNotHello
	}
	for len(h.buf) < n {
		if cap(h.buf) < n {
			grown := make([]byte, len(h.buf), min(max(n, 2*cap(h.buf)), maxHello+5))
			copy(grown, h.buf)
			h.buf = grown
		}
		m, err := h.r.Read(h.buf[len(h.buf):cap(h.buf)])
		h.buf = h.buf[:len(h.buf)+m]
		if err != nil && len(h.buf) < n {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// ReadClientHello reads a connection's first bytes until it knows whether
// they start a TLS handshake and, if they do, holds the whole ClientHello,
// which may span several records. It returns what it learnt and every
// byte it read, which the caller replays to whatever handles the
// connection next; nothing beyond the returned bytes is consumed.
func ReadClientHello(r io.Reader) (ClientHello, []byte, error) {
	h := &helloReader{r: r, buf: make([]byte, 0, 512)}
	if err := h.fill(1); err != nil {
		return ClientHello{}, h.buf, err
	}
	if h.buf[0] != 0x16 {
		return ClientHello{}, h.buf, nil // plain text
	}
	// Collect handshake bytes across records until the whole ClientHello
	// message (4-byte header + body) is available.
	var msg []byte
	offset := 0
	for {
		if err := h.fill(offset + 5); err != nil {
			return ClientHello{TLS: true}, h.buf, err
		}
		rec := h.buf[offset:]
		if rec[0] != 0x16 {
			return ClientHello{TLS: true}, h.buf, errNotHello
		}
		n := int(binary.BigEndian.Uint16(rec[3:5]))
		if n == 0 || offset+5+n > maxHello {
			return ClientHello{TLS: true}, h.buf, errNotHello
		}
		if err := h.fill(offset + 5 + n); err != nil {
			return ClientHello{TLS: true}, h.buf, err
		}
		msg = append(msg, h.buf[offset+5:offset+5+n]...)
		offset += 5 + n
		if len(msg) >= 4 {
			need := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if msg[0] != 1 || need > maxHello {
				return ClientHello{TLS: true}, h.buf, errNotHello
			}
			if len(msg) >= need {
				hello, err := ParseClientHello(msg[:need])
				hello.TLS = true
				return hello, h.buf, err
			}
		}
	}
}

// ParseClientHello parses a handshake message (type, length, body).
func ParseClientHello(msg []byte) (ClientHello, error) {
	var h ClientHello
	p := parser(msg)
	typ, ok := p.u8()
	if !ok || typ != 1 {
		return h, errNotHello
	}
	body, ok := p.bytes24()
	if !ok {
		return h, errNotHello
	}
	p = parser(body)
	if !p.skip(2 + 32) { // legacy_version, random
		return h, errNotHello
	}
	if _, ok := p.bytes8(); !ok { // session id
		return h, errNotHello
	}
	if _, ok := p.bytes16(); !ok { // cipher suites
		return h, errNotHello
	}
	if _, ok := p.bytes8(); !ok { // compression methods
		return h, errNotHello
	}
	if len(p) == 0 {
		return h, nil // no extensions
	}
	exts, ok := p.bytes16()
	if !ok {
		return h, errNotHello
	}
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		data, ok2 := exts.bytes16()
		if !ok1 || !ok2 {
			return h, errNotHello
		}
		switch typ {
		case 0: // server_name
			list, ok := data.bytes16()
			if !ok {
				return h, errNotHello
			}
			for len(list) > 0 {
				nameType, ok1 := list.u8()
				name, ok2 := list.bytes16()
				if !ok1 || !ok2 {
					return h, errNotHello
				}
				if nameType == 0 && h.ServerName == "" {
					h.ServerName = strings.ToLower(strings.TrimSuffix(string(name), "."))
				}
			}
		case 16: // application_layer_protocol_negotiation
			list, ok := data.bytes16()
			if !ok {
				return h, errNotHello
			}
			for len(list) > 0 {
				proto, ok := list.bytes8()
				if !ok || len(proto) == 0 {
					return h, errNotHello
				}
				h.ALPN = append(h.ALPN, string(proto))
			}
		}
	}
	return h, nil
}

type parser []byte

func (p *parser) u8() (byte, bool) {
	if len(*p) < 1 {
		return 0, false
	}
	v := (*p)[0]
	*p = (*p)[1:]
	return v, true
}

func (p *parser) u16() (uint16, bool) {
	if len(*p) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*p)
	*p = (*p)[2:]
	return v, true
}

func (p *parser) skip(n int) bool {
	if len(*p) < n {
		return false
	}
	*p = (*p)[n:]
	return true
}

func (p *parser) take(n int) (parser, bool) {
	if n < 0 || len(*p) < n {
		return nil, false
	}
	v := (*p)[:n]
	*p = (*p)[n:]
	return v, true
}

func (p *parser) bytes8() (parser, bool) {
	n, ok := p.u8()
	if !ok {
		return nil, false
	}
	return p.take(int(n))
}

func (p *parser) bytes16() (parser, bool) {
	n, ok := p.u16()
	if !ok {
		return nil, false
	}
	return p.take(int(n))
}

func (p *parser) bytes24() (parser, bool) {
	if len(*p) < 3 {
		return nil, false
	}
	n := int((*p)[0])<<16 | int((*p)[1])<<8 | int((*p)[2])
	*p = (*p)[3:]
	return p.take(n)
}
