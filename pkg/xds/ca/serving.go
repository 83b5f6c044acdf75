package ca

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Serving keeps a serving certificate signed by the current CA: it issues
// one at Start, and renews it when two thirds of its lifetime have passed
// or when the CA changes (re-read every CheckEvery).
type Serving struct {
	// Load returns the current CA (e.g. from its Secret).
	Load func(ctx context.Context) (*Authority, error)
	// Names are the DNS names (and IPs) the certificate is for.
	Names []string
	// Validity of each certificate (default 24h) and how often the CA and
	// the certificate's age are checked (default 1 minute).
	Validity, CheckEvery time.Duration
	Log                  logr.Logger
	// Now is the clock (tests).
	Now func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	caPEM   []byte
	renewAt time.Time
}

func (s *Serving) defaults() {
	if s.Validity == 0 {
		s.Validity = 24 * time.Hour
	}
	if s.CheckEvery == 0 {
		s.CheckEvery = time.Minute
	}
	if s.Now == nil {
		s.Now = time.Now
	}
}

// Start issues the first certificate.
func (s *Serving) Start(ctx context.Context) error {
	s.defaults()
	_, err := s.check(ctx)
	return err
}

// Run renews the certificate until ctx ends. Failures are logged and
// retried; the current certificate keeps serving meanwhile.
func (s *Serving) Run(ctx context.Context) error {
	s.defaults()
	t := time.NewTicker(s.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if renewed, err := s.check(ctx); err != nil {
				s.Log.Error(err, "renewing the xDS serving certificate; the current one keeps serving")
			} else if renewed {
				s.Log.Info("xDS serving certificate renewed", "names", s.Names, "expires", s.Certificate().Leaf.NotAfter)
			}
		}
	}
}

// check issues a new certificate if there is none, it is due, or the CA
// changed.
func (s *Serving) check(ctx context.Context) (bool, error) {
	a, err := s.Load(ctx)
	if err != nil {
		return false, err
	}
	now := s.Now()
	s.mu.Lock()
	due := s.cert == nil || !now.Before(s.renewAt) || !bytes.Equal(s.caPEM, a.CertPEM)
	s.mu.Unlock()
	if !due {
		return false, nil
	}
	cert, err := a.Issue(s.Names, s.Validity, now)
	if err != nil {
		return false, err
	}
	life := cert.Leaf.NotAfter.Sub(now)
	s.mu.Lock()
	s.cert, s.caPEM, s.renewAt = cert, a.CertPEM, now.Add(life*2/3)
	s.mu.Unlock()
	return true, nil
}

// Certificate returns the current certificate.
func (s *Serving) Certificate() *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert
}

// TLSConfig serves the current certificate to every handshake.
func (s *Serving) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.Certificate(); c != nil {
				return c, nil
			}
			return nil, errors.New("no xDS serving certificate yet")
		},
	}
}
