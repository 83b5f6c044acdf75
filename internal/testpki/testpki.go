// Package testpki holds static certificates for tests: a root CA, server
// certificates for counter.lab.example.com / *.example.com / localhost /
// 127.0.0.1 (ECDSA, a rotated twin, and RSA), a client certificate, an
// expired one, and an untrusted CA with its client. Regenerate with
// `go run ./hack/gen-test-pki`.
package testpki

import (
	"embed"
	"path"
)

//go:embed *.crt *.key
var files embed.FS

// Read returns the named file, e.g. "server.crt"; it panics if missing,
// which in a test is a bug in the test.
func Read(name string) []byte {
	b, err := files.ReadFile(path.Clean(name))
	if err != nil {
		panic(err)
	}
	return b
}
