package gatewayapi

import (
	"fmt"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/resource"
)

// frontendValidation is the client certificate validation that applies
// to an HTTPS listener: spec.tls.frontend.perPort for its port, else
// spec.tls.frontend.default; nil when clients are not verified. field
// names where it came from, for status messages.
func frontendValidation(gw *gwv1.Gateway, l *gwv1.Listener) (v *gwv1.FrontendTLSValidation, field string) {
	if string(l.Protocol) != "HTTPS" || gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return nil, ""
	}
	f := gw.Spec.TLS.Frontend
	for i, pp := range f.PerPort {
		if pp.Port == l.Port {
			return pp.TLS.Validation, fmt.Sprintf("spec.tls.frontend.perPort[%d].tls.validation", i)
		}
	}
	return f.Default.Validation, "spec.tls.frontend.default.validation"
}

// checkFrontendValidation resolves the CA bundle that verifies an HTTPS
// listener's clients and reports on the listener what the spec asks:
// ResolvedRefs False with InvalidCACertificateKind (not a core
// ConfigMap), RefNotPermitted (another namespace without a
// ReferenceGrant) or InvalidCACertificateRef (missing, no ca.crt, no PEM
// certificate); Accepted False with NoValidCACertificate when no
// reference is usable. It returns the PEM bundle of the usable ones.
func (c *converter) checkFrontendValidation(ls *listenerState) string {
	gw := ls.gw.obj
	v, field := frontendValidation(gw, ls.l)
	if v == nil {
		return ""
	}
	var bundle []string
	for i, ref := range v.CACertificateRefs {
		rf := fmt.Sprintf("%s.caCertificateRefs[%d]", field, i)
		if string(ref.Group) != "" || string(ref.Kind) != "ConfigMap" {
			ls.resolved.fail(string(gwv1.ListenerReasonInvalidCACertificateKind), "%s: %s/%s is not supported; only core ConfigMaps are", rf, ref.Group, ref.Kind)
			continue
		}
		ns := string(deref(ref.Namespace, gwv1.Namespace(gw.Namespace)))
		if !c.granted(resource.GatewayAPIGroup, resource.KindGateway, gw.Namespace, "", "ConfigMap", ns, string(ref.Name)) {
			ls.resolved.fail(string(gwv1.ListenerReasonRefNotPermitted), "%s: ConfigMap %s/%s is in another namespace and no ReferenceGrant there allows Gateways in %s to use it",
				rf, ns, ref.Name, gw.Namespace)
			continue
		}
		cm := c.configMaps[ns+"/"+string(ref.Name)]
		switch {
		case cm == nil:
			ls.resolved.fail(string(gwv1.ListenerReasonInvalidCACertificateRef), "%s: ConfigMap %s/%s not found", rf, ns, ref.Name)
			continue
		case strings.TrimSpace(cm.Data[caKey]) == "":
			ls.resolved.fail(string(gwv1.ListenerReasonInvalidCACertificateRef), "%s: ConfigMap %s/%s has no %s", rf, ns, ref.Name, caKey)
			continue
		case !strings.Contains(cm.Data[caKey], "-----BEGIN CERTIFICATE-----"):
			ls.resolved.fail(string(gwv1.ListenerReasonInvalidCACertificateRef), "%s: ConfigMap %s/%s: %s holds no PEM certificate", rf, ns, ref.Name, caKey)
			continue
		}
		bundle = append(bundle, strings.TrimSpace(cm.Data[caKey]))
	}
	if len(bundle) == 0 {
		ls.accepted.fail(string(gwv1.ListenerReasonNoValidCACertificate), "%s: no valid CA certificate to verify clients with; the listener is not served", field)
		return ""
	}
	return strings.Join(bundle, "\n") + "\n"
}

// clientValidation turns an HTTPS listener's server TLS into Istio's
// MUTUAL (AllowValidOnly) or OPTIONAL_MUTUAL (AllowInsecureFallback)
// with the CA bundle in a synthetic Secret the binder reads as the
// server's caCertCredentialName.
func (c *converter) clientValidation(ls *listenerState, tls *networkingapi.ServerTLSSettings) {
	v, _ := frontendValidation(ls.gw.obj, ls.l)
	if v == nil {
		return
	}
	probe := &listenerState{gw: ls.gw, l: ls.l}
	bundle := c.checkFrontendValidation(probe)
	if bundle == "" {
		return
	}
	gw := ls.gw.obj
	sec := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: fmt.Sprintf("frontendtls~%s~%s", gw.Name, ls.name()),
			CreationTimestamp: gw.CreationTimestamp},
		Data: map[string][]byte{caKey: []byte(bundle)},
	}
	contentID(sec)
	c.out.Secrets = append(c.out.Secrets, sec)
	tls.Mode = networkingapi.ServerTLSSettings_MUTUAL
	if v.Mode == gwv1.AllowInsecureFallback {
		tls.Mode = networkingapi.ServerTLSSettings_OPTIONAL_MUTUAL
	}
	tls.CaCertCredentialName = sec.Name
}

// insecureFrontendValidation reports whether the Gateway's default or a
// per-port client validation is AllowInsecureFallback: the spec's
// InsecureFrontendValidationMode condition says so on the Gateway.
func insecureFrontendValidation(gw *gwv1.Gateway) bool {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return false
	}
	f := gw.Spec.TLS.Frontend
	if v := f.Default.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
		return true
	}
	for _, pp := range f.PerPort {
		if v := pp.TLS.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
			return true
		}
	}
	return false
}
