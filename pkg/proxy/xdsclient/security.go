package xdsclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/portico-gateway/portico/internal/fsread"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Security is how the client proves itself to the controller and checks
// the controller. The zero value is plaintext without credentials (a
// controller on loopback).
type Security struct {
	// CAFile verifies the controller's certificate and enables TLS. It is
	// read at every connection, so a rotated CA is picked up.
	CAFile string
	// ServerName is the name the controller's certificate must carry
	// (default: the host of the address).
	ServerName string
	// CertFile and KeyFile are a client certificate, for controllers that
	// require mutual TLS.
	CertFile, KeyFile string
	// TokenFile holds a token sent as "authorization: Bearer <token>" on
	// every stream: a projected service-account token (re-read when the
	// kubelet rotates it) or the standalone controller's shared token.
	TokenFile string
}

// IsLoopback reports whether an address's host is a loopback address or
// "localhost".
func IsLoopback(address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		host = address
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Check reports configurations that would leak credentials or cannot
// work: a token over plaintext to anything but loopback, half a client
// certificate, a client certificate without TLS.
func (s Security) Check(address string) error {
	if (s.CertFile == "") != (s.KeyFile == "") {
		return errors.New("a client certificate needs both the certificate and the key file")
	}
	if s.CAFile == "" {
		if s.CertFile != "" {
			return errors.New("a client certificate needs TLS: set the CA file that verifies the controller")
		}
		if s.TokenFile != "" && !IsLoopback(address) {
			return fmt.Errorf("refusing to send the xDS token in clear text to %s: set the CA file that verifies the controller (TLS)", address)
		}
	}
	for _, f := range []string{s.CAFile, s.CertFile, s.KeyFile, s.TokenFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("xDS credentials: %w", err)
		}
	}
	return nil
}

// DialOptions returns the gRPC options that apply s.
func (s Security) DialOptions(address string) ([]grpc.DialOption, error) {
	if err := s.Check(address); err != nil {
		return nil, err
	}
	var opts []grpc.DialOption
	if s.CAFile == "" {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		name := s.ServerName
		if name == "" {
			if host, _, err := net.SplitHostPort(address); err == nil {
				name = host
			} else {
				name = address
			}
		}
		ca := credentialFile(s.CAFile)
		cfg := &tls.Config{
			MinVersion: tls.VersionTLS12,
			ServerName: name,
			// The chain is verified in VerifyConnection against the CA file
			// as it is now, so a rotated CA needs no restart.
			InsecureSkipVerify: true, //nolint:gosec // verified below
			VerifyConnection: func(cs tls.ConnectionState) error {
				pem, err := readCredential(ca)
				if err != nil {
					return err
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return fmt.Errorf("no certificate in the CA file %s", s.CAFile)
				}
				if len(cs.PeerCertificates) == 0 {
					return errors.New("the controller presented no certificate")
				}
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: name})
				if err != nil {
					return fmt.Errorf("verifying the controller's certificate for %s: %w", name, err)
				}
				return nil
			},
		}
		if s.CertFile != "" {
			certFile, keyFile := s.CertFile, s.KeyFile
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				c, err := tls.LoadX509KeyPair(certFile, keyFile)
				if err != nil {
					return nil, fmt.Errorf("loading the xDS client certificate: %w", err)
				}
				return &c, nil
			}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if s.TokenFile != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(&tokenCredentials{file: credentialFile(s.TokenFile), secure: s.CAFile != ""}))
	}
	return opts, nil
}

// tokenCredentials send a token file's content as a bearer token.
type tokenCredentials struct {
	file   *fsread.Cached
	secure bool
}

func (t *tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := readCredential(t.file)
	if err != nil {
		return nil, err
	}
	tok := bytes.TrimSpace(b)
	if len(tok) == 0 {
		return nil, fmt.Errorf("the xDS token file %s is empty", t.file.Path)
	}
	return map[string]string{"authorization": "Bearer " + string(tok)}, nil
}

// RequireTransportSecurity is false only for plaintext to loopback, which
// Check allows.
func (t *tokenCredentials) RequireTransportSecurity() bool { return t.secure }

// maxCredentialFile bounds a CA bundle or token file.
const maxCredentialFile = 1 << 20

// credentialFile is a CA or token file, read again when the kubelet
// replaces it.
func credentialFile(path string) *fsread.Cached {
	return &fsread.Cached{Path: path, Max: maxCredentialFile}
}

// readCredential reads a credential file, saying what it was for.
func readCredential(f *fsread.Cached) ([]byte, error) {
	b, err := f.Read()
	if err != nil {
		return nil, fmt.Errorf("xDS credentials: %w", err)
	}
	return b, nil
}
