package kube

import (
	"github.com/portico-gateway/portico/pkg/gatewayapi"
)

const (
	// AnnotationProxySelector on a Gateway API Gateway (or its
	// GatewayClass), "k=v,k=v", attaches it to existing proxies with
	// those labels instead of provisioning one.
	AnnotationProxySelector = gatewayapi.ProxySelectorAnnotation
	// LabelGatewayName is the label GEP-1762 gives a Gateway's
	// generated pods, and the selector of a provisioned Gateway.
	LabelGatewayName = gatewayapi.GatewayNameLabel
)

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
