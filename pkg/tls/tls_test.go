package tls

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/internal/testpki"
)

var now = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func TestParsePair(t *testing.T) {
	cert, key := testpki.Read("server.crt"), testpki.Read("server.key")
	chain := append(append([]byte{}, cert...), testpki.Read("ca.crt")...)
	cases := []struct {
		name      string
		cert, key []byte
		at        time.Time
		err       string
	}{
		{"ecdsa", cert, key, now, ""},
		{"rsa", testpki.Read("server-rsa.crt"), testpki.Read("server-rsa.key"), now, ""},
		{"with chain", chain, key, now, ""},
		{"chain out of order", append(append([]byte{}, testpki.Read("ca.crt")...), cert...), key, now, "out of order"},
		{"key does not match", cert, testpki.Read("other.key"), now, "does not match"},
		{"expired", testpki.Read("expired.crt"), testpki.Read("expired.key"), now, "expired at 2021-01-01"},
		{"not yet valid", cert, key, time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC), "not valid until"},
		{"half written certificate", cert[:len(cert)/2], key, now, "no PEM CERTIFICATE block"},
		{"empty key", cert, nil, now, "private key is empty"},
	}
	for _, c := range cases {
		p, err := ParsePair(c.cert, c.key, c.at)
		if c.err == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			} else if p.Info.SerialNumber == "" || p.Leaf == nil {
				t.Errorf("%s: no certificate info", c.name)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.err)
		}
	}
	p, _ := ParsePair(cert, key, now)
	if got := UncoveredHosts(p.Leaf, []string{"*", "counter.lab.example.com", "*.example.com", "api.example.com", "other.org", "*.other.org"}); strings.Join(got, ",") != "other.org,*.other.org" {
		t.Errorf("UncoveredHosts = %v", got)
	}
	if info := Describe(p.Leaf); info.KeyType != "ECDSA P-256" || info.SerialNumber != "64" {
		t.Errorf("Describe = %+v", info)
	}
}

type events struct {
	mu  sync.Mutex
	evs []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
}

func (e *events) rejected() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.evs {
		if !ev.OK {
			n++
		}
	}
	return n
}

func serial(t *testing.T, s *Store, name string) string {
	t.Helper()
	c, err := s.Certificate(name)
	if err != nil {
		t.Fatal(err)
	}
	return Describe(c.Leaf).SerialNumber
}

func waitSerial(t *testing.T, s *Store, name, want string) time.Duration {
	t.Helper()
	start := time.Now()
	poll.NoError(t, 10*time.Second, "serial "+want+" to be served", func() error {
		if got := serial(t, s, name); got != want {
			return fmt.Errorf("still serial %s", got)
		}
		return nil
	})
	return time.Since(start)
}

func startStore(t *testing.T) (*Store, *events) {
	ev := &events{}
	s := NewStore(logr.Discard(), ev.add)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, ev
}

// kubeletDir lays out a directory the way the kubelet mounts a Secret:
// tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/.
func kubeletDir(t *testing.T, cert, key string) (string, func(cert, key string)) {
	dir := t.TempDir()
	version := 0
	write := func(cert, key string) {
		version++
		ts := filepath.Join(dir, "..2026_11_21_00_00_0"+string(rune('0'+version)))
		os.MkdirAll(ts, 0o755)
		os.WriteFile(filepath.Join(ts, "tls.crt"), testpki.Read(cert), 0o644)
		os.WriteFile(filepath.Join(ts, "tls.key"), testpki.Read(key), 0o600)
		tmp := filepath.Join(dir, "..data_tmp")
		os.Remove(tmp)
		if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write(cert, key)
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, write
}

func TestStoreFollowsKubeletSwap(t *testing.T) {
	dir, swap := kubeletDir(t, "server.crt", "server.key")
	s, ev := startStore(t)
	spec := Spec{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"), WatchDir: dir}
	if err := s.Set("file-cert:x", spec); err != nil {
		t.Fatal(err)
	}
	if got := serial(t, s, "file-cert:x"); got != "64" {
		t.Fatalf("initial serial %s", got)
	}
	swap("server-rotated.crt", "server-rotated.key")
	if d := waitSerial(t, s, "file-cert:x", "65"); d > time.Second {
		t.Errorf("rotation took %v, want under a second", d)
	}
	// A swap to a mismatched pair is rejected; the rotated pair keeps serving.
	swap("server.crt", "other.key")
	poll.Until(t, "the mismatched pair to be reported", func() bool { return ev.rejected() > 0 })
	if got := serial(t, s, "file-cert:x"); got != "65" {
		t.Fatalf("a bad pair replaced the good one: serial %s", got)
	}
	if info := s.Infos()[0]; !strings.Contains(info.LastError, "does not match") {
		t.Errorf("last error = %q", info.LastError)
	}
}

func TestStoreRenameOverAndHalfWrittenFiles(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(cert, testpki.Read("server.crt"), 0o644)
	os.WriteFile(key, testpki.Read("server.key"), 0o600)
	s, ev := startStore(t)
	if err := s.Set("c", Spec{CertFile: cert, KeyFile: key}); err != nil {
		t.Fatal(err)
	}
	// A writer truncates the certificate and writes half of the new one.
	newCert := testpki.Read("server-rotated.crt")
	os.WriteFile(cert, newCert[:len(newCert)/2], 0o644)
	poll.Until(t, "the half-written certificate to be seen and rejected", func() bool { return ev.rejected() > 0 })
	if got := serial(t, s, "c"); got != "64" {
		t.Fatalf("a half-written certificate was served: %s", got)
	}
	// Editors write elsewhere and rename over: the key first, then the certificate.
	for _, f := range []struct{ path, name string }{{key, "server-rotated.key"}, {cert, "server-rotated.crt"}} {
		tmp := f.path + ".tmp"
		os.WriteFile(tmp, testpki.Read(f.name), 0o600)
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	waitSerial(t, s, "c", "65")
}

func TestStoreInlineAndCA(t *testing.T) {
	s := NewStore(logr.Discard(), nil)
	if err := s.Set("kubernetes://c", Spec{CertPEM: testpki.Read("server.crt"), KeyPEM: testpki.Read("other.key")}); err == nil {
		t.Fatal("a mismatched inline pair was accepted")
	}
	if s.Has("kubernetes://c") {
		t.Fatal("an invalid secret must not be usable")
	}
	if err := s.Set("kubernetes://c-cacert", Spec{CAPEM: testpki.Read("ca.crt")}); err != nil {
		t.Fatal(err)
	}
	pool, err := s.CAPool("kubernetes://c-cacert")
	if err != nil || pool == nil {
		t.Fatal(err)
	}
	if _, err := s.Certificate("kubernetes://c-cacert"); err == nil {
		t.Error("a CA secret has no certificate")
	}
	if !bytes.Contains(testpki.Read("ca.crt"), []byte("BEGIN CERTIFICATE")) {
		t.Fatal("test PKI broken")
	}
}
