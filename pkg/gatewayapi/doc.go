// Package gatewayapi converts Kubernetes Gateway API objects
// (gateway.networking.k8s.io: GatewayClass, Gateway, HTTPRoute,
// GRPCRoute, TLSRoute, TCPRoute, ReferenceGrant, BackendTLSPolicy) into
// the Istio kinds the binder (pkg/gateway) already reads — one Istio
// Gateway per listener, VirtualServices merged per host in Gateway API
// precedence order, DestinationRules for BackendTLSPolicies — and computes
// the Gateway API statuses, as Istio itself does. The binder then binds
// the synthetic objects with the rest and hands its findings on them back
// (Output.Finish), so Istio and Gateway API Gateways sharing proxies are
// checked against each other by the same code.
package gatewayapi
