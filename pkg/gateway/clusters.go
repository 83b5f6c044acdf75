package gateway

//lint:file-ignore SA1019 Istio still accepts its deprecated fields (minimumRingSize, LEAST_CONN, consecutiveErrors, mirrorPercent, percent, allowOrigin), and so must a gateway that takes the same YAML.

import (
	"fmt"
	"strings"
	"time"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portico-gateway/portico/pkg/gatewayapi"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// clusterKey identifies a backend: a service port and optional subset. It
// is the cluster's identity, so editing a route never renames a cluster
// another route still uses.
type clusterKey struct {
	host   string
	port   uint32
	subset string
}

func (k clusterKey) name() string { return ir.ClusterName(k.port, k.subset, k.host) }

// resolveDestination expands and checks a destination, reporting what is
// missing. It always returns a key: a route to a missing backend still
// exists and answers 503, rather than vanishing silently.
func (b *builder) resolveDestination(errs vsErrors, field string, info *vsInfo, d *networkingapi.Destination) clusterKey {
	host := fqdn(d.Host, info.obj.Namespace, b.opts.DomainSuffix)
	ck := clusterKey{host: host, subset: d.Subset}
	if d.Port != nil {
		ck.port = d.Port.Number
	}
	svc := b.reg.lookup(host)
	if svc == nil && host == gatewayapi.InvalidBackendHost && b.synthetic(info.key) {
		// The conversion's stand-in for invalid backendRefs, already
		// reported on the route: a cluster without endpoints.
		return ck
	}
	if svc == nil {
		errs.add(status.Error, status.ReferencedResourceNotFound, status.ReasonDestinationNotFound, field+".host",
			"destination host %q matches no Service or ServiceEntry; requests routed to it get 503", host)
		return ck
	}
	switch {
	case ck.port == 0 && len(svc.Ports) == 1:
		ck.port = svc.Ports[0].Number
	case ck.port == 0:
		errs.add(status.Error, status.DestinationPortSelectorRequired, status.ReasonPortRequired, field+".port",
			"destination host %q has several ports (%s), so destination.port is required; using port %d", host, svc.portList(), svc.Ports[0].Number)
		ck.port = svc.Ports[0].Number
	default:
		if _, ok := svc.port(ck.port); !ok {
			errs.add(status.Error, status.ReferencedResourceNotFound, status.ReasonDestinationNotFound, field+".port",
				"destination host %q has no port %d (ports: %s); requests routed to it get 503", host, ck.port, svc.portList())
		}
	}
	if ck.subset != "" {
		dr := b.reg.destinationRule(host)
		if dr == nil || findSubset(dr, ck.subset) == nil {
			where := "no DestinationRule applies to this host"
			if dr != nil {
				where = fmt.Sprintf("DestinationRule %s/%s does not define it", dr.Namespace, dr.Name)
			}
			errs.add(status.Error, status.ReferencedResourceNotFound, status.ReasonSubsetNotFound, field+".subset",
				"subset %q of host %q not found: %s; requests routed to it get 503", ck.subset, host, where)
		}
	}
	return ck
}

func findSubset(dr *networking.DestinationRule, name string) *networkingapi.Subset {
	for _, s := range dr.Spec.Subsets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// policy is the effective traffic policy of one cluster.
type policy struct {
	lb      *networkingapi.LoadBalancerSettings
	pool    *networkingapi.ConnectionPoolSettings
	outlier *networkingapi.OutlierDetection
	tls     *networkingapi.ClientTLSSettings
}

// mergePolicy resolves Istio's layering: the rule's top-level policy, its
// port-level settings for the port, then the subset's policy and the
// subset's port-level settings, each replacing whole sections.
func mergePolicy(dr *networking.DestinationRule, port uint32, subset string) policy {
	var p policy
	apply := func(tp *networkingapi.TrafficPolicy) {
		if tp == nil {
			return
		}
		if tp.LoadBalancer != nil {
			p.lb = tp.LoadBalancer
		}
		if tp.ConnectionPool != nil {
			p.pool = tp.ConnectionPool
		}
		if tp.OutlierDetection != nil {
			p.outlier = tp.OutlierDetection
		}
		if tp.Tls != nil {
			p.tls = tp.Tls
		}
		for _, pl := range tp.PortLevelSettings {
			if pl.Port == nil || pl.Port.Number != port {
				continue
			}
			if pl.LoadBalancer != nil {
				p.lb = pl.LoadBalancer
			}
			if pl.ConnectionPool != nil {
				p.pool = pl.ConnectionPool
			}
			if pl.OutlierDetection != nil {
				p.outlier = pl.OutlierDetection
			}
			if pl.Tls != nil {
				p.tls = pl.Tls
			}
		}
	}
	if dr == nil {
		return p
	}
	apply(dr.Spec.TrafficPolicy)
	if subset != "" {
		if s := findSubset(dr, subset); s != nil {
			apply(s.TrafficPolicy)
		}
	}
	return p
}

// hashPolicy derives a route's consistent-hash key from the DestinationRule
// of its first destination, as Istio does.
func (b *builder) hashPolicy(ck clusterKey) []ir.HashPolicy {
	dr := b.reg.destinationRule(ck.host)
	p := mergePolicy(dr, ck.port, ck.subset)
	ch := p.lb.GetConsistentHash()
	if ch == nil {
		return nil
	}
	switch k := ch.HashKey.(type) {
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		return []ir.HashPolicy{{Header: k.HttpHeaderName}}
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		c := &ir.HashCookie{Name: k.HttpCookie.Name, Path: k.HttpCookie.Path}
		if k.HttpCookie.Ttl != nil {
			c.TTL = &metav1.Duration{Duration: k.HttpCookie.Ttl.AsDuration()}
		}
		return []ir.HashPolicy{{Cookie: c}}
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		return []ir.HashPolicy{{SourceIP: k.UseSourceIp}}
	case *networkingapi.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		return []ir.HashPolicy{{QueryParam: k.HttpQueryParameterName}}
	}
	return nil
}

// Istio's defaults for clusters.
const (
	defaultConnectTimeout = 10 * time.Second
)

// buildCluster turns a backend key into a cluster with endpoints and its
// effective DestinationRule policy.
func (b *builder) buildCluster(ck clusterKey) *ir.Cluster {
	c := &ir.Cluster{
		Name: ck.name(), Service: ck.host, Port: ck.port, Subset: ck.subset,
		Discovery:      ir.DiscoveryEDS,
		ConnectTimeout: metav1.Duration{Duration: defaultConnectTimeout},
	}
	svc := b.reg.lookup(ck.host)
	dr := b.reg.destinationRule(ck.host)
	var selector map[string]string
	subsetOK := ck.subset == ""
	if dr != nil {
		c.Sources = append(c.Sources, refOf(resource.KindDestinationRule, dr.Namespace, dr.Name))
		if s := findSubset(dr, ck.subset); s != nil {
			selector, subsetOK = s.Labels, true
		}
	}
	if svc != nil {
		c.Sources = append([]ir.Ref{svc.Source}, c.Sources...)
		c.Discovery = svc.Discovery
		if sp, ok := svc.port(ck.port); ok {
			switch sp.Protocol {
			case "HTTP2", "GRPC":
				c.Protocol = "HTTP2"
			case "TCP", "TLS", "HTTPS":
				c.Protocol = "TCP"
			default:
				c.Protocol = "HTTP"
			}
			if subsetOK {
				c.Endpoints = svc.endpointsFor(sp, selector)
			}
		}
	}
	p := mergePolicy(dr, ck.port, ck.subset)
	b.applyPolicy(c, p, dr)
	return c
}

func (b *builder) applyPolicy(c *ir.Cluster, p policy, dr *networking.DestinationRule) {
	if lb := p.lb; lb != nil {
		switch {
		case lb.GetConsistentHash() != nil:
			ch := lb.GetConsistentHash()
			c.LoadBalancer = &ir.LoadBalancer{Policy: "RING_HASH", RingSize: 1024}
			if ch.MinimumRingSize > 0 {
				c.LoadBalancer.RingSize = ch.MinimumRingSize
			}
			switch alg := ch.HashAlgorithm.(type) {
			case *networkingapi.LoadBalancerSettings_ConsistentHashLB_RingHash_:
				if alg.RingHash.MinimumRingSize > 0 {
					c.LoadBalancer.RingSize = alg.RingHash.MinimumRingSize
				}
			case *networkingapi.LoadBalancerSettings_ConsistentHashLB_Maglev:
				c.LoadBalancer = &ir.LoadBalancer{Policy: "MAGLEV", RingSize: 65537}
				if alg.Maglev.TableSize > 0 {
					c.LoadBalancer.RingSize = alg.Maglev.TableSize
				}
			}
		default:
			switch lb.GetSimple() {
			case networkingapi.LoadBalancerSettings_LEAST_REQUEST, networkingapi.LoadBalancerSettings_LEAST_CONN:
				c.LoadBalancer = &ir.LoadBalancer{Policy: "LEAST_REQUEST"}
			case networkingapi.LoadBalancerSettings_RANDOM:
				c.LoadBalancer = &ir.LoadBalancer{Policy: "RANDOM"}
			case networkingapi.LoadBalancerSettings_ROUND_ROBIN:
				c.LoadBalancer = &ir.LoadBalancer{Policy: "ROUND_ROBIN"}
			case networkingapi.LoadBalancerSettings_PASSTHROUGH:
				c.LoadBalancer = &ir.LoadBalancer{Policy: "ROUND_ROBIN"}
				if dr != nil {
					b.report.Add(resource.KeyOf(dr), status.Message{Code: status.UnsupportedAtGateway, Level: status.Warning, Reason: status.ReasonUnsupported,
						Field: "spec.trafficPolicy.loadBalancer.simple", Message: "PASSTHROUGH sends traffic to the original destination, which at a gateway is the gateway itself; ROUND_ROBIN is used instead"})
				}
			}
		}
	}
	if pool := p.pool; pool != nil {
		l := &ir.ConnectionLimits{}
		if t := pool.Tcp; t != nil {
			l.MaxConnections = uint32(max(t.MaxConnections, 0))
			if t.ConnectTimeout != nil {
				c.ConnectTimeout = metav1.Duration{Duration: t.ConnectTimeout.AsDuration()}
			}
			if t.MaxConnectionDuration != nil {
				l.MaxConnectionDuration = &metav1.Duration{Duration: t.MaxConnectionDuration.AsDuration()}
			}
			if ka := t.TcpKeepalive; ka != nil {
				k := &ir.TCPKeepalive{Probes: ka.Probes}
				if ka.Time != nil {
					k.Time = &metav1.Duration{Duration: ka.Time.AsDuration()}
				}
				if ka.Interval != nil {
					k.Interval = &metav1.Duration{Duration: ka.Interval.AsDuration()}
				}
				c.TCPKeepalive = k
			}
		}
		if h := pool.Http; h != nil {
			l.MaxPendingRequests = uint32(max(h.Http1MaxPendingRequests, 0))
			l.MaxRequests = uint32(max(h.Http2MaxRequests, 0))
			l.MaxRequestsPerConnection = uint32(max(h.MaxRequestsPerConnection, 0))
			l.MaxRetries = uint32(max(h.MaxRetries, 0))
			if h.IdleTimeout != nil {
				l.IdleTimeout = &metav1.Duration{Duration: h.IdleTimeout.AsDuration()}
			}
			if h.H2UpgradePolicy == networkingapi.ConnectionPoolSettings_HTTPSettings_UPGRADE && c.Protocol == "HTTP" {
				c.Protocol = "HTTP2"
			}
		}
		if *l != (ir.ConnectionLimits{}) {
			c.Limits = l
		}
	}
	if od := p.outlier; od != nil {
		o := &ir.OutlierDetection{MaxEjectionPercent: 10}
		if od.Consecutive_5XxErrors != nil {
			v := od.Consecutive_5XxErrors.Value
			o.Consecutive5xx = &v
		}
		if od.ConsecutiveGatewayErrors != nil {
			v := od.ConsecutiveGatewayErrors.Value
			o.ConsecutiveGateway = &v
		}
		if od.ConsecutiveErrors > 0 && od.Consecutive_5XxErrors == nil && od.ConsecutiveGatewayErrors == nil {
			// Deprecated field: Istio maps it to gateway errors.
			v := uint32(od.ConsecutiveErrors)
			o.ConsecutiveGateway = &v
		}
		if od.ConsecutiveLocalOriginFailures != nil {
			v := od.ConsecutiveLocalOriginFailures.Value
			o.ConsecutiveLocal = &v
		}
		o.SplitExternalLocalErr = od.SplitExternalLocalOriginErrors
		if od.Interval != nil {
			o.Interval = &metav1.Duration{Duration: od.Interval.AsDuration()}
		}
		if od.BaseEjectionTime != nil {
			o.BaseEjectionTime = &metav1.Duration{Duration: od.BaseEjectionTime.AsDuration()}
		}
		if od.MaxEjectionPercent > 0 {
			o.MaxEjectionPercent = uint32(min(od.MaxEjectionPercent, 100))
		}
		o.MinHealthPercent = uint32(max(od.MinHealthPercent, 0))
		c.Outlier = o
	}
	if t := p.tls; t != nil {
		b.upstreamTLS(c, t, dr)
	}
}

// upstreamTLS configures TLS origination from a DestinationRule.
func (b *builder) upstreamTLS(c *ir.Cluster, t *networkingapi.ClientTLSSettings, dr *networking.DestinationRule) {
	var drKey resource.Key
	var src ir.Ref
	if dr != nil {
		drKey = resource.KeyOf(dr)
		src = refOf(resource.KindDestinationRule, dr.Namespace, dr.Name)
	}
	warn := func(level status.Level, code status.Code, reason, field, format string, args ...any) {
		if dr != nil {
			b.report.Add(drKey, status.Message{Code: code, Level: level, Reason: reason, Field: field, Message: fmt.Sprintf(format, args...)})
		}
	}
	switch t.Mode {
	case networkingapi.ClientTLSSettings_DISABLE:
		return
	case networkingapi.ClientTLSSettings_ISTIO_MUTUAL:
		warn(status.Warning, status.UnsupportedAtGateway, status.ReasonUnsupported, "spec.trafficPolicy.tls.mode",
			"ISTIO_MUTUAL needs Istio's mesh certificates, which Portico does not have; traffic to %s is sent in plain text", c.Service)
		return
	}
	u := &ir.UpstreamTLS{Mode: ir.TLSMode(t.Mode.String()), SNI: t.Sni, SubjectAltNames: t.SubjectAltNames}
	if t.InsecureSkipVerify != nil {
		u.InsecureSkipVerify = t.InsecureSkipVerify.Value
	}
	if c.Protocol == "HTTP2" {
		u.ALPN = []string{"h2"}
	}
	switch {
	case t.CredentialName != "":
		ns := ""
		if dr != nil {
			ns = dr.Namespace
		}
		sec := b.reg.secret(ns, t.CredentialName)
		if sec == nil {
			// The conversion's fail-closed stand-in for a BackendTLSPolicy
			// without a usable CA is reported on the policy already.
			if !(dr != nil && b.synthetic(drKey) && strings.HasSuffix(t.CredentialName, gatewayapi.NoValidCASuffix)) {
				warn(status.Error, status.ReferencedResourceNotFound, status.ReasonSecretNotFound, "spec.trafficPolicy.tls.credentialName",
					"Secret %s/%s not found; connections to %s fail until it exists", ns, t.CredentialName, c.Service)
			}
			// Name the secret the mode needs anyway, so the cluster fails
			// closed now and starts working as soon as the Secret exists.
			if t.Mode == networkingapi.ClientTLSSettings_MUTUAL {
				u.CertificateSecret = ir.KubernetesSecretName(t.CredentialName)
			} else {
				u.ValidationSecret = ir.KubernetesSecretName(t.CredentialName + "-cacert")
			}
			c.TLS = u
			return
		}
		if t.Mode == networkingapi.ClientTLSSettings_MUTUAL {
			cert, key := firstKey(sec.Data, certKeys), firstKey(sec.Data, keyKeys)
			if cert != nil && key != nil {
				u.CertificateSecret = ir.KubernetesSecretName(t.CredentialName)
				b.addSecret(&ir.Secret{Name: u.CertificateSecret, Inline: &ir.InlineSecret{CertificateChain: cert, PrivateKey: key},
					Sources: []ir.Ref{refOf(resource.KindSecret, ns, t.CredentialName)}})
			} else {
				warn(status.Error, status.InvalidGatewayCredential, status.ReasonInvalidCertificate, "spec.trafficPolicy.tls.credentialName",
					"Secret %s/%s has no client certificate/key (tls.crt, tls.key)", ns, t.CredentialName)
			}
		}
		if ca := firstKey(sec.Data, caKeys); ca != nil {
			u.ValidationSecret = ir.KubernetesSecretName(t.CredentialName + "-cacert")
			b.addSecret(&ir.Secret{Name: u.ValidationSecret, Inline: &ir.InlineSecret{TrustedCA: ca},
				Sources: []ir.Ref{refOf(resource.KindSecret, ns, t.CredentialName)}})
		}
	default:
		if t.Mode == networkingapi.ClientTLSSettings_MUTUAL {
			if t.ClientCertificate == "" || t.PrivateKey == "" {
				warn(status.Error, status.SchemaValidationError, status.ReasonInvalidSpec, "spec.trafficPolicy.tls",
					"MUTUAL needs clientCertificate and privateKey (or credentialName)")
			} else {
				s := fileCertSecret(t.ClientCertificate, t.PrivateKey, src)
				u.CertificateSecret = s.Name
				b.addSecret(s)
			}
		}
		if t.CaCertificates != "" {
			s := fileRootSecret(t.CaCertificates, src)
			u.ValidationSecret = s.Name
			b.addSecret(s)
		}
	}
	if u.ValidationSecret == "" && !u.InsecureSkipVerify {
		warn(status.Warning, status.Code{ID: "IST0128", Name: "NoServerCertificateVerificationDestinationLevel"}, status.ReasonInvalidSpec, "spec.trafficPolicy.tls.caCertificates",
			"no CA certificates for %s: the upstream's certificate is verified against the proxy's system roots", c.Service)
	}
	c.TLS = u
}

// addSecret records a secret a cluster needs; secrets are per class.
func (b *builder) addSecret(s *ir.Secret) {
	if b.addedSecrets != nil {
		*b.addedSecrets = append(*b.addedSecrets, s)
	}
	if b.cur == nil {
		return
	}
	if old, ok := b.cur.secrets[s.Name]; ok {
		old.Sources = appendRef(old.Sources, s.Sources...)
		return
	}
	b.cur.secrets[s.Name] = cloneSecret(s)
}

func cloneSecret(s *ir.Secret) *ir.Secret {
	c := *s
	c.Sources = append([]ir.Ref(nil), s.Sources...)
	return &c
}

func appendRef(list []ir.Ref, refs ...ir.Ref) []ir.Ref {
outer:
	for _, r := range refs {
		for _, x := range list {
			if x == r {
				continue outer
			}
		}
		list = append(list, r)
	}
	return list
}
