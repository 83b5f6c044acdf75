package ca_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/portico-gateway/portico/pkg/xds/ca"
)

func TestIssuedCertificatesVerify(t *testing.T) {
	now := time.Now()
	a, err := ca.New("test", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ca.Parse(a.CertPEM, a.KeyPEM)
	if err != nil || !again.Cert.Equal(a.Cert) {
		t.Fatalf("round trip: %v", err)
	}
	cert, err := a.Issue([]string{"portico-controller.portico-system.svc", "127.0.0.1"}, 2*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Leaf.NotAfter.Equal(a.Cert.NotAfter) {
		t.Errorf("a certificate outlives its CA: %v > %v", cert.Leaf.NotAfter, a.Cert.NotAfter)
	}
	for _, name := range []string{"portico-controller.portico-system.svc", "127.0.0.1"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: a.Pool(), DNSName: name}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: a.Pool(), DNSName: "evil.example.com"}); err == nil {
		t.Error("verified for a name it was not issued for")
	}
	other, _ := ca.New("other", time.Hour, now)
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: other.Pool(), DNSName: "127.0.0.1"}); err == nil {
		t.Error("verified by another CA")
	}
	if _, err := ca.Parse(a.CertPEM, other.KeyPEM); err == nil {
		t.Error("a CA with a key that does not match was accepted")
	}
	if _, err := ca.Parse(cert.Leaf.Raw, a.KeyPEM); err == nil {
		t.Error("garbage accepted")
	}
}

func TestServingRenews(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	current, _ := ca.New("first", 100*time.Hour, now)
	s := &ca.Serving{
		Load: func(context.Context) (*ca.Authority, error) {
			mu.Lock()
			defer mu.Unlock()
			return current, nil
		},
		Names: []string{"xds"}, Validity: 3 * time.Hour, Now: func() time.Time { return now }, Log: logr.Discard(),
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := s.Certificate()
	cfg := s.TLSConfig()
	if c, _ := cfg.GetCertificate(nil); c != first {
		t.Fatal("the TLS config does not serve the current certificate")
	}
	run := func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.CheckEvery = time.Millisecond
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		deadline := time.Now().Add(5 * time.Second)
		for s.Certificate() == first && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		cancel()
		<-done
	}
	now = now.Add(time.Hour) // a third of its life: not yet
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	s.CheckEvery = time.Millisecond
	s.Run(ctx)
	cancel()
	if s.Certificate() != first {
		t.Fatal("renewed too early")
	}
	now = now.Add(time.Hour + time.Minute) // past two thirds
	run()
	second := s.Certificate()
	if second == first || !second.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Fatal("not renewed after two thirds of its life")
	}
	// A new CA: reissued at once, signed by it.
	mu.Lock()
	current, _ = ca.New("second", 100*time.Hour, now)
	mu.Unlock()
	first = second
	run()
	if s.Certificate() == second || !bytes.Equal(s.Certificate().Certificate[1], current.Cert.Raw) {
		t.Fatal("not reissued by the new CA")
	}
}

// TestSecretStoreCreatesOnce: replicas starting together end up with one
// CA.
func TestSecretStoreCreatesOnce(t *testing.T) {
	cs := fake.NewClientset()
	var wg sync.WaitGroup
	got := make([]*ca.Authority, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := (&ca.SecretStore{Client: cs, Namespace: "portico-system", Name: "portico-ca", Log: logr.Discard()}).Load(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = a
		}()
	}
	wg.Wait()
	for _, a := range got[1:] {
		if a == nil || got[0] == nil || !a.Cert.Equal(got[0].Cert) {
			t.Fatal("replicas disagree on the CA")
		}
	}
}
