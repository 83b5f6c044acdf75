package testenv

import "path/filepath"

// GatewayAPIChannel is the Gateway API CRD bundle tests install into the
// real kube-apiserver: experimental, because it is a superset of standard
// (every standard kind and field, plus the experimental ones such as
// HTTPRoute retry and sessionPersistence, and XBackendTrafficPolicy), so
// no field a test writes is pruned away by the API server, and because
// the upstream conformance suite runs against it. A standard-only
// cluster serves a subset of the same v1 schemas.
const GatewayAPIChannel = "experimental"

// CRDDirectories are the CRD directories of the repository at root that
// tests install: Portico's Istio CRDs and the Gateway API bundle.
func CRDDirectories(root string) []string {
	return []string{
		filepath.Join(root, "config", "crd"),
		filepath.Join(root, "config", "crd", "gateway-api", GatewayAPIChannel),
	}
}
