package tls

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/internal/testpki"
)

// logLines captures log lines.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		l.lines = append(l.lines, prefix+" "+args)
		l.mu.Unlock()
	}, funcr.Options{})
}

func (l *logLines) matching(sub string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			out = append(out, s)
		}
	}
	return out
}

// A certificate that never loaded must not be described as "the previous
// certificate keeps serving": there is none. A failed reload of a loaded
// one must. Each failure is logged once, not at every rescan, and the
// secret loads by itself once its files appear.
func TestFirstLoadFailureClaimsNoPreviousCertificate(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	logs := &logLines{}
	ev := &events{}
	s := NewStore(logs.logger(), ev.add)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	err := s.Set("file-cert:x", Spec{CertFile: cert, KeyFile: key, WatchDir: dir})
	if err == nil || !strings.Contains(err.Error(), "no certificate loaded yet") || strings.Contains(err.Error(), "previous") {
		t.Fatalf("first load of a missing file: %v", err)
	}
	if p := s.Problem("file-cert:x"); !strings.Contains(p, "no certificate loaded yet") || !strings.Contains(p, "tls.crt") {
		t.Errorf("Problem = %q", p)
	}
	// Rescans (every 5 s) and unrelated events in the directory must not
	// repeat the failure.
	os.WriteFile(filepath.Join(dir, "unrelated"), []byte("x"), 0o644)
	s.reloadChanged(nil)
	s.reloadChanged(nil)
	if n := len(logs.matching("certificate cannot be loaded")); n > 1 {
		t.Errorf("the same failure was logged %d times", n)
	}
	if got := logs.matching("previous certificate"); len(got) > 0 {
		t.Errorf("a certificate that never loaded is claimed to keep serving: %v", got)
	}

	os.WriteFile(key, testpki.Read("server.key"), 0o600)
	os.WriteFile(cert, testpki.Read("server.crt"), 0o644)
	poll.Until(t, "the certificate to load once its files exist", func() bool { return s.Has("file-cert:x") })
	if p := s.Problem("file-cert:x"); p != "" {
		t.Errorf("Problem after loading = %q", p)
	}

	// Now a reload that fails does keep the previous certificate.
	os.WriteFile(cert, []byte("garbage"), 0o644)
	poll.Until(t, "the bad reload to be reported", func() bool { return strings.Contains(s.Problem("file-cert:x"), "previous certificate keeps serving") })
	if got := logs.matching("certificate reload rejected; the previous certificate keeps serving"); len(got) != 1 {
		t.Errorf("reload rejection logged %d times: %v", len(got), got)
	}
	if !s.Has("file-cert:x") {
		t.Error("the previous certificate was dropped")
	}
}

// A certificate path that is a FIFO must not wedge the store (Set is
// called while the proxy applies configuration).
func TestCertificateFileThatIsAFIFO(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := syscall.Mkfifo(cert, 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(key, testpki.Read("server.key"), 0o600)
	s := NewStore(logr.Discard(), nil)
	errc := make(chan error, 1)
	go func() { errc <- s.Set("c", Spec{CertFile: cert, KeyFile: key}) }()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "FIFO") {
			t.Errorf("Set = %v, want a refusal naming the FIFO", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Set blocked on a FIFO at %s", cert)
	}
}
