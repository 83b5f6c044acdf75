package randconfig

import (
	"fmt"

	"github.com/portico-gateway/portico/internal/testpki"
)

// Gateway API objects (gateway.networking.k8s.io): a GatewayClass of ours
// (now and then another controller's), Gateways attached to the same
// proxy classes as the Istio Gateways (so both kinds meet on one port),
// routes of every kind with parentRefs, hostnames and backendRefs drawn
// from the same small pools, ReferenceGrants, BackendTLSPolicies with
// their ConfigMaps, and Namespaces whose labels allowedRoutes selectors
// read.

const gwapiVersion = "gateway.networking.k8s.io/v1"

var (
	kubeGatewayNames = []string{"kgw-0", "kgw-1"}
	// routeNamespaces favour default, where most Services are.
	routeNamespaces = []string{"default", "default", "default", "ns-a", "istio-system"}
	// proxySelectors are the annotations attaching Gateways to Classes.
	proxySelectors = []string{"istio=ingressgateway", "istio=egressgateway", "istio=ingressgateway,tier=edge"}
)

func (w *World) gatewayClass() map[string]any {
	controller := "portico.io/gateway-controller"
	if w.chance(0.1) {
		controller = "example.com/other"
	}
	return map[string]any{"apiVersion": gwapiVersion, "kind": "GatewayClass",
		"metadata": map[string]any{"name": "portico", "annotations": map[string]any{"portico.io/proxy-selector": w.pick(proxySelectors...)}},
		"spec":     map[string]any{"controllerName": controller}}
}

var gatewayClassTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // which proxies
		doc["metadata"].(map[string]any)["annotations"] = map[string]any{"portico.io/proxy-selector": w.pick(proxySelectors...)}
	},
}

func (w *World) listenerHostname(l map[string]any) {
	if h := w.pick("", "", "a.example.com", "*.example.com", "b.example.com"); h != "" {
		l["hostname"] = h
	}
}

func (w *World) allowedRoutes() map[string]any {
	switch w.rng.IntN(4) {
	case 0:
		return map[string]any{"namespaces": map[string]any{"from": "All"}}
	case 1:
		return map[string]any{"namespaces": map[string]any{"from": "Selector", "selector": map[string]any{"matchLabels": map[string]any{"team": w.pick("web", "db")}}}}
	case 2:
		return map[string]any{"namespaces": map[string]any{"from": "All"}, "kinds": []any{map[string]any{"kind": w.pick("HTTPRoute", "TCPRoute", "Bogus")}}}
	default:
		return nil // Same
	}
}

func (w *World) certRef() map[string]any {
	ref := map[string]any{"name": w.pick("cert-a", "cert-b", "missing")}
	if w.chance(0.2) {
		ref["namespace"] = w.pick(namespaces...)
	}
	return ref
}

func (w *World) listener(i int) map[string]any {
	l := map[string]any{"name": fmt.Sprintf("l%d", i)}
	switch w.rng.IntN(7) {
	case 0, 1:
		l["protocol"], l["port"] = "HTTP", w.pick1(80, 8080)
		w.listenerHostname(l)
	case 2:
		l["protocol"], l["port"] = "HTTPS", w.pick1(443, 8443)
		l["tls"] = map[string]any{"certificateRefs": []any{w.certRef()}}
		w.listenerHostname(l)
	case 3:
		l["protocol"], l["port"] = "TLS", 443
		l["tls"] = map[string]any{"mode": "Passthrough"}
		w.listenerHostname(l)
	case 4:
		l["protocol"], l["port"] = "TLS", 8443
		l["tls"] = map[string]any{"mode": "Terminate", "certificateRefs": []any{w.certRef()}}
		w.listenerHostname(l)
	case 5:
		l["protocol"], l["port"] = "TCP", w.pick1(3306, 80)
	default:
		l["protocol"], l["port"] = w.pick("UDP", "HTTP"), 80
	}
	if ar := w.allowedRoutes(); ar != nil {
		l["allowedRoutes"] = ar
	}
	return l
}

func (w *World) kubeGateway() map[string]any {
	var listeners []any
	for i := range 1 + w.rng.IntN(3) {
		listeners = append(listeners, w.listener(i))
	}
	md := meta(w.pick("istio-system", "default"), w.pick(kubeGatewayNames...))
	if w.chance(0.3) {
		md["annotations"] = map[string]any{"portico.io/proxy-selector": w.pick(proxySelectors...)}
	}
	return map[string]any{"apiVersion": gwapiVersion, "kind": "Gateway", "metadata": md,
		"spec": map[string]any{"gatewayClassName": w.pick("portico", "portico", "portico", "unknown"), "listeners": listeners}}
}

var kubeGatewayTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // one listener replaced
		ls := doc["spec"].(map[string]any)["listeners"].([]any)
		i := w.rng.IntN(len(ls))
		ls[i] = w.listener(i)
	},
	func(w *World, doc map[string]any) { // allowed routes of every listener
		for _, l := range doc["spec"].(map[string]any)["listeners"].([]any) {
			if ar := w.allowedRoutes(); ar != nil {
				l.(map[string]any)["allowedRoutes"] = ar
			} else {
				delete(l.(map[string]any), "allowedRoutes")
			}
		}
	},
}

func (w *World) parentRefs() []any {
	var out []any
	for range 1 + w.rng.IntN(2) {
		ref := map[string]any{"name": w.pick(kubeGatewayNames...), "namespace": w.pick("istio-system", "istio-system", "default")}
		switch w.rng.IntN(4) {
		case 0:
			ref["sectionName"] = fmt.Sprintf("l%d", w.rng.IntN(3))
		case 1:
			ref["port"] = w.pick1(80, 443, 3306, 8080)
		}
		out = append(out, ref)
	}
	return out
}

func (w *World) backendRef(port int) map[string]any {
	ref := map[string]any{"name": w.pick(serviceNames...), "port": port}
	if w.chance(0.5) {
		ref["port"] = w.pick1(80, 8080, 9090, 81, 8081)
	}
	if w.chance(0.2) {
		ref["namespace"] = w.pick(namespaces...)
	}
	if w.chance(0.05) {
		ref["kind"] = "Bogus"
	}
	return ref
}

func (w *World) backendRefs(port int) []any {
	var out []any
	n := w.rng.IntN(3)
	for range n {
		ref := w.backendRef(port)
		if n > 1 {
			ref["weight"] = w.pick1(0, 1, 3)
		}
		out = append(out, ref)
	}
	return out
}

func (w *World) routeHostnames() []any {
	var out []any
	for range w.rng.IntN(3) {
		out = append(out, w.pick("a.example.com", "b.example.com", "*.example.com", "x.example.org"))
	}
	return out
}

func (w *World) httpRouteMatch() map[string]any {
	m := map[string]any{}
	switch w.rng.IntN(5) {
	case 0:
		m["path"] = map[string]any{"type": "Exact", "value": w.pick("/", "/api", "/exact")}
	case 1:
		m["path"] = map[string]any{"type": "PathPrefix", "value": w.pick("/", "/api", "/api/", "/static")}
	case 2:
		m["path"] = map[string]any{"type": "RegularExpression", "value": w.pick("/r[0-9]+", "/(bad")}
	case 3:
		m["headers"] = []any{map[string]any{"name": w.pick("x-user", "X-User"), "value": w.pick("a", "b")}}
		m["method"] = w.pick("GET", "POST")
	default:
		m["queryParams"] = []any{map[string]any{"name": "q", "value": "1"}}
	}
	return m
}

func (w *World) httpRouteFilter() map[string]any {
	switch w.rng.IntN(6) {
	case 0:
		return map[string]any{"type": "RequestHeaderModifier", "requestHeaderModifier": map[string]any{"set": []any{map[string]any{"name": "x-rev", "value": w.pick("1", "2")}}}}
	case 1:
		return map[string]any{"type": "RequestRedirect", "requestRedirect": map[string]any{"scheme": "https", "statusCode": w.pick1(301, 302)}}
	case 2:
		return map[string]any{"type": "URLRewrite", "urlRewrite": map[string]any{"path": map[string]any{"type": "ReplacePrefixMatch", "replacePrefixMatch": w.pick("/", "/v2")}}}
	case 3:
		return map[string]any{"type": "RequestMirror", "requestMirror": map[string]any{"backendRef": w.backendRef(80), "percent": w.pick1(10, 50)}}
	case 4:
		return map[string]any{"type": "ExtensionRef", "extensionRef": map[string]any{"group": "example.com", "kind": "F", "name": "f"}}
	default:
		return map[string]any{"type": "ResponseHeaderModifier", "responseHeaderModifier": map[string]any{"remove": []any{"server"}}}
	}
}

func (w *World) httpRouteRule() map[string]any {
	r := map[string]any{}
	if w.chance(0.7) {
		r["matches"] = []any{w.httpRouteMatch()}
	}
	if w.chance(0.3) {
		r["filters"] = []any{w.httpRouteFilter()}
	}
	if refs := w.backendRefs(80); len(refs) > 0 || w.chance(0.5) {
		r["backendRefs"] = refs
	}
	if w.chance(0.2) {
		r["timeouts"] = map[string]any{"request": w.pick("5s", "0s"), "backendRequest": "1s"}
	}
	return r
}

func (w *World) route(kind string) map[string]any {
	spec := map[string]any{"parentRefs": w.parentRefs()}
	if kind != "TCPRoute" {
		if h := w.routeHostnames(); len(h) > 0 {
			spec["hostnames"] = h
		}
	}
	var rules []any
	switch kind {
	case "HTTPRoute":
		for range 1 + w.rng.IntN(3) {
			rules = append(rules, w.httpRouteRule())
		}
	case "GRPCRoute":
		rules = append(rules, map[string]any{"matches": []any{map[string]any{"method": map[string]any{"service": w.pick("a.S", "b.S"), "method": w.pick("M", "N")}}},
			"backendRefs": w.backendRefs(9090)})
	default:
		refs := w.backendRefs(w.pick1(80, 8080, 9090, 3306))
		if len(refs) == 0 {
			refs = []any{w.backendRef(w.pick1(80, 8080, 9090))}
		}
		rules = append(rules, map[string]any{"backendRefs": refs})
	}
	spec["rules"] = rules
	name := fmt.Sprintf("%s-%d", map[string]string{"HTTPRoute": "hr", "GRPCRoute": "gr", "TLSRoute": "tr", "TCPRoute": "cr"}[kind], w.rng.IntN(3))
	return map[string]any{"apiVersion": gwapiVersion, "kind": kind, "metadata": meta(w.pick(routeNamespaces...), name), "spec": spec}
}

func (w *World) httpRoute() map[string]any { return w.route("HTTPRoute") }
func (w *World) grpcRoute() map[string]any { return w.route("GRPCRoute") }
func (w *World) tlsRoute() map[string]any  { return w.route("TLSRoute") }
func (w *World) tcpRoute() map[string]any  { return w.route("TCPRoute") }

var routeTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { doc["spec"].(map[string]any)["parentRefs"] = w.parentRefs() },
	func(w *World, doc map[string]any) { // hostnames
		if doc["kind"] == "TCPRoute" {
			return
		}
		doc["spec"].(map[string]any)["hostnames"] = w.routeHostnames()
	},
	func(w *World, doc map[string]any) { // one rule's backends
		rules := doc["spec"].(map[string]any)["rules"].([]any)
		rules[w.rng.IntN(len(rules))].(map[string]any)["backendRefs"] = w.backendRefs(80)
	},
}

var httpRouteTweaks = append(append([]func(w *World, doc map[string]any){}, routeTweaks...),
	func(w *World, doc map[string]any) { // one rule replaced
		rules := doc["spec"].(map[string]any)["rules"].([]any)
		rules[w.rng.IntN(len(rules))] = w.httpRouteRule()
	})

func (w *World) referenceGrant() map[string]any {
	to := map[string]any{"group": "", "kind": w.pick("Service", "Secret")}
	if w.chance(0.5) {
		to["name"] = w.pick(append([]string{"cert-a"}, serviceNames...)...)
	}
	return map[string]any{"apiVersion": gwapiVersion, "kind": "ReferenceGrant", "metadata": meta(w.pick(namespaces...), w.pick("rg-0", "rg-1")),
		"spec": map[string]any{
			"from": []any{map[string]any{"group": "gateway.networking.k8s.io", "kind": w.pick("HTTPRoute", "Gateway", "TCPRoute"), "namespace": w.pick(namespaces...)}},
			"to":   []any{to}}}
}

var referenceGrantTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // whom it lets in
		doc["spec"].(map[string]any)["from"].([]any)[0].(map[string]any)["namespace"] = w.pick(namespaces...)
	},
}

func (w *World) backendTLSPolicy() map[string]any {
	v := map[string]any{"hostname": w.pick("a.internal", "b.internal")}
	if w.chance(0.6) {
		v["caCertificateRefs"] = []any{map[string]any{"group": "", "kind": w.pick("ConfigMap", "ConfigMap", "Secret"), "name": w.pick("ca", "missing")}}
	} else {
		v["wellKnownCACertificates"] = "System"
	}
	return map[string]any{"apiVersion": gwapiVersion, "kind": "BackendTLSPolicy", "metadata": meta(w.pick("default", "ns-a"), w.pick("btp-0", "btp-1")),
		"spec": map[string]any{"targetRefs": []any{map[string]any{"group": "", "kind": "Service", "name": w.pick(serviceNames...)}}, "validation": v}}
}

var backendTLSPolicyTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // the target
		doc["spec"].(map[string]any)["targetRefs"] = []any{map[string]any{"group": "", "kind": "Service", "name": w.pick(serviceNames...)}}
	},
}

func (w *World) configMap() map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(w.pick("default", "ns-a"), "ca"),
		"data": map[string]any{"ca.crt": string(testpki.Read(w.pick("ca.crt", "untrusted-ca.crt")))}}
}

var configMapTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) {
		doc["data"] = map[string]any{"ca.crt": string(testpki.Read(w.pick("ca.crt", "untrusted-ca.crt")))}
	},
}

func (w *World) namespace() map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": w.pick(namespaces...), "labels": map[string]any{"team": w.pick("web", "db")}}}
}

var namespaceTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) {
		doc["metadata"].(map[string]any)["labels"] = map[string]any{"team": w.pick("web", "db")}
	},
}
