package gatewayapi

import (
	"fmt"
	"sort"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/resource"
)

// routeState is one route of any kind with the statuses it gets.
type routeState struct {
	obj     resource.Object
	key     resource.Key
	kind    string
	parents []*parentState
	// resolved is the route's ResolvedRefs (the same for every parent).
	resolved condState
	// partial records an unsupported part (PartiallyInvalid).
	partial condState
	// bindFail is a binder rejection of the configuration made from it.
	bindFail condState
	// backends are the Services it sends to (FQDNs), for
	// BackendTLSPolicy ancestors.
	backends map[string]bool
}

type parentState struct {
	ref       gwv1.ParentReference // with group and kind defaulted
	gw        *gatewayState
	accepted  condState
	listeners []*attachment
}

// attachment is a route attached to one listener, with the hostnames it
// serves there.
type attachment struct {
	ls    *listenerState
	hosts []string
}

// attach resolves a route's parentRefs against this controller's
// Gateways. hostnames is nil for kinds without hostnames (TCPRoute).
func (c *converter) attach(rs *routeState, refs []gwv1.ParentReference, hostnames []gwv1.Hostname, usesHostnames bool) {
	ns := rs.obj.GetNamespace()
	counted := map[*listenerState]bool{}
	for _, ref := range refs {
		group := string(deref(ref.Group, gwv1.Group(resource.GatewayAPIGroup)))
		kind := string(deref(ref.Kind, gwv1.Kind(resource.KindGateway)))
		if group != resource.GatewayAPIGroup || kind != resource.KindGateway {
			continue // another kind of parent (a Service for a mesh): not ours
		}
		gwNS := string(deref(ref.Namespace, gwv1.Namespace(ns)))
		gs := c.gateways[gwNS+"/"+string(ref.Name)]
		if gs == nil {
			continue // no such Gateway of ours
		}
		r := ref
		g, k := gwv1.Group(group), gwv1.Kind(kind)
		r.Group, r.Kind = &g, &k
		ps := &parentState{ref: r, gw: gs}
		rs.parents = append(rs.parents, ps)
		if gs.notAccepted != nil {
			ps.accepted.fail(string(gwv1.RouteReasonNoMatchingParent), "Gateway %s/%s is not accepted: %s", gwNS, ref.Name, gs.notAccepted.Message)
			continue
		}
		var candidates []*listenerState
		for _, ls := range gs.listeners {
			if ref.SectionName != nil && string(*ref.SectionName) != ls.name() {
				continue
			}
			if ref.Port != nil && *ref.Port != ls.l.Port {
				continue
			}
			candidates = append(candidates, ls)
		}
		if len(candidates) == 0 {
			ps.accepted.fail(string(gwv1.RouteReasonNoMatchingParent), "Gateway %s/%s has no listener%s", gwNS, ref.Name, describeSection(ref))
			continue
		}
		hostFail, kindFail, nsFail := false, false, false
		for _, ls := range candidates {
			if !ls.allows(rs.kind) {
				kindFail = true
				continue
			}
			if !c.allowedNamespace(gs.obj, ls.l, ns) {
				nsFail = true
				continue
			}
			hosts := []string{"*"}
			if usesHostnames {
				hosts = effectiveHosts(hostnames, ls.l.Hostname)
				if len(hosts) == 0 {
					hostFail = true
					continue
				}
			}
			ps.listeners = append(ps.listeners, &attachment{ls: ls, hosts: hosts})
		}
		switch {
		case len(ps.listeners) > 0:
			for _, a := range ps.listeners {
				if !counted[a.ls] {
					counted[a.ls] = true
					a.ls.attached++
				}
			}
		case hostFail:
			ps.accepted.fail(string(gwv1.RouteReasonNoMatchingListenerHostname), "no hostname of the route matches a listener%s of Gateway %s/%s", describeSection(ref), gwNS, ref.Name)
		case nsFail && !kindFail:
			ps.accepted.fail(string(gwv1.RouteReasonNotAllowedByListeners), "the listeners%s of Gateway %s/%s do not allow routes from namespace %s", describeSection(ref), gwNS, ref.Name, ns)
		default:
			ps.accepted.fail(string(gwv1.RouteReasonNotAllowedByListeners), "the listeners%s of Gateway %s/%s do not allow %s", describeSection(ref), gwNS, ref.Name, rs.kind)
		}
	}
}

func describeSection(ref gwv1.ParentReference) string {
	var parts []string
	if ref.SectionName != nil {
		parts = append(parts, fmt.Sprintf("named %q", *ref.SectionName))
	}
	if ref.Port != nil {
		parts = append(parts, fmt.Sprintf("on port %d", *ref.Port))
	}
	if len(parts) == 0 {
		return ""
	}
	return " " + strings.Join(parts, " ")
}

// effectiveHosts intersects a route's hostnames with a listener's.
func effectiveHosts(route []gwv1.Hostname, listener *gwv1.Hostname) []string {
	lh := ""
	if listener != nil {
		lh = string(*listener)
	}
	if len(route) == 0 {
		h, _ := intersectHostnames("", lh)
		return []string{h}
	}
	var out []string
	seen := map[string]bool{}
	for _, rh := range route {
		if h, ok := intersectHostnames(string(rh), lh); ok && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// resolveBackend checks one backendRef and returns its Istio destination
// (nil when it is invalid, the reason recorded on the route).
func (c *converter) resolveBackend(rs *routeState, field string, ref gwv1.BackendObjectReference) *networkingapi.Destination {
	group, kind := string(deref(ref.Group, "")), string(deref(ref.Kind, "Service"))
	ns := string(deref(ref.Namespace, gwv1.Namespace(rs.obj.GetNamespace())))
	if group != "" || kind != "Service" {
		rs.resolved.fail(string(gwv1.RouteReasonInvalidKind), "%s: %s/%s is not a supported backend kind (core Service only)", field, group, kind)
		return nil
	}
	if !c.granted(resource.GatewayAPIGroup, rs.kind, rs.obj.GetNamespace(), "", "Service", ns, string(ref.Name)) {
		rs.resolved.fail(string(gwv1.RouteReasonRefNotPermitted), "%s: Service %s/%s is in another namespace and no ReferenceGrant there allows %ss in %s to use it",
			field, ns, ref.Name, rs.kind, rs.obj.GetNamespace())
		return nil
	}
	if ref.Port == nil {
		rs.resolved.fail(string(gwv1.RouteReasonBackendNotFound), "%s: port is required for a Service backend", field)
		return nil
	}
	port := uint32(*ref.Port)
	host := c.fqdn(string(ref.Name), ns)
	found, hasPort := false, false
	if svc := c.services[ns+"/"+string(ref.Name)]; svc != nil {
		found = true
		for _, p := range svc.Spec.Ports {
			if uint32(p.Port) == port {
				hasPort = true
			}
		}
	} else if se := c.seHosts[host]; se != nil {
		found = true
		for _, p := range se.Spec.Ports {
			if p.Number == port {
				hasPort = true
			}
		}
	}
	switch {
	case !found:
		rs.resolved.fail(string(gwv1.RouteReasonBackendNotFound), "%s: Service %s/%s not found", field, ns, ref.Name)
		return nil
	case !hasPort:
		rs.resolved.fail(string(gwv1.RouteReasonBackendNotFound), "%s: Service %s/%s has no port %d", field, ns, ref.Name, port)
		return nil
	}
	if rs.backends == nil {
		rs.backends = map[string]bool{}
	}
	rs.backends[host] = true
	return &networkingapi.Destination{Host: host, Port: &networkingapi.PortSelector{Number: port}}
}

// routeLess orders routes oldest first, then by namespace/name: the
// spec's tie-break across routes.
func routeLess(a, b resource.Object) bool { return resource.Older(a, b) }

// attachRoute binds a route to its parents and keeps it (for status and
// conversion) when it names at least one of ours; nil otherwise.
func (c *converter) attachRoute(r resource.Object, kind string, refs []gwv1.ParentReference, hostnames []gwv1.Hostname, usesHostnames bool) *routeState {
	rs := &routeState{obj: r, key: resource.KeyOf(r), kind: kind}
	c.attach(rs, refs, hostnames, usesHostnames)
	if len(rs.parents) == 0 {
		return nil
	}
	c.out.routes = append(c.out.routes, rs)
	return rs
}

func (c *converter) convertRoutes() {
	hb := newHTTPBuilder(c)
	for _, r := range c.in.HTTPRoutes {
		rs := c.attachRoute(r, resource.KindHTTPRoute, r.Spec.ParentRefs, r.Spec.Hostnames, true)
		if rs == nil {
			continue
		}
		hb.addHTTPRoute(rs, r)
	}
	for _, r := range c.in.GRPCRoutes {
		rs := c.attachRoute(r, resource.KindGRPCRoute, r.Spec.ParentRefs, r.Spec.Hostnames, true)
		if rs == nil {
			continue
		}
		hb.addGRPCRoute(rs, r)
	}
	hb.emit()
	for _, r := range c.in.TLSRoutes {
		rs := c.attachRoute(r, resource.KindTLSRoute, r.Spec.ParentRefs, r.Spec.Hostnames, true)
		if rs == nil {
			continue
		}
		var backends []gwv1.BackendRef
		for _, rule := range r.Spec.Rules {
			backends = append(backends, rule.BackendRefs...)
		}
		c.emitL4(rs, backends, true)
	}
	for _, r := range c.in.TCPRoutes {
		rs := c.attachRoute(r, resource.KindTCPRoute, r.Spec.ParentRefs, nil, false)
		if rs == nil {
			continue
		}
		var backends []gwv1.BackendRef
		for _, rule := range r.Spec.Rules {
			backends = append(backends, rule.BackendRefs...)
		}
		c.emitL4(rs, backends, false)
	}
	for _, r := range c.in.UDPRoutes {
		rs := c.attachRoute(r, resource.KindUDPRoute, r.Spec.ParentRefs, nil, false)
		if rs == nil {
			continue
		}
		for _, ps := range rs.parents {
			ps.accepted.fail(string(gwv1.RouteReasonNotAllowedByListeners), "UDPRoute is not supported by Portico")
		}
	}
}

// InvalidBackendHost is the destination the conversion gives a TLS or
// TCP route's share of connections that would have gone to an invalid
// backendRef (or all of them, when no backendRef is valid or there is
// none): a host with no Service, so no endpoints, so the proxy accepts
// the connection and closes it — what the spec asks for (the route's
// ResolvedRefs already says why) and what the conformance suite checks,
// rather than refusing the port, which would look like a Gateway that is
// not there. The binder knows the name and does not report it again.
const InvalidBackendHost = "invalid-backend.portico.internal"

// invalidBackendPort is the port of InvalidBackendHost's cluster.
const invalidBackendPort = 1

// l4Destinations resolves weighted backends of a TLS or TCP route.
// Invalid backends keep their weight, pointing at InvalidBackendHost.
func (c *converter) l4Destinations(rs *routeState, backends []gwv1.BackendRef) []*networkingapi.RouteDestination {
	var out []*networkingapi.RouteDestination
	invalid := int32(0)
	for i, b := range backends {
		d := c.resolveBackend(rs, fmt.Sprintf("spec.rules.backendRefs[%d]", i), b.BackendObjectReference)
		w := deref(b.Weight, 1)
		switch {
		case w <= 0:
		case d == nil:
			invalid += w
		default:
			out = append(out, &networkingapi.RouteDestination{Destination: d, Weight: w})
		}
	}
	if invalid > 0 || len(out) == 0 {
		out = append(out, &networkingapi.RouteDestination{
			Destination: &networkingapi.Destination{Host: InvalidBackendHost, Port: &networkingapi.PortSelector{Number: invalidBackendPort}},
			Weight:      max(invalid, 1),
		})
	}
	if len(out) == 1 {
		out[0].Weight = 0
	}
	return out
}

// emitL4 makes one VirtualService for a TLSRoute or TCPRoute: tls rules
// by SNI on passthrough listeners, tcp rules on TCP and terminating TLS
// listeners.
func (c *converter) emitL4(rs *routeState, backends []gwv1.BackendRef, tlsRoute bool) {
	dests := c.l4Destinations(rs, backends)
	var gateways []string
	var sni []string
	tcpGateways := false
	for _, ps := range rs.parents {
		for _, a := range ps.listeners {
			if a.ls.syn == nil {
				continue
			}
			gateways = appendUnique(gateways, a.ls.synKey.NamespacedName())
			if a.ls.passthrough {
				for _, h := range a.hosts {
					sni = appendUnique(sni, h)
				}
			} else {
				tcpGateways = true
			}
		}
	}
	if len(gateways) == 0 {
		return
	}
	r := rs.obj
	vs := &networking.VirtualService{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "VirtualService"},
		ObjectMeta: metav1.ObjectMeta{Namespace: r.GetNamespace(), Name: strings.ToLower(rs.kind) + "~" + r.GetName(),
			CreationTimestamp: r.GetCreationTimestamp(), Generation: r.GetGeneration()},
	}
	vs.Spec.Gateways = gateways
	origin := &origin{}
	if tlsRoute && len(sni) > 0 {
		sort.Strings(sni)
		vs.Spec.Hosts = sni
		vs.Spec.Tls = []*networkingapi.TLSRoute{{Match: []*networkingapi.TLSMatchAttributes{{SniHosts: sni}}, Route: dests}}
		origin.tls = []*routeState{rs}
	}
	if tcpGateways {
		if len(vs.Spec.Hosts) == 0 {
			vs.Spec.Hosts = []string{"*"}
		} else if !contains(vs.Spec.Hosts, "*") {
			vs.Spec.Hosts = append(vs.Spec.Hosts, "*")
		}
		vs.Spec.Tcp = []*networkingapi.TCPRoute{{Route: dests}}
		origin.tcp = []*routeState{rs}
	}
	if len(vs.Spec.Hosts) == 0 {
		return
	}
	contentID(vs)
	c.out.VirtualServices = append(c.out.VirtualServices, vs)
	c.out.synthetic[resource.KeyOf(vs)] = origin
}

func appendUnique(list []string, s string) []string {
	if contains(list, s) {
		return list
	}
	return append(list, s)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
