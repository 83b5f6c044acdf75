package hostile

import (
	"crypto/rand"
	"crypto/tls"
	"net"
	"strings"
)

func tlsCases() []*Case {
	okFwd := []string{"ok 200, 1 fwd"}
	refused := []string{"alert(protocol version not supported)", "close"}
	rawRefused := []string{"alert(70)", "alert(40)", "close"}
	// ALPN protocols padding a ClientHello to about 17 KB: two TLS records.
	var bigALPN []string
	for i := 0; i < 68; i++ {
		bigALPN = append(bigALPN, "x-"+strings.Repeat(string(rune('a'+i%26)), 250))
	}
	bigALPN = append(bigALPN, "http/1.1")
	cs := []*Case{
		{Name: "tls-get", Nginx: "ok 200, 1 fwd", What: "TLS 1.3, HTTP/1.1 GET", Want: okFwd, Check: clean,
			Run: tlsGet(&tls.Config{NextProtos: []string{"http/1.1"}}, nil)},
		{Name: "tls-h2-get", Nginx: "ok h2 200, 1 fwd", What: "TLS with ALPN h2, GET", Want: []string{"ok h2 200, 1 fwd"}, Check: clean,
			Run: tlsGet(&tls.Config{NextProtos: []string{"h2"}}, nil)},
		{Name: "tls-12", Nginx: "ok 200, 1 fwd", What: "TLS 1.2 only", Want: okFwd, Check: clean,
			Run: tlsGet(&tls.Config{MaxVersion: tls.VersionTLS12}, nil)},
		{Name: "tls-no-sni", Nginx: "ok 200, 1 fwd", What: "no SNI (connect by IP address)", Want: okFwd, Check: clean,
			Run: tlsGet(&tls.Config{ServerName: "127.0.0.1"}, nil)},
		{Name: "tls-unknown-sni", Nginx: "ok 200, 1 fwd", What: "SNI no server names (served by the catch-all)", Want: okFwd, Check: clean,
			Run: tlsGet(&tls.Config{ServerName: "unknown.test", InsecureSkipVerify: true}, nil)},
		{Name: "tls-hello-1-byte-segments", Nginx: "ok 200, 1 fwd", What: "ClientHello in 1-byte TCP segments", Want: okFwd, Check: clean,
			Run: tlsGet(&tls.Config{}, func(nc net.Conn) net.Conn { return &segmented{Conn: nc} })},
		{Name: "tls-hello-17k-alpn", Nginx: "ok 200, 1 fwd", What: "17 KB ClientHello (long ALPN list, two records)", Want: okFwd, Check: clean,
			Run: tlsGet(&tls.Config{NextProtos: bigALPN}, nil)},
		{Name: "tls-hello-16k-padding", Nginx: "serverhello", What: "16.5 KB ClientHello (padding extension), TLS 1.3", Want: []string{"serverhello"},
			Run: rawTLS(func() []byte {
				return clientHello(helloOpts{recordVersion: 0x0301, clientVersion: 0x0303, sni: "a.example.com", tls13: true, padding: 16500})
			})},
		{Name: "tls-hello-18k-padding", Nginx: "serverhello", What: "18 KB ClientHello (padding extension), TLS 1.2", Want: []string{"serverhello"},
			Run: rawTLS(func() []byte {
				return clientHello(helloOpts{recordVersion: 0x0301, clientVersion: 0x0303, sni: "a.example.com", padding: 18000})
			})},
		{Name: "tls-hello-small-records", Nginx: "serverhello", What: "ClientHello split into 100-byte records", Want: []string{"serverhello"},
			Run: rawTLS(func() []byte {
				return clientHello(helloOpts{recordVersion: 0x0301, clientVersion: 0x0303, sni: "a.example.com", tls13: true, recordSize: 100})
			})},
		{Name: "tls-10-only", Nginx: "alert(internal error)", What: "client offering only TLS 1.0", Want: refused,
			Run: tlsGet(&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, nil)},
		{Name: "tls-11-only", Nginx: "alert(internal error)", What: "client offering only TLS 1.1", Want: refused,
			Run: tlsGet(&tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, nil)},
		{Name: "tls-sslv3-hello", Nginx: "alert(40)", What: "SSLv3 ClientHello", Want: rawRefused,
			Run: rawTLS(func() []byte {
				return clientHello(helloOpts{recordVersion: 0x0300, clientVersion: 0x0300, sni: "a.example.com"})
			})},
		{Name: "tls-sslv2-hello", Nginx: "close", What: "SSLv2-compatible ClientHello", Want: rawRefused,
			Run: rawTLS(bytesOf([]byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
				0x00, 0x00, 0x2f, 0x00, 0x00, 0x35, 0x00, 0x00, 0x0a, 0x07, 0x00, 0xc0, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00,
				1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}))},
		{Name: "tls-plain-http", Nginx: "400 close", What: "plaintext HTTP request to the TLS port", Want: []string{"close", "400 close", "alert(10)", "alert(80)"},
			Run: rawTLS(bytesOf([]byte("GET /x HTTP/1.1\r\nHost: a.example.com\r\n\r\n")))},
		{Name: "tls-garbage", Nginx: "400 close", What: "random bytes instead of a ClientHello", Want: []string{"close", "alert(10)", "alert(80)", "alert(50)", "alert(70)"},
			Run: rawTLS(func() []byte {
				b := make([]byte, 256)
				rand.Read(b)
				b[0] = 0x42 // not a handshake record
				return b
			})},
		{Name: "tls-record-oversized", Nginx: "alert(22)", What: "handshake record announcing 65,535 bytes", Want: []string{"alert(22)", "close", "alert(10)", "alert(50)"},
			Run: rawTLS(bytesOf(append([]byte{0x16, 3, 1, 0xff, 0xff, 1, 0, 0xff, 0xfb}, make([]byte, 200)...)))},
	}
	for _, c := range cs {
		c.Category = "tls"
	}
	return cs
}
