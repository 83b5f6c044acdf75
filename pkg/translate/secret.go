package translate

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/portico-gateway/portico/pkg/ir"
)

// secret builds an SDS resource. File secrets name paths on the proxy's own
// filesystem with a watched directory, so both Envoy and the Go proxy load
// them locally and reload them on Kubernetes' "..data" swap; the controller
// never reads them. Inline secrets carry what the controller read from a
// Kubernetes Secret.
func secret(s *ir.Secret) (*tlsv3.Secret, error) {
	out := &tlsv3.Secret{Name: s.Name}
	switch {
	case s.File != nil:
		f := s.File
		var watch *corev3.WatchedDirectory
		if f.WatchedDirectory != "" {
			watch = &corev3.WatchedDirectory{Path: f.WatchedDirectory}
		}
		switch {
		case f.CertificateChain != "":
			out.Type = &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: fileSource(f.CertificateChain),
				PrivateKey:       fileSource(f.PrivateKey),
				WatchedDirectory: watch,
			}}
		case f.TrustedCA != "":
			out.Type = &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:        fileSource(f.TrustedCA),
				WatchedDirectory: watch,
			}}
		default:
			return nil, fmt.Errorf("file secret names no file")
		}
	case s.Inline != nil:
		in := s.Inline
		switch {
		case len(in.CertificateChain) > 0:
			out.Type = &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inlineSource(in.CertificateChain),
				PrivateKey:       inlineSource(in.PrivateKey),
			}}
		case len(in.TrustedCA) > 0:
			out.Type = &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inlineSource(in.TrustedCA),
			}}
		default:
			return nil, fmt.Errorf("inline secret is empty")
		}
	default:
		return nil, fmt.Errorf("secret has no source")
	}
	return out, nil
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

func inlineSource(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
