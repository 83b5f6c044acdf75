package gatewayapi

import (
	"fmt"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/resource"
)

type policyState struct {
	obj      *gwv1.BackendTLSPolicy
	key      resource.Key
	hosts    []string // target Services' FQDNs
	accepted condState
	resolved condState
}

// caKey is where a BackendTLSPolicy's CA bundle is read from: ConfigMap
// data (the spec) or, for the synthetic Secret the binder reads, the
// Secret key Istio uses.
const caKey = "ca.crt"

// convertPolicies turns BackendTLSPolicies into DestinationRules that
// originate TLS to their target Services. A CA bundle from ConfigMaps
// becomes a synthetic Secret the DestinationRule names as its
// credentialName (the binder reads CAs from Secrets; the proxy receives
// it as an SDS validation secret like any other).
func (c *converter) convertPolicies() {
	claimed := map[string]*policyState{} // host → the oldest policy for it
	for _, p := range c.in.BackendTLSPolicies {
		ps := &policyState{obj: p, key: resource.KeyOf(p)}
		c.out.policies = append(c.out.policies, ps)
		for i, t := range p.Spec.TargetRefs {
			if string(t.Group) != "" || string(t.Kind) != "Service" {
				ps.accepted.fail(string(gwv1.PolicyReasonTargetNotFound), "spec.targetRefs[%d]: %s/%s is not supported; only core Services", i, t.Group, t.Kind)
				continue
			}
			if c.services[p.Namespace+"/"+string(t.Name)] == nil && c.seHosts[c.fqdn(string(t.Name), p.Namespace)] == nil {
				ps.accepted.fail(string(gwv1.PolicyReasonTargetNotFound), "spec.targetRefs[%d]: Service %s/%s not found", i, p.Namespace, t.Name)
				continue
			}
			ps.hosts = appendUnique(ps.hosts, c.fqdn(string(t.Name), p.Namespace))
		}
		v := p.Spec.Validation
		var bundle []string
		for i, ref := range v.CACertificateRefs {
			field := fmt.Sprintf("spec.validation.caCertificateRefs[%d]", i)
			if string(ref.Group) != "" || string(ref.Kind) != "ConfigMap" {
				ps.resolved.fail(string(gwv1.BackendTLSPolicyReasonInvalidKind), "%s: %s/%s is not supported; only ConfigMaps", field, ref.Group, ref.Kind)
				continue
			}
			cm := c.configMaps[p.Namespace+"/"+string(ref.Name)]
			if cm == nil || strings.TrimSpace(cm.Data[caKey]) == "" {
				ps.resolved.fail(string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef), "%s: ConfigMap %s/%s not found or has no %s", field, p.Namespace, ref.Name, caKey)
				continue
			}
			if !strings.Contains(cm.Data[caKey], "-----BEGIN CERTIFICATE-----") {
				ps.resolved.fail(string(gwv1.BackendTLSPolicyReasonInvalidCACertificateRef), "%s: ConfigMap %s/%s: %s holds no PEM certificate", field, p.Namespace, ref.Name, caKey)
				continue
			}
			bundle = append(bundle, strings.TrimSpace(cm.Data[caKey]))
		}
		system := v.WellKnownCACertificates != nil && *v.WellKnownCACertificates == gwv1.WellKnownCACertificatesSystem
		if v.WellKnownCACertificates != nil && !system {
			ps.accepted.fail(string(gwv1.BackendTLSPolicyReasonNoValidCACertificate), "spec.validation.wellKnownCACertificates %q is not supported (System is)", *v.WellKnownCACertificates)
		}
		if len(bundle) == 0 && !system {
			ps.accepted.fail(string(gwv1.BackendTLSPolicyReasonNoValidCACertificate), "no valid CA certificate to verify the backend with")
		}
		if ps.accepted.bad || len(ps.hosts) == 0 {
			continue
		}
		// Only a usable policy claims its Services; of two, the older
		// wins (resource order).
		for _, host := range ps.hosts {
			if winner, taken := claimed[host]; taken && winner != ps {
				ps.accepted.fail(string(gwv1.PolicyReasonConflicted), "BackendTLSPolicy %s/%s already applies to Service %s and is older",
					winner.obj.Namespace, winner.obj.Name, host)
			}
		}
		if ps.accepted.bad {
			continue
		}
		for _, host := range ps.hosts {
			claimed[host] = ps
		}
		tls := &networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_SIMPLE, Sni: string(v.Hostname)}
		for _, san := range v.SubjectAltNames {
			switch san.Type {
			case gwv1.HostnameSubjectAltNameType:
				tls.SubjectAltNames = append(tls.SubjectAltNames, string(san.Hostname))
			case gwv1.URISubjectAltNameType:
				tls.SubjectAltNames = append(tls.SubjectAltNames, string(san.URI))
			}
		}
		if len(tls.SubjectAltNames) == 0 && v.Hostname != "" {
			// The spec: without subjectAltNames the certificate must
			// match the hostname.
			tls.SubjectAltNames = []string{string(v.Hostname)}
		}
		if len(bundle) > 0 {
			sec := &corev1.Secret{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
				ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: "backendtlspolicy~" + p.Name, CreationTimestamp: p.CreationTimestamp},
				Data:       map[string][]byte{caKey: []byte(strings.Join(bundle, "\n") + "\n")},
			}
			contentID(sec)
			c.out.Secrets = append(c.out.Secrets, sec)
			tls.CredentialName = sec.Name
		}
		for _, host := range ps.hosts {
			dr := &networking.DestinationRule{
				TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "DestinationRule"},
				ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: "backendtlspolicy~" + p.Name + "~" + strings.SplitN(host, ".", 2)[0],
					CreationTimestamp: p.CreationTimestamp},
			}
			dr.Spec.Host = host
			dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{Tls: tls}
			contentID(dr)
			c.out.DestinationRules = append(c.out.DestinationRules, dr)
			c.out.synthetic[resource.KeyOf(dr)] = &origin{policy: ps}
		}
	}
}
