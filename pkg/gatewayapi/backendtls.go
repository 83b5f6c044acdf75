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
	targets  []policyTarget
	accepted condState
	resolved condState
	// invalidCA: the policy names no usable CA; its targets' connections
	// must fail rather than go out in plaintext or unverified.
	invalidCA bool
}

// policyTarget is one Service (or one named port of it) a policy applies
// to. port is 0 for the whole Service.
type policyTarget struct {
	host    string
	section string
	port    uint32
}

// NoValidCASuffix ends the name of the CA Secret a BackendTLSPolicy
// without a usable CA points its targets at: never made, so their
// connections fail closed; the binder knows it and does not report it.
const NoValidCASuffix = "~no-valid-ca"

func (t policyTarget) claimKey() string { return t.host + "/" + t.section }

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
	claimed := map[string]*policyState{} // host/section → the oldest valid policy for it
	byHost := map[string]*hostPolicies{}
	var hosts []string
	add := func(t policyTarget, ps *policyState, tls *networkingapi.ClientTLSSettings) {
		hp := byHost[t.host]
		if hp == nil {
			hp = &hostPolicies{ns: ps.obj.Namespace, created: ps.obj.CreationTimestamp}
			byHost[t.host] = hp
			hosts = append(hosts, t.host)
		}
		hp.entries = append(hp.entries, policyEntry{target: t, ps: ps, tls: tls})
	}
	var invalid []*policyState
	for _, p := range c.in.BackendTLSPolicies {
		ps := &policyState{obj: p, key: resource.KeyOf(p)}
		c.out.policies = append(c.out.policies, ps)
		for i, t := range p.Spec.TargetRefs {
			if string(t.Group) != "" || string(t.Kind) != "Service" {
				ps.accepted.fail(string(gwv1.PolicyReasonTargetNotFound), "spec.targetRefs[%d]: %s/%s is not supported; only core Services", i, t.Group, t.Kind)
				continue
			}
			tgt, ok := c.policyTarget(p.Namespace, t)
			if !ok {
				what := "Service %s/%s not found"
				if t.SectionName != nil {
					what = "Service %s/%s not found or without a port named " + string(*t.SectionName)
				}
				ps.accepted.fail(string(gwv1.PolicyReasonTargetNotFound), "spec.targetRefs[%d]: "+what, i, p.Namespace, t.Name)
				continue
			}
			ps.targets = append(ps.targets, tgt)
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
			ps.invalidCA = true
		}
		if len(ps.targets) == 0 {
			continue
		}
		if ps.accepted.bad {
			if ps.invalidCA {
				invalid = append(invalid, ps)
			}
			continue
		}
		// Only a usable policy claims its targets; of two for the same
		// Service (or the same named port), the older wins (resource
		// order). A policy for a named port and one for the whole
		// Service do not conflict: the port's is more specific.
		for _, t := range ps.targets {
			if winner, taken := claimed[t.claimKey()]; taken && winner != ps {
				what := "Service " + t.host
				if t.section != "" {
					what += " port " + t.section
				}
				ps.accepted.fail(string(gwv1.PolicyReasonConflicted), "BackendTLSPolicy %s/%s already applies to %s and is older",
					winner.obj.Namespace, winner.obj.Name, what)
			}
		}
		if ps.accepted.bad {
			continue
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
		for _, t := range ps.targets {
			claimed[t.claimKey()] = ps
			add(t, ps, tls)
		}
	}
	// A policy without a usable CA still applies where no valid policy
	// does: the spec wants those requests to fail (5xx), not to reach the
	// backend unverified. Its TLS names a CA Secret that is never made,
	// so the proxy cannot originate TLS and the connection fails.
	for _, ps := range invalid {
		for _, t := range ps.targets {
			if claimed[t.claimKey()] != nil {
				continue
			}
			claimed[t.claimKey()] = ps
			add(t, ps, &networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_SIMPLE,
				CredentialName: "backendtlspolicy~" + ps.obj.Name + NoValidCASuffix})
		}
	}
	for _, host := range hosts {
		c.emitPolicyRule(host, byHost[host])
	}
}

// hostPolicies are the policies that apply to one Service: at most one
// for the whole Service and one per named port.
type hostPolicies struct {
	ns      string
	created metav1.Time
	entries []policyEntry
}

type policyEntry struct {
	target policyTarget
	ps     *policyState
	tls    *networkingapi.ClientTLSSettings
}

// emitPolicyRule makes the one DestinationRule of a Service the policies
// apply to (the binder takes one DestinationRule per host): the whole
// Service's policy as its TLS, named ports' as port-level settings.
func (c *converter) emitPolicyRule(host string, hp *hostPolicies) {
	dr := &networking.DestinationRule{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "DestinationRule"},
		ObjectMeta: metav1.ObjectMeta{Namespace: hp.ns, Name: "backendtlspolicy~" + host,
			CreationTimestamp: hp.created},
	}
	dr.Spec.Host = host
	dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{}
	org := &origin{policyFields: map[string]*policyState{}}
	for _, e := range hp.entries {
		org.policies = appendPolicy(org.policies, e.ps)
		if e.target.port == 0 {
			dr.Spec.TrafficPolicy.Tls = e.tls
			org.policyFields["spec.trafficPolicy.tls"] = e.ps
			continue
		}
		org.policyFields[fmt.Sprintf("spec.trafficPolicy.portLevelSettings[%d]", len(dr.Spec.TrafficPolicy.PortLevelSettings))] = e.ps
		dr.Spec.TrafficPolicy.PortLevelSettings = append(dr.Spec.TrafficPolicy.PortLevelSettings, &networkingapi.TrafficPolicy_PortTrafficPolicy{
			Port: &networkingapi.PortSelector{Number: e.target.port}, Tls: e.tls})
	}
	// Port-level settings replace the whole TLS section for their port,
	// so a Service-wide policy still covers the other ports.
	contentID(dr)
	c.out.DestinationRules = append(c.out.DestinationRules, dr)
	c.out.synthetic[resource.KeyOf(dr)] = org
}

func appendPolicy(list []*policyState, ps *policyState) []*policyState {
	for _, x := range list {
		if x == ps {
			return list
		}
	}
	return append(list, ps)
}

// policyTarget resolves a targetRef to a Service's FQDN and, with a
// sectionName, the number of the port of that name.
func (c *converter) policyTarget(ns string, t gwv1.LocalPolicyTargetReferenceWithSectionName) (policyTarget, bool) {
	host := c.fqdn(string(t.Name), ns)
	tgt := policyTarget{host: host}
	svc := c.services[ns+"/"+string(t.Name)]
	se := c.seHosts[host]
	if svc == nil && se == nil {
		return tgt, false
	}
	if t.SectionName == nil || *t.SectionName == "" {
		return tgt, true
	}
	tgt.section = string(*t.SectionName)
	if svc != nil {
		for _, p := range svc.Spec.Ports {
			if p.Name == tgt.section {
				tgt.port = uint32(p.Port)
			}
		}
	} else {
		for _, p := range se.Spec.Ports {
			if p.Name == tgt.section {
				tgt.port = p.Number
			}
		}
	}
	return tgt, tgt.port != 0
}
