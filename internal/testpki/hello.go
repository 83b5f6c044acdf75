package testpki

// ClientHello returns the bytes of a TLS ClientHello for sni whose padding
// extension holds padding bytes, split into records of at most 16 KiB as
// TLS requires: a stand-in for the large hellos that post-quantum key
// shares produce, for tests of what reads ClientHellos. It is not a
// hello a server can complete a handshake with.
func ClientHello(sni string, padding int) []byte {
	var ext []byte
	name := []byte(sni)
	sn := append([]byte{0, byte(len(name) >> 8), byte(len(name))}, name...)
	sn = append([]byte{byte(len(sn) >> 8), byte(len(sn))}, sn...)
	ext = append(ext, 0, 0, byte(len(sn)>>8), byte(len(sn)))
	ext = append(ext, sn...)
	ext = append(ext, 0, 21, byte(padding>>8), byte(padding)) // padding extension
	ext = append(ext, make([]byte, padding)...)
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0x13, 0x01)    // cipher suites
	body = append(body, 1, 0)                // compression methods
	body = append(body, byte(len(ext)>>8), byte(len(ext)))
	body = append(body, ext...)
	msg := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	var out []byte
	for i := 0; i < len(msg); i += 16 << 10 {
		end := min(i+16<<10, len(msg))
		out = append(out, 0x16, 3, 1, byte((end-i)>>8), byte(end-i))
		out = append(out, msg[i:end]...)
	}
	return out
}
