package listener

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	ptls "github.com/portico-gateway/portico/pkg/tls"
)

// serverTLS builds a chain's TLS configuration. Certificates and client CAs
// are looked up in the store on every handshake, so a rotated secret
// applies to the next handshake without touching the listener.
func serverTLS(t *TLSSpec, store *ptls.Store) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   t.MinVersion,
		MaxVersion:   t.MaxVersion,
		CipherSuites: t.CipherSuites,
		NextProtos:   t.ALPN,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			var fallback *tls.Certificate
			for _, name := range t.CertSecrets {
				cert, err := store.Certificate(name)
				if err != nil {
					continue
				}
				// With RSA and ECDSA certificates, serve what the client supports.
				if hello.SupportsCertificate(cert) == nil {
					return cert, nil
				}
				if fallback == nil {
					fallback = cert
				}
			}
			if fallback != nil {
				return fallback, nil
			}
			return nil, fmt.Errorf("no certificate available (secrets %v)", t.CertSecrets)
		},
	}
	if t.ValidationSecret == "" {
		return cfg
	}
	cfg.ClientAuth = tls.RequestClientCert
	if t.RequireClientCert {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			if t.RequireClientCert {
				return errors.New("client certificate required")
			}
			return nil
		}
		pool, err := store.CAPool(t.ValidationSecret)
		if err != nil {
			return err
		}
		certs := make([]*x509.Certificate, 0, len(raw))
		for _, b := range raw {
			c, err := x509.ParseCertificate(b)
			if err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			certs = append(certs, c)
		}
		opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := certs[0].Verify(opts); err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		if len(t.SANs) == 0 {
			return nil
		}
		leaf := certs[0]
		for _, want := range t.SANs {
			for _, d := range leaf.DNSNames {
				if d == want {
					return nil
				}
			}
			for _, u := range leaf.URIs {
				if u.String() == want {
					return nil
				}
			}
			for _, e := range leaf.EmailAddresses {
				if e == want {
					return nil
				}
			}
			for _, ip := range leaf.IPAddresses {
				if ip.String() == want {
					return nil
				}
			}
		}
		return fmt.Errorf("client certificate matches none of the subject alt names %v", t.SANs)
	}
	return cfg
}
