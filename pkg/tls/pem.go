// Package tls owns certificate material everywhere in Portico: loading and
// validating PEM pairs and CA bundles, watching mounted files, and keeping a
// store of the material each SDS name resolves to. A bad or half-written
// certificate never replaces a good one.
package tls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// CertInfo describes a parsed leaf certificate for logs, status and /certs.
type CertInfo struct {
	Subject      string    `json:"subject"`
	Issuer       string    `json:"issuer"`
	SerialNumber string    `json:"serial_number"`
	DNSNames     []string  `json:"dns_names,omitempty"`
	IPAddresses  []string  `json:"ip_addresses,omitempty"`
	NotBefore    time.Time `json:"valid_from"`
	NotAfter     time.Time `json:"expiration_time"`
	KeyType      string    `json:"key_type"`
}

// Pair is a validated certificate chain with its private key.
type Pair struct {
	Certificate cryptotls.Certificate
	Leaf        *x509.Certificate
	Info        CertInfo
}

// ParsePair validates a PEM certificate chain and private key: both parse,
// the key matches the leaf, every certificate in the chain is signed by the
// next one, and the leaf is valid at now. It returns a descriptive error
// that says which of these failed.
func ParsePair(certPEM, keyPEM []byte, now time.Time) (*Pair, error) {
	if len(bytes.TrimSpace(certPEM)) == 0 {
		return nil, errors.New("certificate is empty")
	}
	if len(bytes.TrimSpace(keyPEM)) == 0 {
		return nil, errors.New("private key is empty")
	}
	chain, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	c, err := cryptotls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			// The key may belong to a later certificate: the chain is then
			// out of order (the leaf must come first).
			for i, other := range chain[1:] {
				if matchesKey(other, c.PrivateKey, keyPEM) {
					return nil, fmt.Errorf("certificate chain is out of order: the key belongs to certificate %d (%s), which must come first", i+1, other.Subject.CommonName)
				}
			}
			return nil, errors.New("private key does not match the certificate")
		}
		return nil, fmt.Errorf("key pair: %w", err)
	}
	leaf := chain[0]
	c.Leaf = leaf
	if err := checkChainOrder(chain); err != nil {
		return nil, err
	}
	if err := checkValidity(leaf, now); err != nil {
		return nil, err
	}
	return &Pair{Certificate: c, Leaf: leaf, Info: Describe(leaf)}, nil
}

// ParseCertificates parses every CERTIFICATE block of a PEM bundle.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d: %w", len(out), err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found (is the file complete?)")
	}
	return out, nil
}

// ParseCABundle parses a CA bundle into a pool.
func ParseCABundle(data []byte) (*x509.CertPool, []*x509.Certificate, error) {
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, nil, fmt.Errorf("CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, certs, nil
}

func checkChainOrder(chain []*x509.Certificate) error {
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("certificate chain is out of order: certificate %d (%s) is not signed by certificate %d (%s)",
				i, chain[i].Subject.CommonName, i+1, chain[i+1].Subject.CommonName)
		}
	}
	return nil
}

func checkValidity(leaf *x509.Certificate, now time.Time) error {
	if now.Before(leaf.NotBefore) {
		return fmt.Errorf("certificate is not valid until %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Describe summarises a certificate.
func Describe(c *x509.Certificate) CertInfo {
	info := CertInfo{
		Subject:      c.Subject.String(),
		Issuer:       c.Issuer.String(),
		SerialNumber: strings.ToLower(c.SerialNumber.Text(16)),
		DNSNames:     c.DNSNames,
		NotBefore:    c.NotBefore,
		NotAfter:     c.NotAfter,
		KeyType:      keyType(c.PublicKey),
	}
	for _, ip := range c.IPAddresses {
		info.IPAddresses = append(info.IPAddresses, ip.String())
	}
	return info
}

func keyType(k crypto.PublicKey) string {
	switch k := k.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", k)
}

// UncoveredHosts returns the hosts (exact or "*.suffix") the certificate's
// SANs do not cover. "*" is always covered: a catch-all server accepts
// whatever certificate it is given.
func UncoveredHosts(leaf *x509.Certificate, hosts []string) []string {
	var out []string
	for _, h := range hosts {
		if h == "*" || h == "" {
			continue
		}
		probe := h
		if strings.HasPrefix(h, "*.") {
			probe = "portico-probe" + h[1:]
		}
		if leaf.VerifyHostname(probe) != nil {
			out = append(out, h)
		}
	}
	return out
}

// matchesKey reports whether the private key in keyPEM belongs to cert.
func matchesKey(cert *x509.Certificate, _ crypto.PrivateKey, keyPEM []byte) bool {
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	_, err := cryptotls.X509KeyPair(certPEM, keyPEM)
	return err == nil
}
