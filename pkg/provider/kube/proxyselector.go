package kube

import (
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

const (
	// AnnotationProxySelector on a Gateway API Gateway (or its
	// GatewayClass), "k=v,k=v", attaches it to existing proxies with
	// those labels instead of provisioning one.
	AnnotationProxySelector = "portico.io/proxy-selector"
	// LabelGatewayName is the label GEP-1762 gives a Gateway's
	// generated pods, and the selector of a provisioned Gateway.
	LabelGatewayName = "gateway.networking.k8s.io/gateway-name"
)

// proxySelector is the rule of the Gateway API contract
// (GWAPI-CONTRACT.md; gatewayapi.ProxySelector implements it for the
// binder): the selector annotation of the Gateway, else of its class,
// means attach; none means provisioned, selecting the Gateway's name
// label. A malformed annotation attaches to nothing (the binder reports
// it on the Gateway) rather than provisioning a proxy nobody asked for.
func proxySelector(gw *gwv1.Gateway, class *gwv1.GatewayClass) (map[string]string, bool) {
	if v, ok := gw.Annotations[AnnotationProxySelector]; ok {
		return parseSelector(v), false
	}
	if class != nil {
		if v, ok := class.Annotations[AnnotationProxySelector]; ok {
			return parseSelector(v), false
		}
	}
	return map[string]string{LabelGatewayName: gw.Name}, true
}

func parseSelector(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out
}

// selects reports whether selector (non-empty) matches labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
