package gateway

import (
	"fmt"
	"net"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	ptls "github.com/portico-gateway/portico/pkg/tls"
)

// serverKind is how a Gateway server handles connections.
type serverKind int

const (
	kindHTTP          serverKind = iota // plain-text HTTP, HTTP2, GRPC
	kindHTTPS                           // TLS terminated, then HTTP
	kindPassthrough                     // TLS passed through by SNI
	kindTLSTerminated                   // TLS terminated, then TCP
	kindTCP                             // raw TCP (TCP, MONGO, …)
)

func (k serverKind) String() string {
	return [...]string{"HTTP", "HTTPS", "TLS passthrough", "TLS", "TCP"}[k]
}

// family groups kinds that can share one port: HTTP servers merge into one
// route table, TLS-based servers are told apart by SNI, TCP servers merge.
func (k serverKind) family() string {
	switch k {
	case kindHTTP:
		return "HTTP"
	case kindTCP:
		return "TCP"
	}
	return "TLS"
}

// gwServer is one validated Gateway server.
type gwServer struct {
	gw       *networking.Gateway
	gwKey    resource.Key
	gwRef    ir.Ref
	index    int
	field    string
	port     uint32
	portName string
	protocol string
	bind     string
	kind     serverKind
	hosts    []serverHost

	httpsRedirect bool
	tls           *ir.DownstreamTLS
	secrets       []*ir.Secret
}

func (s *gwServer) describe() string {
	return fmt.Sprintf("server %d (port %d %s) of Gateway %s", s.index, s.port, s.protocol, s.gwKey.NamespacedName())
}

// sniNames are the names a TLS-based server claims on its port; "" is the
// catch-all chain used when a server accepts any host.
func (s *gwServer) sniNames() []string {
	var out []string
	seen := map[string]bool{}
	for _, h := range s.hosts {
		n := h.Host
		if n == "*" {
			n = ""
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

func gwMessage(level status.Level, code status.Code, reason, field, format string, args ...any) status.Message {
	return status.Message{Code: code, Level: level, Reason: reason, Field: field, Message: fmt.Sprintf(format, args...)}
}

// validateGateway checks every server of a Gateway on its own. Servers with
// errors are reported and left out; the rest are returned.
func (b *builder) validateGateway(gw *networking.Gateway) []*gwServer {
	key := resource.KeyOf(gw)
	report := b.report
	if len(gw.Spec.Servers) == 0 {
		report.Reject(key, gwMessage(status.Error, status.SchemaValidationError, status.ReasonInvalidSpec, "spec.servers", "a Gateway needs at least one server"))
		return nil
	}
	var out []*gwServer
	portNames := map[string]*gwServer{}
	for i, srv := range gw.Spec.Servers {
		s, msg := b.validateServer(gw, i, srv)
		if msg != nil {
			report.Add(key, *msg)
			continue
		}
		if s.portName != "" {
			if prev, dup := portNames[s.portName]; dup {
				report.Add(key, gwMessage(status.Error, status.ConflictingGateways, status.ReasonConflictingServer, s.field+".port.name",
					"port name %q is already used by server %d (port %d); port names in a Gateway must be unique (they name route configurations), so this server is ignored",
					s.portName, prev.index, prev.port))
				continue
			}
			portNames[s.portName] = s
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		report.Reject(key, gwMessage(status.Error, status.SchemaValidationError, status.ReasonInvalidSpec, "spec.servers", "no valid server"))
	}
	return out
}

func (b *builder) validateServer(gw *networking.Gateway, i int, srv *networkingapi.Server) (*gwServer, *status.Message) {
	field := fmt.Sprintf("spec.servers[%d]", i)
	bad := func(f, format string, args ...any) (*gwServer, *status.Message) {
		m := gwMessage(status.Error, status.SchemaValidationError, status.ReasonInvalidSpec, field+f, format+"; this server is ignored", args...)
		return nil, &m
	}
	if srv == nil || srv.Port == nil {
		return bad(".port", "port is required")
	}
	p := srv.Port
	if p.Number == 0 || p.Number > 65535 {
		return bad(".port.number", "invalid port number %d", p.Number)
	}
	s := &gwServer{
		gw: gw, gwKey: resource.KeyOf(gw), gwRef: refOf(resource.KindGateway, gw.Namespace, gw.Name),
		index: i, field: field, port: p.Number, portName: p.Name, protocol: strings.ToUpper(p.Protocol), bind: "0.0.0.0",
	}
	if srv.Bind != "" {
		if net.ParseIP(srv.Bind) == nil {
			return bad(".bind", "bind %q must be an IP address (unix sockets are not supported by Portico)", srv.Bind)
		}
		s.bind = srv.Bind
	}
	if len(srv.Hosts) == 0 {
		return bad(".hosts", "at least one host is required")
	}
	for j, h := range srv.Hosts {
		sh, err := parseServerHost(h, gw.Namespace)
		if err != nil {
			return bad(fmt.Sprintf(".hosts[%d]", j), "%v", err)
		}
		s.hosts = append(s.hosts, sh)
	}
	tls := srv.Tls
	switch s.protocol {
	case "HTTP", "HTTP2", "GRPC", "GRPC-WEB":
		s.kind = kindHTTP
		if tls != nil {
			if tls.HttpsRedirect {
				s.httpsRedirect = true
			}
			// The mode's zero value is PASSTHROUGH, so "unset" is zero.
			if tls.Mode != networkingapi.ServerTLSSettings_PASSTHROUGH || tls.ServerCertificate != "" || tls.PrivateKey != "" ||
				tls.CredentialName != "" || tls.CaCertificates != "" {
				m := gwMessage(status.Warning, status.SchemaWarning, status.ReasonInvalidSpec, field+".tls",
					"TLS settings other than httpsRedirect are ignored on a plain-text %s server", s.protocol)
				b.report.Add(s.gwKey, m)
			}
		}
		return s, nil
	case "TCP", "MONGO", "MYSQL", "REDIS":
		s.kind = kindTCP
		if tls != nil {
			return bad(".tls", "TLS settings are not allowed on a %s server (use protocol TLS)", s.protocol)
		}
		return s, nil
	case "HTTPS", "TLS":
	default:
		return bad(".port.protocol", "unknown protocol %q (one of HTTP, HTTPS, HTTP2, GRPC, TCP, TLS, MONGO)", p.Protocol)
	}
	if tls == nil {
		return bad(".tls", "a %s server needs tls settings", s.protocol)
	}
	if tls.HttpsRedirect {
		b.report.Add(s.gwKey, gwMessage(status.Warning, status.SchemaWarning, status.ReasonInvalidSpec, field+".tls.httpsRedirect", "httpsRedirect has no effect on a %s server", s.protocol))
	}
	hasCert := tls.ServerCertificate != "" || tls.PrivateKey != "" || tls.CredentialName != "" || len(tls.CredentialNames) > 0 || len(tls.TlsCertificates) > 0
	switch tls.Mode {
	case networkingapi.ServerTLSSettings_PASSTHROUGH:
		if hasCert || tls.CaCertificates != "" {
			return bad(".tls.mode", "mode is PASSTHROUGH (the default when mode is not set), which does not terminate TLS, yet certificate fields are set; set mode: SIMPLE to terminate TLS")
		}
		s.kind = kindPassthrough
		return s, nil
	case networkingapi.ServerTLSSettings_SIMPLE, networkingapi.ServerTLSSettings_MUTUAL, networkingapi.ServerTLSSettings_OPTIONAL_MUTUAL:
	case networkingapi.ServerTLSSettings_ISTIO_MUTUAL:
		return bad(".tls.mode", "ISTIO_MUTUAL needs Istio's mesh certificate authority, which Portico does not run; use MUTUAL with your own CA")
	case networkingapi.ServerTLSSettings_AUTO_PASSTHROUGH:
		return bad(".tls.mode", "AUTO_PASSTHROUGH is for multi-cluster mesh traffic, which Portico does not serve; use PASSTHROUGH")
	default:
		return bad(".tls.mode", "unsupported TLS mode %s", tls.Mode)
	}
	if s.protocol == "HTTPS" {
		s.kind = kindHTTPS
	} else {
		s.kind = kindTLSTerminated
	}
	dt, secrets, msg := b.downstreamTLS(s, tls)
	if msg != nil {
		return nil, msg
	}
	s.tls, s.secrets = dt, secrets
	return s, nil
}

var tlsVersions = map[networkingapi.ServerTLSSettings_TLSProtocol]string{
	networkingapi.ServerTLSSettings_TLSV1_0: "TLSv1_0",
	networkingapi.ServerTLSSettings_TLSV1_1: "TLSv1_1",
	networkingapi.ServerTLSSettings_TLSV1_2: "TLSv1_2",
	networkingapi.ServerTLSSettings_TLSV1_3: "TLSv1_3",
}

// downstreamTLS builds a server's TLS termination settings and the SDS
// secrets it needs, checking that Kubernetes Secrets it names exist.
func (b *builder) downstreamTLS(s *gwServer, tls *networkingapi.ServerTLSSettings) (*ir.DownstreamTLS, []*ir.Secret, *status.Message) {
	field := s.field + ".tls"
	bad := func(f, reason string, code status.Code, format string, args ...any) (*ir.DownstreamTLS, []*ir.Secret, *status.Message) {
		m := gwMessage(status.Error, code, reason, field+f, format+"; this server is ignored", args...)
		return nil, nil, &m
	}
	dt := &ir.DownstreamTLS{Mode: ir.TLSMode(tls.Mode.String()), SubjectAltNames: tls.SubjectAltNames, CipherSuites: tls.CipherSuites}
	if s.kind == kindHTTPS {
		dt.ALPN = []string{"h2", "http/1.1"}
	}
	if v, ok := tlsVersions[tls.MinProtocolVersion]; ok {
		dt.MinVersion = v
	}
	if v, ok := tlsVersions[tls.MaxProtocolVersion]; ok {
		dt.MaxVersion = v
	}
	if tls.MinProtocolVersion > 0 && tls.MaxProtocolVersion > 0 && tls.MinProtocolVersion > tls.MaxProtocolVersion {
		return bad(".minProtocolVersion", status.ReasonInvalidSpec, status.SchemaValidationError, "minProtocolVersion %s is above maxProtocolVersion %s", tls.MinProtocolVersion, tls.MaxProtocolVersion)
	}
	for i, c := range tls.CipherSuites {
		if !knownCipherSuite(c) {
			return bad(fmt.Sprintf(".cipherSuites[%d]", i), status.ReasonInvalidSpec, status.SchemaValidationError, "unknown cipher suite %q", c)
		}
	}
	mutual := tls.Mode == networkingapi.ServerTLSSettings_MUTUAL || tls.Mode == networkingapi.ServerTLSSettings_OPTIONAL_MUTUAL
	fileCert := tls.ServerCertificate != "" || tls.PrivateKey != ""
	creds := tls.CredentialNames
	if tls.CredentialName != "" {
		creds = append([]string{tls.CredentialName}, creds...)
	}
	if fileCert && len(creds) > 0 {
		return bad("", status.ReasonInvalidSpec, status.SchemaValidationError, "set either credentialName or serverCertificate/privateKey, not both")
	}
	var secrets []*ir.Secret
	switch {
	case len(creds) > 0:
		for _, cred := range creds {
			sec, msg := b.kubernetesCertSecret(s, cred)
			if msg != nil {
				return nil, nil, msg
			}
			secrets = append(secrets, sec)
			dt.CertificateSecrets = append(dt.CertificateSecrets, sec.Name)
		}
		if mutual {
			caCred := tls.CaCertCredentialName
			sec, msg := b.kubernetesCASecret(s, creds[0], caCred)
			if msg != nil {
				return nil, nil, msg
			}
			secrets = append(secrets, sec)
			dt.ValidationSecret = sec.Name
		}
		return dt, secrets, nil
	case fileCert:
		if tls.ServerCertificate == "" || tls.PrivateKey == "" {
			return bad("", status.ReasonInvalidSpec, status.SchemaValidationError, "serverCertificate and privateKey must be set together")
		}
		secrets = append(secrets, fileCertSecret(tls.ServerCertificate, tls.PrivateKey, s.gwRef))
	case len(tls.TlsCertificates) > 0:
		for j, c := range tls.TlsCertificates {
			if c.ServerCertificate == "" || c.PrivateKey == "" {
				return bad(fmt.Sprintf(".tlsCertificates[%d]", j), status.ReasonInvalidSpec, status.SchemaValidationError, "serverCertificate and privateKey must be set together")
			}
			secrets = append(secrets, fileCertSecret(c.ServerCertificate, c.PrivateKey, s.gwRef))
		}
	default:
		return bad("", status.ReasonInvalidSpec, status.SchemaValidationError, "%s needs a certificate: credentialName, or serverCertificate and privateKey", tls.Mode)
	}
	for _, sec := range secrets {
		dt.CertificateSecrets = append(dt.CertificateSecrets, sec.Name)
	}
	if mutual {
		if tls.CaCertificates == "" {
			return bad(".caCertificates", status.ReasonInvalidSpec, status.SchemaValidationError, "%s with file certificates needs caCertificates to verify clients", tls.Mode)
		}
		ca := fileRootSecret(tls.CaCertificates, s.gwRef)
		secrets = append(secrets, ca)
		dt.ValidationSecret = ca.Name
	}
	return dt, secrets, nil
}

func fileCertSecret(cert, key string, src ir.Ref) *ir.Secret {
	return &ir.Secret{
		Name:    ir.FileCertSecretName(cert, key),
		File:    &ir.FileSecret{CertificateChain: cert, PrivateKey: key, WatchedDirectory: dirOf(cert)},
		Sources: []ir.Ref{src},
	}
}

func fileRootSecret(ca string, src ir.Ref) *ir.Secret {
	return &ir.Secret{
		Name:    ir.FileRootSecretName(ca),
		File:    &ir.FileSecret{TrustedCA: ca, WatchedDirectory: dirOf(ca)},
		Sources: []ir.Ref{src},
	}
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "."
}

// Keys Istio accepts in a credentialName Secret.
var (
	certKeys = []string{"tls.crt", "cert"}
	keyKeys  = []string{"tls.key", "key"}
	caKeys   = []string{"ca.crt", "cacert"}
)

func firstKey(data map[string][]byte, keys []string) []byte {
	for _, k := range keys {
		if v, ok := data[k]; ok && len(v) > 0 {
			return v
		}
	}
	return nil
}

func (b *builder) kubernetesCertSecret(s *gwServer, name string) (*ir.Secret, *status.Message) {
	field := s.field + ".tls.credentialName"
	ns, sdsName := s.gw.Namespace, name
	if b.synthetic(s.gwKey) {
		// A Gateway API listener's certificateRef in another namespace,
		// which the conversion allowed by a ReferenceGrant: "ns/name".
		// Only synthetic Gateways may: Istio's credentialName is always
		// the Gateway's own namespace.
		if n, nm, ok := strings.Cut(name, "/"); ok {
			ns, name = n, nm
		}
	}
	sec := b.reg.secret(ns, name)
	if sec == nil {
		m := gwMessage(status.Error, status.ReferencedResourceNotFound, status.ReasonSecretNotFound, field,
			"Secret %s/%s not found; %s is ignored until it exists", ns, name, s.describe())
		return nil, &m
	}
	cert, key := firstKey(sec.Data, certKeys), firstKey(sec.Data, keyKeys)
	if cert == nil || key == nil {
		m := gwMessage(status.Error, status.InvalidGatewayCredential, status.ReasonInvalidCertificate, field,
			"Secret %s/%s has no certificate/key (want tls.crt and tls.key, or cert and key); %s is ignored", s.gw.Namespace, name, s.describe())
		return nil, &m
	}
	if msg := b.checkCertificate(s, name, cert, key); msg != nil {
		return nil, msg
	}
	out := &ir.Secret{
		Name:    ir.KubernetesSecretName(sdsName),
		Inline:  &ir.InlineSecret{CertificateChain: cert, PrivateKey: key},
		Sources: []ir.Ref{refOf(resource.KindSecret, sec.Namespace, sec.Name)},
	}
	if sec.Namespace != s.gw.Namespace {
		out.GrantedTo = s.gw.Namespace
	}
	return out, nil
}

// kubernetesCASecret finds the CA for client verification: the explicit
// caCertCredentialName, "<name>-cacert", or ca.crt in the credential itself.
func (b *builder) kubernetesCASecret(s *gwServer, cred, caCred string) (*ir.Secret, *status.Message) {
	field := s.field + ".tls"
	candidates := []string{cred + "-cacert", cred}
	sdsName := cred + "-cacert"
	if caCred != "" {
		// Named after the CA's own Secret: two servers sharing a
		// certificate may verify clients against different CAs (Gateway
		// API's per-port frontend validation does).
		candidates, sdsName = []string{caCred}, caCred+"-cacert"
	}
	for _, name := range candidates {
		sec := b.reg.secret(s.gw.Namespace, name)
		if sec == nil {
			continue
		}
		if ca := firstKey(sec.Data, caKeys); ca != nil {
			return &ir.Secret{
				Name:    ir.KubernetesSecretName(sdsName),
				Inline:  &ir.InlineSecret{TrustedCA: ca},
				Sources: []ir.Ref{refOf(resource.KindSecret, sec.Namespace, sec.Name)},
			}, nil
		}
	}
	m := gwMessage(status.Error, status.InvalidGatewayCredential, status.ReasonSecretNotFound, field,
		"%s needs a CA to verify clients: none of Secrets %s in %s has ca.crt or cacert; %s is ignored",
		s.gw.Spec.Servers[s.index].Tls.Mode, strings.Join(candidates, ", "), s.gw.Namespace, s.describe())
	return nil, &m
}

// knownCipherSuite accepts Envoy's (OpenSSL-style) names, which is what
// Istio passes through.
func knownCipherSuite(name string) bool { return ptls.KnownCipherSuite(name) }
