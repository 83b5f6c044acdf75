package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"

	"github.com/portico-gateway/portico/pkg/proxy/xdsclient"
	"github.com/portico-gateway/portico/pkg/xds"
	"github.com/portico-gateway/portico/pkg/xds/auth"
	"github.com/portico-gateway/portico/pkg/xds/ca"
)

// xdsSecurityConfig is how the xDS port authenticates proxies.
type xdsSecurityConfig struct {
	// Both modes.
	insecure bool
	// Standalone: a shared token and/or mutual TLS.
	tokenFile, tlsCert, tlsKey, clientCA string
	// Kubernetes: service-account tokens and a managed CA.
	audience, caSecret, rootConfigMap, dnsNames, serviceName string
}

func (x *xdsSecurityConfig) register(fs *flag.FlagSet) {
	fs.BoolVar(&x.insecure, "xds-insecure", false, "serve xDS without authentication (plaintext, every client trusted with every Secret); standalone on loopback needs no flag")
	fs.StringVar(&x.tokenFile, "xds-token-file", "", "standalone: proxies must send this file's token (authorization: Bearer); re-read when it changes")
	fs.StringVar(&x.tlsCert, "xds-tls-cert", "", "standalone: serve xDS over TLS with this certificate (with --xds-tls-key)")
	fs.StringVar(&x.tlsKey, "xds-tls-key", "", "standalone: key of --xds-tls-cert")
	fs.StringVar(&x.clientCA, "xds-client-ca", "", "standalone: require client certificates signed by this CA (mutual TLS; needs --xds-tls-cert)")
	fs.StringVar(&x.audience, "xds-token-audience", auth.DefaultAudience, "Kubernetes mode: audience proxies' service-account tokens must be issued for")
	fs.StringVar(&x.caSecret, "ca-secret", "portico-ca", "Kubernetes mode: Secret (in the controller's namespace) holding the CA of the xDS port; created if absent")
	fs.StringVar(&x.rootConfigMap, "ca-root-configmap", "portico-ca-root-cert", "Kubernetes mode: ConfigMap written into every namespace with the CA certificate (root-cert.pem)")
	fs.StringVar(&x.serviceName, "xds-service-name", "portico-controller", "Kubernetes mode: the controller's Service, whose DNS names the xDS certificate carries")
	fs.StringVar(&x.dnsNames, "xds-dns-names", "", "Kubernetes mode: names of the xDS certificate, comma-separated (default: the Service's DNS names)")
}

// standaloneXDS decides how the standalone xDS listener is secured: on
// loopback nothing is needed; elsewhere a token or client certificates are,
// unless --xds-insecure says otherwise. It returns the options and
// whether the embedded proxy must use a private channel (a credential is
// required on the public one).
func standaloneXDS(log logr.Logger, address string, x xdsSecurityConfig) (xds.ServeOptions, bool, error) {
	var o xds.ServeOptions
	if (x.tlsCert == "") != (x.tlsKey == "") {
		return o, false, errors.New("--xds-tls-cert and --xds-tls-key go together")
	}
	if x.clientCA != "" && x.tlsCert == "" {
		return o, false, errors.New("--xds-client-ca needs --xds-tls-cert and --xds-tls-key (mutual TLS)")
	}
	loopback := xdsclient.IsLoopback(address)
	if x.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(x.tlsCert, x.tlsKey)
		if err != nil {
			return o, false, fmt.Errorf("--xds-tls-cert: %w", err)
		}
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	}
	var as []auth.Authenticator
	if x.clientCA != "" {
		pem, err := os.ReadFile(x.clientCA)
		if err != nil {
			return o, false, fmt.Errorf("--xds-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return o, false, fmt.Errorf("--xds-client-ca: no certificate in %s", x.clientCA)
		}
		o.TLS.ClientCAs = pool
		// Verified when presented; a token may stand in for it.
		o.TLS.ClientAuth = tls.VerifyClientCertIfGiven
		if x.tokenFile == "" {
			o.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		}
		as = append(as, auth.ClientCertificate())
	}
	if x.tokenFile != "" {
		a, err := auth.StaticToken(x.tokenFile)
		if err != nil {
			return o, false, fmt.Errorf("--xds-token-file: %w", err)
		}
		as = append(as, a)
		if o.TLS == nil && !loopback {
			log.Info("WARNING: the xDS token travels in clear text; add --xds-tls-cert and --xds-tls-key", "address", address)
		}
	}
	switch {
	case len(as) > 0:
		o.Authenticator = auth.Any(as...)
		return o, true, nil
	case x.insecure:
		if !loopback {
			log.Info("WARNING: serving xDS without authentication (--xds-insecure): anyone who reaches the address gets every proxy's configuration and private keys", "address", address)
		}
		return o, false, nil
	case !loopback:
		return o, false, fmt.Errorf("refusing to serve xDS on %s without authentication: give --xds-token-file, or --xds-tls-cert/--xds-tls-key with --xds-client-ca, or --xds-insecure", address)
	}
	return o, false, nil
}

// privateListener is a Unix socket in a directory only this user can
// enter, for the embedded proxy when the public port demands credentials.
func privateListener() (net.Listener, string, func(), error) {
	dir, err := os.MkdirTemp("", "portico-xds-")
	if err != nil {
		return nil, "", nil, err
	}
	path := filepath.Join(dir, "xds.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	return lis, "unix://" + path, func() { lis.Close(); os.RemoveAll(dir) }, nil
}

// kubernetesXDS secures the xDS port in Kubernetes mode: TLS with a
// certificate from the controller's CA (kept in a Secret, created if
// absent), proxies authenticated by TokenReview and authorized by their
// pods. It returns the options, the serving-certificate renewer and the
// root-certificate publisher (to run on the elected replica).
func kubernetesXDS(ctx context.Context, log logr.Logger, cs kubernetes.Interface, namespace, domainSuffix string, x xdsSecurityConfig) (xds.ServeOptions, *ca.Serving, *ca.RootPublisher, error) {
	if x.insecure {
		log.Info("WARNING: serving xDS without authentication (--xds-insecure): any pod that reaches the port gets every proxy's configuration and private keys")
		return xds.ServeOptions{}, nil, nil, nil
	}
	store := &ca.SecretStore{Client: cs, Namespace: namespace, Name: x.caSecret, Log: log}
	names := splitList(x.dnsNames)
	if len(names) == 0 {
		svc := x.serviceName
		names = []string{svc + "." + namespace + ".svc", svc + "." + namespace + ".svc." + domainSuffix, svc + "." + namespace, svc}
	}
	serving := &ca.Serving{Load: store.Load, Names: names, Log: log}
	if err := serving.Start(ctx); err != nil {
		return xds.ServeOptions{}, nil, nil, fmt.Errorf("issuing the xDS serving certificate: %w", err)
	}
	pub := &ca.RootPublisher{Client: cs, Name: x.rootConfigMap, CA: store.Load, Log: log}
	o := xds.ServeOptions{
		TLS:           serving.TLSConfig(),
		Authenticator: auth.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), auth.TokenReviewOptions{Audiences: []string{x.audience}}),
		Authorizer:    auth.NewKubeAuthorizer(cs),
	}
	return o, serving, pub, nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
