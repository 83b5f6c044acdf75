package gatewayapi

import (
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ProxySelectorAnnotation on a Gateway (or its GatewayClass) attaches the
// Gateway to existing proxies: "k=v,k=v" are the labels its synthetic
// Istio Gateways select, and nothing is provisioned for it.
const ProxySelectorAnnotation = "portico.io/proxy-selector"

// GatewayNameLabel is the label GEP-1762 gives the pods generated for a
// Gateway; a provisioned Gateway's synthetic Istio Gateways select it.
const GatewayNameLabel = "gateway.networking.k8s.io/gateway-name"

// GatewayNamespaceLabel goes with GatewayNameLabel on provisioned proxies:
// a Gateway's name is unique only within its namespace, and a selector
// matches proxies in every namespace, so two provisioned Gateways named
// alike in two namespaces would otherwise select each other's proxies.
const GatewayNamespaceLabel = "portico.io/gateway-namespace"

// ProxySelector says which proxies serve a Gateway API Gateway:
//
//   - the annotation portico.io/proxy-selector on the Gateway, else on its
//     GatewayClass: those labels, attached (provisioned false); an
//     annotation that does not parse ("k=v,k=v", every part with a key)
//     gives nil labels — attach to nothing, the conversion reports it —
//     rather than provisioning proxies nobody asked for;
//   - otherwise, with a defaultSelector (standalone mode, where the
//     controller passes the embedded proxy's labels): defaultSelector,
//     attached;
//   - otherwise (Kubernetes mode): {gateway.networking.k8s.io/gateway-name:
//     <name>, portico.io/gateway-namespace: <namespace>} and provisioned
//     true: the kube provider creates the proxies.
//
// class may be nil. The returned map is new.
func ProxySelector(gw *gwv1.Gateway, class *gwv1.GatewayClass, defaultSelector map[string]string) (labels map[string]string, provisioned bool) {
	if v, ok := gw.GetAnnotations()[ProxySelectorAnnotation]; ok {
		return parseSelector(v), false
	}
	if class != nil {
		if v, ok := class.GetAnnotations()[ProxySelectorAnnotation]; ok {
			return parseSelector(v), false
		}
	}
	if len(defaultSelector) > 0 {
		out := make(map[string]string, len(defaultSelector))
		for k, v := range defaultSelector {
			out[k] = v
		}
		return out, false
	}
	return map[string]string{GatewayNameLabel: gw.Name, GatewayNamespaceLabel: gw.Namespace}, true
}

// parseSelector reads "k=v,k=v" (spaces around parts allowed); nil when
// any part has no "=" or an empty key, or there is no part.
func parseSelector(s string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil
		}
		out[k] = v
	}
	return out
}
