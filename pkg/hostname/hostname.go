// Package hostname compares host name patterns the way Istio and Gateway
// API both do: "*" matches every name, "*.suffix" any name ending in
// ".suffix" (one or more labels), anything else only itself. The Istio
// binder (pkg/gateway) and the Gateway API conversion (pkg/gatewayapi)
// share it so the two can never disagree about which names meet.
//
// Patterns are compared as given: callers lower-case them first.
package hostname

import "strings"

// IsWildcard reports whether h is "*" or "*.suffix".
func IsWildcard(h string) bool { return strings.HasPrefix(h, "*") }

// Intersect returns the more specific of two patterns when they overlap
// (a name both match): "counter.example.com" and "*.example.com" meet in
// "counter.example.com", "*.a.example.com" and "*.example.com" in
// "*.a.example.com".
func Intersect(a, b string) (string, bool) {
	switch {
	case a == b:
		return a, true
	case a == "*":
		return b, true
	case b == "*":
		return a, true
	}
	aw, bw := IsWildcard(a), IsWildcard(b)
	switch {
	case aw && bw:
		if strings.HasSuffix(a[1:], b[1:]) {
			return a, true
		}
		if strings.HasSuffix(b[1:], a[1:]) {
			return b, true
		}
	case aw:
		if strings.HasSuffix(b, a[1:]) {
			return b, true
		}
	case bw:
		if strings.HasSuffix(a, b[1:]) {
			return a, true
		}
	}
	return "", false
}

// Covers reports whether pattern matches every name host matches.
func Covers(pattern, host string) bool {
	if pattern == "*" || pattern == host {
		return true
	}
	if !IsWildcard(pattern) {
		return false
	}
	if IsWildcard(host) {
		return strings.HasSuffix(host[1:], pattern[1:])
	}
	return strings.HasSuffix(host, pattern[1:])
}
