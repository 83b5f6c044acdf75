package listener

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// captureHello records the bytes a real crypto/tls client sends first.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		c := tls.Client(a, cfg)
		c.Handshake()
		c.Close()
	}()
	var buf bytes.Buffer
	br := bufio.NewReader(io.TeeReader(b, &buf))
	if _, err := PeekClientHello(br); err != nil {
		t.Fatalf("peeking a real ClientHello: %v", err)
	}
	b.Close()
	return buf.Bytes()
}

func TestPeekClientHello(t *testing.T) {
	cases := []struct {
		name string
		cfg  *tls.Config
		want ClientHello
	}{
		{"sni and alpn", &tls.Config{ServerName: "Counter.Lab.Example.com", NextProtos: []string{"h2", "http/1.1"}},
			ClientHello{TLS: true, ServerName: "counter.lab.example.com", ALPN: []string{"h2", "http/1.1"}}},
		{"no sni", &tls.Config{InsecureSkipVerify: true}, ClientHello{TLS: true}},
		{"tls 1.2 only", &tls.Config{ServerName: "a.example.com", MaxVersion: tls.VersionTLS12}, ClientHello{TLS: true, ServerName: "a.example.com"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := captureHello(t, c.cfg)
			br := bufio.NewReader(bytes.NewReader(raw))
			got, err := PeekClientHello(br)
			if err != nil {
				t.Fatal(err)
			}
			if got.TLS != c.want.TLS || got.ServerName != c.want.ServerName || len(got.ALPN) != len(c.want.ALPN) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
			// Nothing was consumed: the bytes replay to the TLS stack.
			rest, _ := io.ReadAll(br)
			if !bytes.Equal(rest, raw) {
				t.Fatal("peeking consumed bytes")
			}
		})
	}
	t.Run("plain text", func(t *testing.T) {
		got, err := PeekClientHello(bufio.NewReader(bytes.NewReader([]byte("GET / HTTP/1.1\r\n"))))
		if err != nil || got.TLS {
			t.Fatalf("%+v %v", got, err)
		}
	})
	t.Run("hello split across records", func(t *testing.T) {
		raw := captureHello(t, &tls.Config{ServerName: "split.example.com"})
		body := raw[5 : 5+int(raw[3])<<8|int(raw[4])]
		var split []byte
		for i := 0; i < len(body); i += 100 {
			end := min(i+100, len(body))
			split = append(split, 0x16, 3, 1, byte((end-i)>>8), byte(end-i))
			split = append(split, body[i:end]...)
		}
		got, err := PeekClientHello(bufio.NewReader(bytes.NewReader(split)))
		if err != nil || got.ServerName != "split.example.com" {
			t.Fatalf("%+v %v", got, err)
		}
	})
}

func FuzzClientHello(f *testing.F) {
	f.Add(captureHello(f, &tls.Config{ServerName: "fuzz.example.com", NextProtos: []string{"h2"}}))
	f.Add(captureHello(f, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 16)
		h, err := PeekClientHello(br)
		if err == nil && h.TLS && len(data) > 0 && data[0] != 0x16 {
			t.Fatal("non-handshake data reported as TLS")
		}
		// Whatever was peeked must replay unchanged.
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, data) {
			t.Fatal("peeking consumed bytes")
		}
		if len(data) > 4 {
			ParseClientHello(data[5:])
		}
	})
}
