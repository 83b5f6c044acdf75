// Package randconfig generates random, small but dense Istio
// configurations and random edit sequences over them, for differential
// tests (an incremental computation must equal a fresh one after every
// step) and property tests (one injected invalid resource affects only
// itself). Names come from small pools, so references resolve sometimes
// and miss sometimes, hosts overlap, ports collide and subsets match some
// endpoints and not others: the situations caches get wrong.
//
// Everything is decoded through pkg/resource from JSON, as a provider
// would. In Kubernetes mode objects carry UIDs, resourceVersions and
// creation timestamps, and Resources hands out fresh copies of unchanged
// objects now and then, as an informer cache does; in file mode an object
// is a new pointer exactly when it was edited.
package randconfig

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/portico-gateway/portico/internal/testpki"
	"github.com/portico-gateway/portico/pkg/resource"
)

// Now is a time at which the test certificates are valid (except the
// expired one): pass it to the binder.
var Now = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// Classes are the proxy classes worth building for generated configs.
var Classes = []map[string]string{
	{"istio": "ingressgateway"},
	{"istio": "egressgateway"},
	{"istio": "ingressgateway", "tier": "edge"},
}

// Options choose the flavour of a generated world.
type Options struct {
	// Kubernetes gives objects UIDs, resourceVersions and creation times.
	Kubernetes bool
	// NoGatewayAPI leaves the Gateway API kinds out (gatewayapi.go).
	NoGatewayAPI bool
}

// World is a configuration that edits change one object at a time.
type World struct {
	rng  *rand.Rand
	opts Options
	objs map[resource.Key]resource.Object
	docs map[resource.Key]map[string]any
	rv   int
	uid  int
	step int
}

// New returns a random world.
func New(seed uint64, opts Options) *World {
	w := &World{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), opts: opts,
		objs: map[resource.Key]resource.Object{}, docs: map[resource.Key]map[string]any{}}
	for _, kind := range w.kinds() {
		n := 1 + w.rng.IntN(kind.initial)
		for range n {
			w.put(kind.gen(w))
		}
	}
	return w
}

// kind is how to generate and edit one kind of object.
type kind struct {
	name string
	// group is set for the Gateway API's Gateway only (as in
	// resource.Key), which shares its kind name with Istio's.
	group   string
	gwapi   bool
	initial int
	gen     func(w *World) map[string]any
	// tweaks make one small change to a document.
	tweaks []func(w *World, doc map[string]any)
}

var kinds []kind

func init() {
	kinds = []kind{
		{"Gateway", "", false, 3, (*World).gateway, gatewayTweaks},
		{"VirtualService", "", false, 6, (*World).virtualService, vsTweaks},
		{"DestinationRule", "", false, 4, (*World).destinationRule, drTweaks},
		{"ServiceEntry", "", false, 3, (*World).serviceEntry, seTweaks},
		{"Service", "", false, 4, (*World).service, serviceTweaks},
		{"EndpointSlice", "", false, 4, (*World).endpointSlice, sliceTweaks},
		{"Pod", "", false, 6, (*World).pod, podTweaks},
		{"Secret", "", false, 3, (*World).secret, secretTweaks},
		{"RequestAuthentication", "", false, 2, (*World).requestAuthentication, requestAuthTweaks},
		{"AuthorizationPolicy", "", false, 3, (*World).authorizationPolicy, authzTweaks},
		{"GatewayClass", "", true, 1, (*World).gatewayClass, gatewayClassTweaks},
		{"Gateway", resource.GatewayAPIGroup, true, 2, (*World).kubeGateway, kubeGatewayTweaks},
		{"HTTPRoute", "", true, 4, (*World).httpRoute, httpRouteTweaks},
		{"GRPCRoute", "", true, 1, (*World).grpcRoute, routeTweaks},
		{"TLSRoute", "", true, 2, (*World).tlsRoute, routeTweaks},
		{"TCPRoute", "", true, 2, (*World).tcpRoute, routeTweaks},
		{"ReferenceGrant", "", true, 2, (*World).referenceGrant, referenceGrantTweaks},
		{"BackendTLSPolicy", "", true, 2, (*World).backendTLSPolicy, backendTLSPolicyTweaks},
		{"ConfigMap", "", true, 1, (*World).configMap, configMapTweaks},
		{"Namespace", "", true, 2, (*World).namespace, namespaceTweaks},
	}
}

// kinds are the kinds this world generates.
func (w *World) kinds() []kind {
	if !w.opts.NoGatewayAPI {
		return kinds
	}
	var out []kind
	for _, k := range kinds {
		if !k.gwapi {
			out = append(out, k)
		}
	}
	return out
}

func (w *World) pick(list ...string) string { return list[w.rng.IntN(len(list))] }
func (w *World) chance(p float64) bool      { return w.rng.Float64() < p }

// Name pools.
var (
	namespaces   = []string{"default", "ns-a", "istio-system"}
	serviceNames = []string{"app-0", "app-1", "app-2", "app-3"}
	vsHosts      = []string{"a.example.com", "b.example.com", "*.example.com", "c.example.org", "ext.example.org", "*"}
	seHosts      = []string{"ext.example.org", "*.wild.example.org", "db.example.org", "app-0.default.svc.cluster.local"}
	secretNames  = []string{"cert-a", "cert-b", "upstream"}
	versions     = []string{"v1", "v2", "v3"}
)

func meta(ns, name string) map[string]any { return map[string]any{"namespace": ns, "name": name} }

func (w *World) destinationHost() string {
	switch w.rng.IntN(6) {
	case 0:
		return w.pick(serviceNames...)
	case 1:
		return w.pick(serviceNames...) + "." + w.pick(namespaces...) + ".svc.cluster.local"
	case 2:
		return w.pick("ext.example.org", "x.wild.example.org", "db.example.org")
	case 3:
		return "missing.example.net"
	default:
		return w.pick(serviceNames...) + ".default.svc.cluster.local"
	}
}

func (w *World) destination() map[string]any {
	d := map[string]any{"host": w.destinationHost()}
	if w.chance(0.5) {
		d["subset"] = w.pick("v1", "v2", "missing")
	}
	if w.chance(0.4) {
		d["port"] = map[string]any{"number": w.pick1(80, 8080, 9090, 443)}
	}
	return d
}

func (w *World) pick1(list ...int) int { return list[w.rng.IntN(len(list))] }

func (w *World) gateway() map[string]any {
	ns := w.pick("istio-system", "istio-system", "default")
	name := w.pick("gw-0", "gw-1", "gw-2")
	selectors := []map[string]any{{"istio": "ingressgateway"}, {"istio": "egressgateway"}, {"istio": "ingressgateway", "tier": "edge"}}
	var servers []any
	for i := range 1 + w.rng.IntN(3) {
		servers = append(servers, w.server(i))
	}
	return map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": meta(ns, name),
		"spec": map[string]any{"selector": selectors[w.rng.IntN(len(selectors))], "servers": servers}}
}

func (w *World) serverHosts() []any {
	var hosts []any
	for range 1 + w.rng.IntN(2) {
		hosts = append(hosts, w.pick("*", "*/*.example.com", "ns-a/a.example.com", "*/b.example.com", "./c.example.org", "*/ext.example.org"))
	}
	return hosts
}

func (w *World) server(i int) map[string]any {
	hosts := w.serverHosts()
	port := func(n int, proto string) map[string]any {
		return map[string]any{"number": n, "protocol": proto, "name": fmt.Sprintf("%s-%d-%d", strings.ToLower(proto), n, w.rng.IntN(2)+i)}
	}
	switch w.rng.IntN(6) {
	case 0:
		return map[string]any{"port": port(w.pick1(80, 8080), "HTTP"), "hosts": hosts}
	case 1:
		return map[string]any{"port": port(80, "HTTP"), "hosts": hosts, "tls": map[string]any{"httpsRedirect": true}}
	case 2:
		return map[string]any{"port": port(w.pick1(443, 8443), "HTTPS"), "hosts": hosts,
			"tls": map[string]any{"mode": w.pick("SIMPLE", "SIMPLE", "MUTUAL"), "credentialName": w.pick("cert-a", "cert-b", "missing")}}
	case 3:
		return map[string]any{"port": port(443, "HTTPS"), "hosts": hosts,
			"tls": map[string]any{"mode": "SIMPLE", "serverCertificate": "/etc/certs/tls.crt", "privateKey": "/etc/certs/tls.key"}}
	case 4:
		return map[string]any{"port": port(w.pick1(443, 8443), "TLS"), "hosts": hosts, "tls": map[string]any{"mode": "PASSTHROUGH"}}
	default:
		return map[string]any{"port": port(3306, "TCP"), "hosts": hosts}
	}
}

var gatewayTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // selector
		spec := doc["spec"].(map[string]any)
		spec["selector"] = map[string]any{"istio": w.pick("ingressgateway", "egressgateway")}
	},
	func(w *World, doc map[string]any) { // one server replaced
		servers := doc["spec"].(map[string]any)["servers"].([]any)
		servers[w.rng.IntN(len(servers))] = w.server(w.rng.IntN(3))
	},
	func(w *World, doc map[string]any) { // hosts of a server
		servers := doc["spec"].(map[string]any)["servers"].([]any)
		servers[w.rng.IntN(len(servers))].(map[string]any)["hosts"] = w.serverHosts()
	},
	func(w *World, doc map[string]any) { // credential of a server
		for _, s := range doc["spec"].(map[string]any)["servers"].([]any) {
			if tls, ok := s.(map[string]any)["tls"].(map[string]any); ok && tls["credentialName"] != nil {
				tls["credentialName"] = w.pick("cert-a", "cert-b", "missing")
			}
		}
	},
}

func (w *World) gatewayRefs() []any {
	var out []any
	for range 1 + w.rng.IntN(2) {
		g := w.pick("gw-0", "gw-1", "gw-2")
		switch w.rng.IntN(4) {
		case 0:
			out = append(out, "istio-system/"+g)
		case 1:
			out = append(out, g+".istio-system.svc.cluster.local")
		case 2:
			out = append(out, g) // the VirtualService's namespace
		default:
			out = append(out, "istio-system/"+g)
		}
	}
	if w.chance(0.05) {
		out = append(out, "mesh")
	}
	return out
}

func (w *World) virtualService() map[string]any {
	ns := w.pick("default", "ns-a", "istio-system")
	name := w.pick("vs-0", "vs-1", "vs-2", "vs-3")
	var hosts []any
	for range 1 + w.rng.IntN(2) {
		hosts = append(hosts, w.pick(vsHosts...))
	}
	spec := map[string]any{"hosts": hosts, "gateways": w.gatewayRefs()}
	var http []any
	for range w.rng.IntN(3) {
		http = append(http, w.httpRule())
	}
	if len(http) > 0 || w.chance(0.5) {
		spec["http"] = http
	}
	if w.chance(0.25) {
		spec["tcp"] = []any{map[string]any{"route": w.routeDestinations()}}
	}
	if w.chance(0.25) {
		spec["tls"] = []any{map[string]any{"match": []any{map[string]any{"sniHosts": []any{hosts[0]}}}, "route": w.routeDestinations()}}
	}
	return map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta(ns, name), "spec": spec}
}

func (w *World) routeDestinations() []any {
	n := 1 + w.rng.IntN(2)
	var out []any
	for i := range n {
		d := map[string]any{"destination": w.destination()}
		if n > 1 {
			d["weight"] = []int{75, 25}[i]
		}
		out = append(out, d)
	}
	return out
}

func (w *World) match() map[string]any {
	m := map[string]any{}
	switch w.rng.IntN(6) {
	case 0:
		m["uri"] = map[string]any{"prefix": w.pick("/", "/api", "/static")}
	case 1:
		m["uri"] = map[string]any{"exact": "/exact"}
	case 2:
		m["uri"] = map[string]any{"regex": "/r[0-9]+"}
	case 3:
		m["headers"] = map[string]any{w.pick("x-user", "end-user"): map[string]any{"exact": w.pick("jason", "x")}}
	case 4:
		m["sourceLabels"] = map[string]any{"tier": "edge"}
	default:
		m["queryParams"] = map[string]any{"q": map[string]any{"exact": ""}}
	}
	if w.chance(0.1) {
		m["port"] = w.pick1(80, 443)
	}
	return m
}

func (w *World) httpRule() map[string]any {
	r := map[string]any{}
	if w.chance(0.7) {
		r["match"] = []any{w.match()}
	}
	switch w.rng.IntN(8) {
	case 0:
		r["redirect"] = map[string]any{"uri": "/new", "authority": w.pick("a.example.com", "b.example.com")}
	case 1:
		r["directResponse"] = map[string]any{"status": w.pick1(200, 404, 503), "body": map[string]any{"string": "hi"}}
	default:
		r["route"] = w.routeDestinations()
		if w.chance(0.3) {
			r["retries"] = map[string]any{"attempts": w.pick1(0, 2, 3), "perTryTimeout": "2s", "retryOn": w.pick("5xx", "gateway-error,503")}
		}
		if w.chance(0.3) {
			r["timeout"] = w.pick("5s", "1s")
		}
		if w.chance(0.2) {
			r["mirror"] = w.destination()
		}
		if w.chance(0.2) {
			r["rewrite"] = map[string]any{"uri": "/v2"}
		}
	}
	if w.chance(0.3) {
		r["headers"] = map[string]any{"request": map[string]any{"set": map[string]any{"x-rev": w.pick("1", "2")}}}
	}
	return r
}

var vsTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // hosts
		doc["spec"].(map[string]any)["hosts"] = []any{w.pick(vsHosts...)}
	},
	func(w *World, doc map[string]any) { // gateways
		doc["spec"].(map[string]any)["gateways"] = w.gatewayRefs()
	},
	func(w *World, doc map[string]any) { // one rule
		spec := doc["spec"].(map[string]any)
		http, _ := spec["http"].([]any)
		if len(http) == 0 {
			spec["http"] = []any{w.httpRule()}
			return
		}
		http[w.rng.IntN(len(http))] = w.httpRule()
	},
	func(w *World, doc map[string]any) { // a destination's subset
		for _, r := range asList(doc["spec"].(map[string]any)["http"]) {
			for _, d := range asList(r.(map[string]any)["route"]) {
				d.(map[string]any)["destination"].(map[string]any)["subset"] = w.pick("v1", "v2", "missing")
			}
		}
	},
	func(w *World, doc map[string]any) { // a header value
		for _, r := range asList(doc["spec"].(map[string]any)["http"]) {
			r.(map[string]any)["headers"] = map[string]any{"response": map[string]any{"set": map[string]any{"x-rev": w.pick("1", "2", "3")}}}
		}
	},
}

func asList(v any) []any { l, _ := v.([]any); return l }

func (w *World) drHost() string {
	switch w.rng.IntN(5) {
	case 0:
		return w.pick(serviceNames...) + ".default.svc.cluster.local"
	case 1:
		return w.pick("ext.example.org", "*.wild.example.org", "db.example.org")
	case 2:
		return "*.svc.cluster.local"
	default:
		return w.pick(serviceNames...)
	}
}

func (w *World) loadBalancer() map[string]any {
	switch w.rng.IntN(7) {
	case 0:
		return map[string]any{"simple": w.pick("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH")}
	case 1:
		return map[string]any{"consistentHash": map[string]any{"httpHeaderName": w.pick("x-a", "x-b")}}
	case 2:
		return map[string]any{"consistentHash": map[string]any{"httpCookie": map[string]any{"name": w.pick("c1", "c2"), "ttl": "10s"}}}
	case 3:
		return map[string]any{"consistentHash": map[string]any{"useSourceIp": true, "maglev": map[string]any{"tableSize": 65537}}}
	case 4:
		return map[string]any{"consistentHash": map[string]any{"httpQueryParameterName": w.pick("q", "u"), "ringHash": map[string]any{"minimumRingSize": 2048}}}
	default:
		return nil
	}
}

func (w *World) trafficPolicy() map[string]any {
	tp := map[string]any{}
	if lb := w.loadBalancer(); lb != nil {
		tp["loadBalancer"] = lb
	}
	if w.chance(0.4) {
		tp["connectionPool"] = map[string]any{"http": map[string]any{"http1MaxPendingRequests": w.pick1(1, 100)}, "tcp": map[string]any{"maxConnections": w.pick1(3, 30)}}
	}
	if w.chance(0.3) {
		tp["outlierDetection"] = map[string]any{"consecutive5xxErrors": w.pick1(1, 5), "interval": "1s", "baseEjectionTime": "30s"}
	}
	if w.chance(0.2) {
		tp["tls"] = map[string]any{"mode": w.pick("SIMPLE", "MUTUAL", "DISABLE"), "credentialName": w.pick(secretNames...)}
	}
	if w.chance(0.2) {
		tp["portLevelSettings"] = []any{map[string]any{"port": map[string]any{"number": w.pick1(80, 9090)}, "loadBalancer": map[string]any{"simple": "RANDOM"}}}
	}
	return tp
}

func (w *World) subsets() []any {
	var out []any
	for _, v := range []string{"v1", "v2"} {
		if w.chance(0.8) {
			s := map[string]any{"name": v, "labels": map[string]any{"version": w.pick(versions...)}}
			if w.chance(0.2) {
				s["trafficPolicy"] = map[string]any{"loadBalancer": w.loadBalancer()}
			}
			out = append(out, s)
		}
	}
	return out
}

func (w *World) destinationRule() map[string]any {
	ns := w.pick("default", "ns-a")
	name := w.pick("dr-0", "dr-1", "dr-2", "dr-3")
	spec := map[string]any{"host": w.drHost(), "subsets": w.subsets()}
	if tp := w.trafficPolicy(); len(tp) > 0 {
		spec["trafficPolicy"] = tp
	}
	return map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": meta(ns, name), "spec": spec}
}

var drTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // the load balancer, hash key included
		spec := doc["spec"].(map[string]any)
		tp, _ := spec["trafficPolicy"].(map[string]any)
		if tp == nil {
			tp = map[string]any{}
			spec["trafficPolicy"] = tp
		}
		if lb := w.loadBalancer(); lb != nil {
			tp["loadBalancer"] = lb
		} else {
			delete(tp, "loadBalancer")
		}
	},
	func(w *World, doc map[string]any) { // subsets' labels
		doc["spec"].(map[string]any)["subsets"] = w.subsets()
	},
	func(w *World, doc map[string]any) { // host
		doc["spec"].(map[string]any)["host"] = w.drHost()
	},
	func(w *World, doc map[string]any) { // whole policy
		doc["spec"].(map[string]any)["trafficPolicy"] = w.trafficPolicy()
	},
}

func (w *World) sePorts() []any {
	var out []any
	for i := range 1 + w.rng.IntN(2) {
		out = append(out, map[string]any{"number": w.pick1(80, 443, 9090) + i, "name": w.pick("http", "https", "tcp", "grpc") + fmt.Sprint(i),
			"protocol": w.pick("HTTP", "HTTPS", "TCP", "GRPC", "TLS")})
	}
	return out
}

func (w *World) serviceEntry() map[string]any {
	ns := w.pick("default", "ns-a")
	name := w.pick("se-0", "se-1", "se-2")
	host := w.pick(seHosts...)
	spec := map[string]any{"hosts": []any{host}, "ports": w.sePorts(), "location": w.pick("MESH_EXTERNAL", "MESH_INTERNAL")}
	if strings.HasPrefix(host, "*") || w.chance(0.5) {
		spec["resolution"] = "STATIC"
		var eps []any
		for i := range 1 + w.rng.IntN(2) {
			eps = append(eps, map[string]any{"address": fmt.Sprintf("10.1.%d.%d", w.rng.IntN(3), i+1), "labels": map[string]any{"version": w.pick(versions...)}})
		}
		spec["endpoints"] = eps
	} else {
		spec["resolution"] = "DNS"
	}
	return map[string]any{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": meta(ns, name), "spec": spec}
}

var seTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // ports, names, protocols
		doc["spec"].(map[string]any)["ports"] = w.sePorts()
	},
	func(w *World, doc map[string]any) { // endpoint labels
		for _, ep := range asList(doc["spec"].(map[string]any)["endpoints"]) {
			ep.(map[string]any)["labels"] = map[string]any{"version": w.pick(versions...)}
		}
	},
}

func (w *World) servicePorts() []any {
	var out []any
	for i := range 1 + w.rng.IntN(2) {
		out = append(out, map[string]any{"name": w.pick("http", "http-web", "grpc", "tcp-db", "https") + fmt.Sprint(i),
			"port": w.pick1(80, 8080, 9090) + i, "targetPort": w.pick1(8080, 9000)})
	}
	return out
}

func (w *World) service() map[string]any {
	ns := w.pick("default", "ns-a")
	name := w.pick(serviceNames...)
	spec := map[string]any{"ports": w.servicePorts(), "selector": map[string]any{"app": name}}
	if w.chance(0.1) {
		spec["type"], spec["externalName"] = "ExternalName", "backend.example.net"
	}
	return map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": meta(ns, name), "spec": spec}
}

var serviceTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // ports, names, protocols
		doc["spec"].(map[string]any)["ports"] = w.servicePorts()
	},
	func(w *World, doc map[string]any) { // one port's name only (its protocol follows)
		ports := doc["spec"].(map[string]any)["ports"].([]any)
		ports[0].(map[string]any)["name"] = w.pick("http", "grpc", "tcp-db")
	},
}

func (w *World) endpointSlice() map[string]any {
	ns := w.pick("default", "ns-a")
	svc := w.pick(serviceNames...)
	name := svc + "-" + w.pick("x", "y")
	var eps []any
	for i := range 1 + w.rng.IntN(3) {
		ep := map[string]any{"addresses": []any{fmt.Sprintf("10.244.%d.%d", w.rng.IntN(3), i+1)},
			"conditions": map[string]any{"ready": w.chance(0.85)},
			"targetRef":  map[string]any{"kind": "Pod", "namespace": ns, "name": fmt.Sprintf("pod-%d", w.rng.IntN(4))}}
		eps = append(eps, ep)
	}
	ports := []any{map[string]any{"name": w.pick("http0", "grpc0", "tcp-db0"), "port": w.pick1(8080, 9000), "protocol": "TCP"}}
	return map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
		"metadata":    map[string]any{"namespace": ns, "name": name, "labels": map[string]any{"kubernetes.io/service-name": svc}},
		"addressType": "IPv4", "ports": ports, "endpoints": eps}
}

var sliceTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // readiness
		for _, ep := range doc["endpoints"].([]any) {
			ep.(map[string]any)["conditions"] = map[string]any{"ready": w.chance(0.7)}
		}
	},
	func(w *World, doc map[string]any) { // which pod backs an endpoint
		eps := doc["endpoints"].([]any)
		eps[w.rng.IntN(len(eps))].(map[string]any)["targetRef"].(map[string]any)["name"] = fmt.Sprintf("pod-%d", w.rng.IntN(4))
	},
	func(w *World, doc map[string]any) { // port name
		doc["ports"] = []any{map[string]any{"name": w.pick("http0", "grpc0"), "port": w.pick1(8080, 9000), "protocol": "TCP"}}
	},
}

func (w *World) pod() map[string]any {
	ns := w.pick("default", "ns-a")
	return map[string]any{"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"namespace": ns, "name": fmt.Sprintf("pod-%d", w.rng.IntN(4)),
			"labels": map[string]any{"app": w.pick(serviceNames...), "version": w.pick(versions...)}},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "app"}}}}
}

var podTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { // the version label
		doc["metadata"].(map[string]any)["labels"].(map[string]any)["version"] = w.pick(versions...)
	},
}

// Certificate material for Secrets, by name.
var pairs = map[string][2]string{
	"server":  {"server.crt", "server.key"},
	"rotated": {"server-rotated.crt", "server-rotated.key"},
	"rsa":     {"server-rsa.crt", "server-rsa.key"},
	"expired": {"expired.crt", "expired.key"},
	"other":   {"other.crt", "other.key"},
}

func b64(name string) string { return base64.StdEncoding.EncodeToString(testpki.Read(name)) }

func (w *World) secretData() map[string]any {
	data := map[string]any{}
	switch p := w.pick("server", "rotated", "rsa", "expired", "other", "mismatch", "none"); p {
	case "mismatch":
		data["tls.crt"], data["tls.key"] = b64("server.crt"), b64("other.key")
	case "none":
	default:
		data["tls.crt"], data["tls.key"] = b64(pairs[p][0]), b64(pairs[p][1])
	}
	if w.chance(0.5) {
		data["ca.crt"] = b64(w.pick("ca.crt", "untrusted-ca.crt"))
	}
	return data
}

func (w *World) secret() map[string]any {
	ns := w.pick("istio-system", "istio-system", "default", "ns-a")
	name := w.pick(secretNames...)
	if w.chance(0.2) {
		name += "-cacert"
	}
	return map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": meta(ns, name), "type": "kubernetes.io/tls", "data": w.secretData()}
}

var secretTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) { doc["data"] = w.secretData() },
}

// put decodes a document and stores it, replacing the object of the same
// key: a new version (Kubernetes mode: the same UID, a new
// resourceVersion).
func (w *World) put(doc map[string]any) resource.Key {
	obj := w.decode(doc)
	key := resource.KeyOf(obj)
	if w.opts.Kubernetes {
		w.rv++
		old, ok := w.objs[key]
		if ok {
			obj.SetUID(old.GetUID())
			obj.SetCreationTimestamp(old.GetCreationTimestamp())
		} else {
			w.uid++
			obj.SetUID(types.UID(fmt.Sprintf("uid-%d", w.uid)))
			obj.SetCreationTimestamp(metav1.NewTime(Now.Add(time.Duration(w.step) * time.Second)))
		}
		obj.SetResourceVersion(fmt.Sprint(w.rv))
		obj.SetGeneration(int64(w.rv))
	}
	w.objs[key], w.docs[key] = obj, doc
	return key
}

func (w *World) decode(doc map[string]any) resource.Object {
	js, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	objs, err := resource.DecodeJSON(js)
	if err != nil || len(objs) != 1 {
		panic(fmt.Sprintf("randconfig generated an undecodable document (%v): %s", err, js))
	}
	return objs[0]
}

// Resources returns the configuration as a provider hands it over. In
// Kubernetes mode about one unchanged object in ten is a fresh copy of
// the same version, as an informer cache may give.
func (w *World) Resources() *resource.Resources {
	res := &resource.Resources{}
	for _, key := range w.keys() {
		obj := w.objs[key]
		if w.opts.Kubernetes && w.chance(0.1) {
			obj = obj.DeepCopyObject().(resource.Object)
		}
		if err := res.Add(obj); err != nil {
			panic(err)
		}
	}
	res.Sort()
	return res
}

func (w *World) keys() []resource.Key {
	keys := make([]resource.Key, 0, len(w.objs))
	for k := range w.objs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}

// Document returns the JSON of an object, for failure messages.
func (w *World) Document(key resource.Key) string {
	js, _ := json.Marshal(w.docs[key])
	return string(js)
}

// Dump lists every object's JSON, for failure messages.
func (w *World) Dump() string {
	var b strings.Builder
	for _, k := range w.keys() {
		fmt.Fprintf(&b, "%s: %s\n", k, w.Document(k))
	}
	return b.String()
}

func clone(doc map[string]any) map[string]any {
	js, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	var out map[string]any
	if err := json.Unmarshal(js, &out); err != nil {
		panic(err)
	}
	return out
}

// Edit makes one random change and describes it.
func (w *World) Edit() string {
	w.step++
	ks := w.kinds()
	k := ks[w.rng.IntN(len(ks))]
	var existing []resource.Key
	for _, key := range w.keys() {
		if key.Kind == k.name && key.Group == k.group {
			existing = append(existing, key)
		}
	}
	op := w.rng.IntN(10)
	if len(existing) == 0 {
		op = 0
	}
	switch {
	case op <= 1: // create (or replace whatever has the generated name)
		key := w.put(k.gen(w))
		return "create " + key.String()
	case op == 2: // delete
		key := existing[w.rng.IntN(len(existing))]
		delete(w.objs, key)
		delete(w.docs, key)
		return "delete " + key.String()
	case op == 3: // delete and create again with the same name
		key := existing[w.rng.IntN(len(existing))]
		doc := w.docs[key]
		delete(w.objs, key)
		w.put(doc)
		return "re-create " + key.String()
	case op == 4: // a new version with the same content
		key := existing[w.rng.IntN(len(existing))]
		w.put(w.docs[key])
		return "touch " + key.String()
	case op == 5: // a whole new spec under the same name
		key := existing[w.rng.IntN(len(existing))]
		doc := k.gen(w)
		md := doc["metadata"].(map[string]any)
		md["namespace"], md["name"] = key.Namespace, key.Name
		w.put(doc)
		return "rewrite " + key.String()
	default: // a small change
		key := existing[w.rng.IntN(len(existing))]
		doc := clone(w.docs[key])
		t := w.rng.IntN(len(k.tweaks))
		k.tweaks[t](w, doc)
		w.put(doc)
		return fmt.Sprintf("tweak#%d %s", t, key)
	}
}

// Len is the number of objects.
func (w *World) Len() int { return len(w.objs) }
