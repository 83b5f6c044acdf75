// Command gen-test-pki writes the static certificates tests use
// (internal/testpki). They are valid for a century so golden files stay
// stable; rerun only to add material.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

func main() {
	out := flag.String("out", "internal/testpki", "output directory")
	flag.Parse()
	notBefore := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter := time.Date(2120, 1, 1, 0, 0, 0, 0, time.UTC)

	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Portico Test Root CA", Organization: []string{"Portico"}},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER := must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))
	ca := must(x509.ParseCertificate(caDER))
	write(*out, "ca.crt", "CERTIFICATE", caDER)
	writeKey(*out, "ca.key", caKey)

	leaf := func(name string, serial int64, cn string, dns []string, ips []net.IP, client bool, nb, na time.Time, rsaKey bool) {
		var pub, priv any
		if rsaKey {
			k := must(rsa.GenerateKey(rand.Reader, 2048))
			pub, priv = &k.PublicKey, k
		} else {
			k := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
			pub, priv = &k.PublicKey, k
		}
		usage := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		if client {
			usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"Portico"}},
			NotBefore: nb, NotAfter: na, DNSNames: dns, IPAddresses: ips,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: usage,
		}
		der := must(x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey))
		write(*out, name+".crt", "CERTIFICATE", der)
		writeKey(*out, name+".key", priv)
	}
	local := []net.IP{net.ParseIP("127.0.0.1")}
	leaf("server", 100, "counter.lab.example.com", []string{"counter.lab.example.com", "*.example.com", "localhost"}, local, false, notBefore, notAfter, false)
	leaf("server-rotated", 101, "counter.lab.example.com", []string{"counter.lab.example.com", "*.example.com", "localhost"}, local, false, notBefore, notAfter, false)
	leaf("server-rsa", 102, "counter.lab.example.com", []string{"counter.lab.example.com", "*.example.com", "localhost"}, local, false, notBefore, notAfter, true)
	leaf("other", 103, "other.test", []string{"other.test"}, nil, false, notBefore, notAfter, false)
	leaf("client", 200, "client.portico.test", []string{"client.portico.test"}, nil, true, notBefore, notAfter, false)
	leaf("expired", 300, "counter.lab.example.com", []string{"counter.lab.example.com"}, nil, false, notBefore, notBefore.AddDate(1, 0, 0), false)
	// A second, unrelated CA, for "wrong CA" cases.
	otherKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	otherTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Untrusted CA"}, NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	otherDER := must(x509.CreateCertificate(rand.Reader, otherTmpl, otherTmpl, &otherKey.PublicKey, otherKey))
	other := must(x509.ParseCertificate(otherDER))
	write(*out, "untrusted-ca.crt", "CERTIFICATE", otherDER)
	ck := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	cder := must(x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(201), Subject: pkix.Name{CommonName: "untrusted client"},
		NotBefore: notBefore, NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature},
		other, &ck.PublicKey, otherKey))
	write(*out, "untrusted-client.crt", "CERTIFICATE", cder)
	writeKey(*out, "untrusted-client.key", ck)
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}

func write(dir, name, typ string, der []byte) {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		log.Fatal(err)
	}
}

func writeKey(dir, name string, key any) {
	der := must(x509.MarshalPKCS8PrivateKey(key))
	write(dir, name, "PRIVATE KEY", der)
}
