package listener

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"testing/iotest"

	"github.com/portico-gateway/portico/internal/testpki"
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
	_, raw, err := ReadClientHello(b)
	if err != nil {
		t.Fatalf("reading a real ClientHello: %v", err)
	}
	b.Close()
	return raw
}

func TestReadClientHello(t *testing.T) {
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
			r := bytes.NewReader(append(raw, "after"...))
			got, read, err := ReadClientHello(r)
			if err != nil {
				t.Fatal(err)
			}
			if got.TLS != c.want.TLS || got.ServerName != c.want.ServerName || len(got.ALPN) != len(c.want.ALPN) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
			// What was read replays to the TLS stack, followed by the rest.
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(append(read, rest...), append(raw, "after"...)) {
				t.Fatal("reading lost or reordered bytes")
			}
		})
	}
	t.Run("plain text", func(t *testing.T) {
		got, _, err := ReadClientHello(bytes.NewReader([]byte("GET / HTTP/1.1\r\n")))
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
		got, _, err := ReadClientHello(bytes.NewReader(split))
		if err != nil || got.ServerName != "split.example.com" {
			t.Fatalf("%+v %v", got, err)
		}
	})
	t.Run("large hello in one-byte segments", func(t *testing.T) {
		// 18 KiB of padding: post-quantum key shares make hellos this big.
		hello := testpki.ClientHello("big.example.com", 18<<10)
		got, read, err := ReadClientHello(iotest.OneByteReader(bytes.NewReader(hello)))
		if err != nil || got.ServerName != "big.example.com" || !bytes.Equal(read, hello) {
			t.Fatalf("%+v %v (read %d of %d bytes)", got, err, len(read), len(hello))
		}
	})
	t.Run("oversized hello", func(t *testing.T) {
		_, _, err := ReadClientHello(bytes.NewReader(testpki.ClientHello("x.example.com", 70<<10)))
		if err == nil {
			t.Fatal("a ClientHello over 64 KiB must be refused")
		}
	})
}

func FuzzClientHello(f *testing.F) {
	f.Add(captureHello(f, &tls.Config{ServerName: "fuzz.example.com", NextProtos: []string{"h2"}}))
	f.Add(captureHello(f, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := iotest.HalfReader(bytes.NewReader(data))
		h, read, err := ReadClientHello(r)
		if err == nil && h.TLS && len(data) > 0 && data[0] != 0x16 {
			t.Fatal("non-handshake data reported as TLS")
		}
		// What was read, then the rest, must replay unchanged.
		rest, _ := io.ReadAll(r)
		if !bytes.Equal(append(read, rest...), data) {
			t.Fatal("reading lost or reordered bytes")
		}
		if len(data) > 4 {
			ParseClientHello(data[5:])
		}
	})
}
