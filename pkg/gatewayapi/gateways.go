package gatewayapi

import (
	"fmt"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/resource"
)

type gatewayState struct {
	obj       *gwv1.Gateway
	class     *classState
	listeners []*listenerState
	selector  map[string]string
	// notAccepted is set when the whole Gateway is refused (addresses,
	// parameters): reason and message.
	notAccepted *metav1.Condition
}

// condState is one listener condition under construction: the first
// problem reported wins (the spec has one reason per condition).
type condState struct {
	bad     bool
	reason  string
	message string
}

func (c *condState) fail(reason, format string, args ...any) {
	if c.bad {
		return
	}
	c.bad, c.reason, c.message = true, reason, fmt.Sprintf(format, args...)
}

type listenerState struct {
	gw    *gatewayState
	index int
	l     *gwv1.Listener
	// family is how it shares a port: HTTP, TLS (HTTPS and TLS, told
	// apart by SNI) or TCP.
	family      string
	passthrough bool
	kinds       []gwv1.RouteGroupKind
	// syn is the synthetic Istio Gateway (nil when the listener cannot
	// be programmed).
	syn      *networking.Gateway
	synKey   resource.Key
	attached int32

	accepted, resolved, conflicted, programmed condState
	conflictReason                             string
}

func (ls *listenerState) name() string { return string(ls.l.Name) }

// allows reports whether the listener takes routes of kind.
func (ls *listenerState) allows(kind string) bool {
	for _, k := range ls.kinds {
		if string(k.Kind) == kind {
			return true
		}
	}
	return false
}

var kindsByProtocol = map[string][]string{
	"HTTP":            {resource.KindHTTPRoute, resource.KindGRPCRoute},
	"HTTPS":           {resource.KindHTTPRoute, resource.KindGRPCRoute},
	"TLS/Passthrough": {resource.KindTLSRoute},
	"TLS/Terminate":   {resource.KindTLSRoute, resource.KindTCPRoute},
	"TCP":             {resource.KindTCPRoute},
}

func (c *converter) classOf(gw *gwv1.Gateway) *classState {
	return c.ours(string(gw.Spec.GatewayClassName))
}

func (c *converter) convertGateways() {
	for _, gw := range c.in.KubeGateways {
		cs := c.classOf(gw)
		if cs == nil {
			continue
		}
		gs := &gatewayState{obj: gw, class: cs}
		gs.selector, _ = ProxySelector(gw, cs.obj, c.opts.DefaultSelector)
		c.out.gateways = append(c.out.gateways, gs)
		c.gateways[gw.Namespace+"/"+gw.Name] = gs
		gen := gw.Generation
		switch {
		case len(gs.selector) == 0:
			cond := condition(string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonInvalid),
				fmt.Sprintf("annotation %s must be \"key=value,key=value\"; the Gateway is served by no proxy until it is fixed", ProxySelectorAnnotation), gen)
			gs.notAccepted = &cond
		case len(gw.Spec.Addresses) > 0:
			cond := condition(string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonUnsupportedAddress),
				"spec.addresses is not supported: the address comes from the proxies' Service; remove spec.addresses", gen)
			gs.notAccepted = &cond
		case gw.Spec.Infrastructure != nil && gw.Spec.Infrastructure.ParametersRef != nil:
			p := gw.Spec.Infrastructure.ParametersRef
			cond := condition(string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonInvalidParameters),
				fmt.Sprintf("spec.infrastructure.parametersRef %s %s is not supported", p.Kind, p.Name), gen)
			gs.notAccepted = &cond
		}
		for i := range gw.Spec.Listeners {
			ls := &listenerState{gw: gs, index: i, l: &gw.Spec.Listeners[i]}
			gs.listeners = append(gs.listeners, ls)
			c.validateListener(ls)
		}
		c.listenerConflicts(gs)
		if gs.notAccepted != nil {
			continue
		}
		for _, ls := range gs.listeners {
			c.synthesizeListener(ls)
		}
	}
}

func (c *converter) validateListener(ls *listenerState) {
	l := ls.l
	proto := string(l.Protocol)
	key := proto
	switch proto {
	case "HTTP":
		ls.family = "HTTP"
	case "HTTPS":
		ls.family = "TLS"
		if l.TLS != nil && deref(l.TLS.Mode, gwv1.TLSModeTerminate) == gwv1.TLSModePassthrough {
			ls.accepted.fail(string(gwv1.ListenerReasonUnsupportedValue), "tls.mode Passthrough is not allowed with protocol HTTPS; use protocol TLS")
		}
	case "TLS":
		ls.family = "TLS"
		mode := gwv1.TLSModeTerminate
		if l.TLS != nil {
			mode = deref(l.TLS.Mode, gwv1.TLSModeTerminate)
		}
		ls.passthrough = mode == gwv1.TLSModePassthrough
		key = "TLS/" + string(mode)
	case "TCP":
		ls.family = "TCP"
	default:
		why := "is not supported"
		if proto == "UDP" {
			why = "is not supported (UDPRoute is not implemented by Portico)"
		}
		ls.accepted.fail(string(gwv1.ListenerReasonUnsupportedProtocol), "protocol %q %s", proto, why)
		ls.kinds = []gwv1.RouteGroupKind{}
		return
	}
	supported := kindsByProtocol[key]
	var allowed []gwv1.RouteGroupKind
	if l.AllowedRoutes != nil && l.AllowedRoutes.Kinds != nil {
		var invalid []string
		for _, k := range l.AllowedRoutes.Kinds {
			group := string(deref(k.Group, gwv1.Group(resource.GatewayAPIGroup)))
			ok := false
			for _, s := range supported {
				if group == resource.GatewayAPIGroup && string(k.Kind) == s {
					ok = true
				}
			}
			if ok {
				allowed = append(allowed, gwv1.RouteGroupKind{Group: groupPtr(), Kind: k.Kind})
			} else {
				invalid = append(invalid, group+"/"+string(k.Kind))
			}
		}
		if len(invalid) > 0 {
			ls.resolved.fail(string(gwv1.ListenerReasonInvalidRouteKinds), "route kinds %s are not supported on a %s listener (supported: %s)",
				strings.Join(invalid, ", "), proto, strings.Join(supported, ", "))
		}
	} else {
		for _, s := range supported {
			allowed = append(allowed, gwv1.RouteGroupKind{Group: groupPtr(), Kind: gwv1.Kind(s)})
		}
	}
	if allowed == nil {
		allowed = []gwv1.RouteGroupKind{}
	}
	ls.kinds = allowed
	if ls.family == "TLS" && !ls.passthrough && !ls.accepted.bad {
		c.checkCertificates(ls)
		c.checkFrontendValidation(ls)
	}
}

func groupPtr() *gwv1.Group { g := gwv1.Group(resource.GatewayAPIGroup); return &g }

// validCertRefs are the certificateRefs of a terminating listener that
// can be used, as credentialName values ("name", or "ns/name" across
// namespaces with a ReferenceGrant).
func (c *converter) certificateRefs(ls *listenerState) []string {
	var out []string
	gw := ls.gw.obj
	if ls.l.TLS == nil || len(ls.l.TLS.CertificateRefs) == 0 {
		ls.resolved.fail(string(gwv1.ListenerReasonInvalidCertificateRef), "tls.certificateRefs is required to terminate TLS")
		return nil
	}
	for i, ref := range ls.l.TLS.CertificateRefs {
		group, kind := string(deref(ref.Group, "")), string(deref(ref.Kind, "Secret"))
		ns := string(deref(ref.Namespace, gwv1.Namespace(gw.Namespace)))
		field := fmt.Sprintf("tls.certificateRefs[%d]", i)
		if group != "" || kind != "Secret" {
			ls.resolved.fail(string(gwv1.ListenerReasonInvalidCertificateRef), "%s: %s/%s is not supported; only core Secrets are", field, group, kind)
			continue
		}
		if !c.granted(resource.GatewayAPIGroup, resource.KindGateway, gw.Namespace, "", "Secret", ns, string(ref.Name)) {
			ls.resolved.fail(string(gwv1.ListenerReasonRefNotPermitted), "%s: Secret %s/%s is in another namespace and no ReferenceGrant there allows Gateways in %s to use it",
				field, ns, ref.Name, gw.Namespace)
			continue
		}
		sec := c.secrets[ns+"/"+string(ref.Name)]
		if sec == nil {
			ls.resolved.fail(string(gwv1.ListenerReasonInvalidCertificateRef), "%s: Secret %s/%s not found", field, ns, ref.Name)
			continue
		}
		if len(sec.Data["tls.crt"]) == 0 || len(sec.Data["tls.key"]) == 0 {
			ls.resolved.fail(string(gwv1.ListenerReasonInvalidCertificateRef), "%s: Secret %s/%s has no tls.crt and tls.key", field, ns, ref.Name)
			continue
		}
		name := string(ref.Name)
		if ns != gw.Namespace {
			name = ns + "/" + name
		}
		out = append(out, name)
	}
	return out
}

func (c *converter) checkCertificates(ls *listenerState) {
	if len(c.certificateRefs(ls)) == 0 && !ls.resolved.bad {
		ls.resolved.fail(string(gwv1.ListenerReasonInvalidCertificateRef), "no usable certificate")
	}
}

// listenerConflicts applies the spec's rules within one Gateway:
// listeners on one port must share a protocol family (HTTP; HTTPS and
// TLS; TCP) and differ in hostname. The first listener keeps the port;
// later ones that conflict are not used.
func (c *converter) listenerConflicts(gs *gatewayState) {
	type portUse struct {
		first *listenerState
		hosts map[string]*listenerState
	}
	ports := map[int32]*portUse{}
	for _, ls := range gs.listeners {
		if ls.family == "" {
			continue
		}
		pu := ports[ls.l.Port]
		if pu == nil {
			ports[ls.l.Port] = &portUse{first: ls, hosts: map[string]*listenerState{hostKey(ls): ls}}
			continue
		}
		if pu.first.family != ls.family {
			ls.conflicted.fail(string(gwv1.ListenerReasonProtocolConflict), "port %d is already used with protocol %s by listener %q",
				ls.l.Port, pu.first.l.Protocol, pu.first.name())
			ls.conflictReason = string(gwv1.ListenerReasonProtocolConflict)
			continue
		}
		hk := hostKey(ls)
		if other, dup := pu.hosts[hk]; dup {
			ls.conflicted.fail(string(gwv1.ListenerReasonHostnameConflict), "listener %q already serves hostname %q on port %d",
				other.name(), displayHost(ls), ls.l.Port)
			ls.conflictReason = string(gwv1.ListenerReasonHostnameConflict)
			continue
		}
		pu.hosts[hk] = ls
	}
	for _, ls := range gs.listeners {
		if ls.conflicted.bad {
			ls.accepted.fail(ls.conflicted.reason, "%s", ls.conflicted.message)
		}
	}
}

func hostKey(ls *listenerState) string {
	if ls.family == "TCP" || ls.l.Hostname == nil {
		return ""
	}
	return strings.ToLower(string(*ls.l.Hostname))
}

func displayHost(ls *listenerState) string {
	if h := hostKey(ls); h != "" {
		return h
	}
	return "*"
}

// synthesizeListener makes the Istio Gateway of a listener that can be
// programmed.
func (c *converter) synthesizeListener(ls *listenerState) {
	if ls.accepted.bad {
		return
	}
	l := ls.l
	var server *networkingapi.Server
	switch {
	case ls.family == "HTTP":
		server = serverFor(l, nil, "HTTP")
	case ls.family == "TCP":
		server = serverFor(l, nil, "TCP")
	case ls.passthrough:
		server = serverFor(l, &networkingapi.ServerTLSSettings{Mode: networkingapi.ServerTLSSettings_PASSTHROUGH}, "TLS")
	default:
		// Problems were recorded by validateListener; only the usable
		// references matter here.
		creds := c.certificateRefs(&listenerState{gw: ls.gw, l: l})
		if len(creds) == 0 {
			return
		}
		tls := &networkingapi.ServerTLSSettings{Mode: networkingapi.ServerTLSSettings_SIMPLE, CredentialName: creds[0], CredentialNames: creds[1:]}
		if len(creds) == 1 {
			tls.CredentialNames = nil
		}
		c.clientValidation(ls, tls)
		server = serverFor(l, tls, string(l.Protocol))
	}
	gw := ls.gw.obj
	syn := &networking.Gateway{
		TypeMeta: metav1.TypeMeta{APIVersion: "networking.istio.io/v1", Kind: "Gateway"},
		ObjectMeta: metav1.ObjectMeta{Namespace: gw.Namespace, Name: SyntheticName(gw.Name, ls.name()),
			CreationTimestamp: gw.CreationTimestamp, Generation: gw.Generation},
	}
	syn.Spec.Selector = ls.gw.selector
	syn.Spec.Servers = []*networkingapi.Server{server}
	contentID(syn)
	ls.syn = syn
	ls.synKey = resource.KeyOf(syn)
	c.out.Gateways = append(c.out.Gateways, syn)
	c.out.synthetic[ls.synKey] = &origin{listener: ls}
}
