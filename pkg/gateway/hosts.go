package gateway

import (
	"fmt"
	"net"
	"strings"

	"github.com/portico-gateway/portico/pkg/hostname"
)

// Host names follow Istio's rules (package hostname): "*" matches
// everything, "*.suffix" matches any name ending in ".suffix", everything
// else is exact. Hosts are compared case-insensitively.

func isWildcard(h string) bool { return hostname.IsWildcard(h) }

// intersectHosts returns the more specific of two host patterns when they
// overlap: a VirtualService for "counter.example.com" bound to a server for
// "*.example.com" serves "counter.example.com", and the other way round.
func intersectHosts(a, b string) (string, bool) { return hostname.Intersect(a, b) }

// hostCovers reports whether pattern matches every name host matches.
func hostCovers(pattern, host string) bool { return hostname.Covers(pattern, host) }

// serverHost is a Gateway server host with its namespace scope.
type serverHost struct {
	// Namespace is "*" when any VirtualService may bind.
	Namespace string
	Host      string
}

// parseServerHost splits Istio's "ns/host" forms: "host" and "*/host" allow
// every namespace, "./host" the Gateway's own, "ns/host" only ns.
func parseServerHost(raw, gwNamespace string) (serverHost, error) {
	ns, host := "*", raw
	if i := strings.IndexByte(raw, '/'); i >= 0 {
		ns, host = raw[:i], raw[i+1:]
		switch ns {
		case ".":
			ns = gwNamespace
		case "":
			return serverHost{}, fmt.Errorf("host %q has an empty namespace", raw)
		}
	}
	host = strings.ToLower(host)
	if err := validateHost(host, true); err != nil {
		return serverHost{}, err
	}
	return serverHost{Namespace: ns, Host: host}, nil
}

// validateHost checks a DNS name with an optional leading wildcard label.
func validateHost(h string, allowWildcard bool) error {
	if h == "" {
		return fmt.Errorf("host must not be empty")
	}
	if h == "*" {
		if !allowWildcard {
			return fmt.Errorf("host %q: wildcard not allowed here", h)
		}
		return nil
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	name := h
	if strings.HasPrefix(h, "*.") {
		if !allowWildcard {
			return fmt.Errorf("host %q: wildcard not allowed here", h)
		}
		name = h[2:]
	} else if strings.Contains(h, "*") {
		return fmt.Errorf("host %q: a wildcard must be the whole first label (\"*.example.com\")", h)
	}
	if len(name) > 253 {
		return fmt.Errorf("host %q is longer than 253 characters", h)
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) == 0 || len(label) > 63 {
			return fmt.Errorf("host %q: invalid DNS label %q", h, label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= 'A' && c <= 'Z'
			if !ok {
				return fmt.Errorf("host %q: invalid character %q", h, c)
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host %q: label %q must not start or end with '-'", h, label)
		}
	}
	return nil
}

// fqdn expands a short name the way Istio does: a name without dots is a
// Kubernetes service in the given namespace.
func fqdn(host, namespace, domainSuffix string) string {
	host = strings.ToLower(host)
	if host == "*" || strings.Contains(host, ".") {
		return host
	}
	return host + "." + namespace + ".svc." + domainSuffix
}

// gatewayRef parses how a VirtualService names a Gateway: "name",
// "ns/name" or "name.ns.svc.cluster.local" (and "name.ns"). It returns the
// Gateway's namespace/name, or "mesh".
func gatewayRef(raw, vsNamespace string) string {
	if raw == "mesh" {
		return raw
	}
	if i := strings.IndexByte(raw, '/'); i >= 0 {
		return raw[:i] + "/" + raw[i+1:]
	}
	if i := strings.IndexByte(raw, '.'); i >= 0 {
		rest := raw[i+1:]
		ns := rest
		if j := strings.IndexByte(rest, '.'); j >= 0 {
			ns = rest[:j]
		}
		return ns + "/" + raw[:i]
	}
	return vsNamespace + "/" + raw
}
