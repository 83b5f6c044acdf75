// Package scale generates large, realistic configurations for benchmarks:
// N VirtualServices with two or three HTTP routes each, a DestinationRule
// with two subsets per service, and the Services, EndpointSlices and Pods
// behind them, spread over up to ten Gateways (HTTP 80 and HTTPS 443 with a
// credentialName Secret). The same objects serve the Go benchmarks
// (decoded), the file provider (YAML files) and the API server (applied).
package scale

import (
	"fmt"
	"strings"

	"github.com/portico-gateway/portico/internal/testpki"
	"github.com/portico-gateway/portico/pkg/resource"
)

// Options size a configuration.
type Options struct {
	VirtualServices int
	// Gateways defaults to one per 100 VirtualServices, between 1 and 10.
	Gateways int
	// Namespaces for the services (default 10).
	Namespaces int
}

func (o Options) gateways() int {
	if o.Gateways > 0 {
		return o.Gateways
	}
	return max(1, min(10, (o.VirtualServices+99)/100))
}

func (o Options) namespaces() int {
	if o.Namespaces > 0 {
		return o.Namespaces
	}
	return 10
}

// Routes is how many HTTP routes the VirtualServices hold in all.
func (o Options) Routes() int {
	n := 0
	for i := 0; i < o.VirtualServices; i++ {
		n += routesOf(i)
	}
	return n
}

func routesOf(i int) int { return 2 + (i+1)%2 }

// VirtualServicesForRoutes returns how many VirtualServices hold about
// routes HTTP routes.
func VirtualServicesForRoutes(routes int) int { return max(1, routes*2/5) }

// Host is the host VirtualService i serves.
func (o Options) Host(i int) string {
	return fmt.Sprintf("app-%d.gw-%d.example.com", i, i%o.gateways())
}

// Namespace is where VirtualService i and its service live.
func (o Options) Namespace(i int) string { return fmt.Sprintf("ns-%d", i%o.namespaces()) }

// Document is one generated object.
type Document struct {
	Kind, Namespace, Name string
	YAML                  string
}

// Shared returns the Gateways and their certificate Secret.
func (o Options) Shared() []Document {
	cert, key := testpki.Read("server.crt"), testpki.Read("server.key")
	docs := []Document{{Kind: "Secret", Namespace: "istio-system", Name: "gateway-cert", YAML: fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: gateway-cert, namespace: istio-system}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
`, b64(cert), b64(key))}}
	for g := 0; g < o.gateways(); g++ {
		docs = append(docs, Document{Kind: "Gateway", Namespace: "istio-system", Name: fmt.Sprintf("gw-%d", g), YAML: fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw-%[1]d, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http-%[1]d, protocol: HTTP}
    hosts: ["*/*.gw-%[1]d.example.com"]
  - port: {number: 443, name: https-%[1]d, protocol: HTTPS}
    hosts: ["*/*.gw-%[1]d.example.com"]
    tls: {mode: SIMPLE, credentialName: gateway-cert}
`, g)})
	}
	return docs
}

// Service returns VirtualService i and what it routes to: a
// DestinationRule, a Service, its EndpointSlice and two Pods. The routes
// change with rev, so a benchmark can edit one VirtualService.
func (o Options) Service(i, rev int) []Document {
	ns, name := o.Namespace(i), fmt.Sprintf("app-%d", i)
	third := ""
	if routesOf(i) == 3 {
		third = fmt.Sprintf(`
  - route:
    - destination: {host: %[1]s, subset: v1}
      weight: 90
    - destination: {host: %[1]s, subset: v2}
      weight: 10
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}`, name)
	}
	ip := func(v int) string { return fmt.Sprintf("10.%d.%d.%d", 100+v, (i/250)%250, i%250+1) }
	return []Document{
		{Kind: "VirtualService", Namespace: ns, Name: name, YAML: fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  hosts: [%[3]s]
  gateways: [istio-system/gw-%[4]d]
  http:
  - match:
    - uri: {prefix: /api}
      headers: {x-canary: {exact: "true"}}
    route: [{destination: {host: %[1]s, subset: v2}}]
    headers: {response: {set: {x-revision: "%[5]d"}}}
  - match: [{uri: {prefix: /static}}]
    route: [{destination: {host: %[1]s, subset: v1}}]
    timeout: 5s%[6]s
`, name, ns, o.Host(i), i%o.gateways(), rev, third)},
		{Kind: "DestinationRule", Namespace: ns, Name: name, YAML: fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  host: %[1]s
  trafficPolicy:
    connectionPool: {http: {http1MaxPendingRequests: 100}}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`, name, ns)},
		{Kind: "Service", Namespace: ns, Name: name, YAML: fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  selector: {app: %[1]s}
  ports: [{name: http, port: 80, targetPort: 8080}]
`, name, ns)},
		{Kind: "EndpointSlice", Namespace: ns, Name: name + "-x", YAML: fmt.Sprintf(`apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s-x, namespace: %[2]s, labels: {kubernetes.io/service-name: %[1]s}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [%[3]s]
  conditions: {ready: true}
  targetRef: {kind: Pod, namespace: %[2]s, name: %[1]s-v1}
- addresses: [%[4]s]
  conditions: {ready: true}
  targetRef: {kind: Pod, namespace: %[2]s, name: %[1]s-v2}
`, name, ns, ip(1), ip(2))},
		{Kind: "Pod", Namespace: ns, Name: name + "-v1", YAML: pod(name, ns, "v1")},
		{Kind: "Pod", Namespace: ns, Name: name + "-v2", YAML: pod(name, ns, "v2")},
	}
}

func pod(app, ns, version string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[1]s-%[3]s, namespace: %[2]s, labels: {app: %[1]s, version: %[3]s}}
spec:
  containers: [{name: app, image: app}]
`, app, ns, version)
}

// All returns every document of the configuration.
func (o Options) All() []Document {
	docs := o.Shared()
	for i := 0; i < o.VirtualServices; i++ {
		docs = append(docs, o.Service(i, 0)...)
	}
	return docs
}

// Join renders documents as one YAML stream.
func Join(docs []Document) string {
	var b strings.Builder
	for i, d := range docs {
		if i > 0 {
			b.WriteString("---\n")
		}
		b.WriteString(d.YAML)
	}
	return b.String()
}

// Resources decodes the whole configuration, as a provider would.
func (o Options) Resources() (*resource.Resources, error) {
	return Decode(o.All())
}

// Decode reads documents into a snapshot.
func Decode(docs []Document) (*resource.Resources, error) {
	res := &resource.Resources{}
	for _, d := range docs {
		objs, err := resource.DecodeDocument([]byte(d.YAML))
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", d.Kind, d.Namespace, d.Name, err)
		}
		for _, obj := range objs {
			if err := res.Add(obj); err != nil {
				return nil, err
			}
		}
	}
	res.Sort()
	return res, nil
}
