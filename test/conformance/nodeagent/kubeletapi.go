//go:build linux

package nodeagent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
)

// KubeletPort is where the agent serves the kubelet API (container logs)
// on the bridge address, as a kubelet does on 10250.
const KubeletPort = 10250

// kubeletAPI makes virtual-kubelet serve its kubelet API — the pod
// routes, of which the agent implements container logs, which the
// suite's mirror tests read through the API server, and port-forward
// (portforward.go) — over TLS with a
// certificate made for this run (the API server does not verify kubelet
// certificates unless --kubelet-certificate-authority is set).
//
// There is no authentication: the API only listens on the bridge of the
// harness's private network namespace, where only the cluster runs.
func (a *Agent) kubeletAPI() ([]nodeutil.NodeOpt, error) {
	cert, err := selfSigned(a.cfg.NodeName, a.cfg.BridgeIP)
	if err != nil {
		return nil, fmt.Errorf("kubelet API certificate: %w", err)
	}
	mux := http.NewServeMux()
	return []nodeutil.NodeOpt{
		nodeutil.WithTLSConfig(func(c *tls.Config) error {
			c.Certificates = []tls.Certificate{cert}
			return nil
		}),
		nodeutil.AttachProviderRoutes(mux),
		func(c *nodeutil.NodeConfig) error {
			c.Handler = mux
			c.HTTPListenAddr = net.JoinHostPort(a.cfg.BridgeIP, strconv.Itoa(KubeletPort))
			return nil
		},
	}, nil
}

// selfSigned is a serving certificate for the agent's address, valid for
// a day (a run is bounded far below that).
func selfSigned(name, ip string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
	}
	if addr := net.ParseIP(ip); addr != nil {
		tmpl.IPAddresses = []net.IP{addr}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
