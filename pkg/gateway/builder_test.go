package gateway_test

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
)

// TestBuilderMatchesBuild: a Builder reusing conversions across a series
// of edits produces exactly what a fresh Build produces for each snapshot
// — including when what a VirtualService depends on (a DestinationRule's
// subsets, a Service's ports, the Service itself) changes under it.
func TestBuilderMatchesBuild(t *testing.T) {
	o := scale.Options{VirtualServices: 12}
	decode := func(docs []scale.Document) *resource.Resources {
		res, err := scale.Decode(docs)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	base := decode(o.All())
	// Each step derives a snapshot from the previous, replacing or removing
	// objects as a provider would (unchanged objects keep their pointers).
	replace := func(prev *resource.Resources, docs []scale.Document, drop func(resource.Object) bool) *resource.Resources {
		next := &resource.Resources{}
		add := decode(docs)
		keys := map[resource.Key]bool{}
		for _, obj := range add.All() {
			keys[resource.KeyOf(obj)] = true
			next.Add(obj)
		}
		for _, obj := range prev.All() {
			if !keys[resource.KeyOf(obj)] && (drop == nil || !drop(obj)) {
				next.Add(obj)
			}
		}
		next.Sort()
		return next
	}
	svc3 := o.Service(3, 0)
	steps := []struct {
		name string
		next func(*resource.Resources) *resource.Resources
	}{
		{"one VirtualService edited", func(r *resource.Resources) *resource.Resources { return replace(r, o.Service(2, 1)[:1], nil) }},
		{"a DestinationRule loses a subset", func(r *resource.Resources) *resource.Resources {
			dr := svc3[1]
			dr.YAML = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: app-3, namespace: ` + o.Namespace(3) + `}
spec:
  host: app-3
  subsets: [{name: v1, labels: {version: v1}}]
`
			return replace(r, []scale.Document{dr}, nil)
		}},
		{"a Service changes its port", func(r *resource.Resources) *resource.Resources {
			s := o.Service(4, 0)[2]
			s.YAML = `apiVersion: v1
kind: Service
metadata: {name: app-4, namespace: ` + o.Namespace(4) + `}
spec:
  ports: [{name: http, port: 8081}, {name: grpc, port: 9090}]
`
			return replace(r, []scale.Document{s}, nil)
		}},
		{"a Service is deleted", func(r *resource.Resources) *resource.Resources {
			return replace(r, nil, func(obj resource.Object) bool {
				return resource.KindOf(obj) == resource.KindService && obj.GetName() == "app-5"
			})
		}},
		{"a VirtualService with sourceLabels appears", func(r *resource.Resources) *resource.Resources {
			return replace(r, []scale.Document{{Kind: "VirtualService", Namespace: "default", Name: "labelled", YAML: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: labelled, namespace: default}
spec:
  hosts: [labelled.gw-0.example.com]
  gateways: [istio-system/gw-0]
  http:
  - match: [{sourceLabels: {istio: ingressgateway}}]
    route: [{destination: {host: app-0.` + o.Namespace(0) + `.svc.cluster.local, subset: v1}}]
`}}, nil)
		}},
		{"an EndpointSlice changes", func(r *resource.Resources) *resource.Resources {
			es := o.Service(6, 0)[3]
			es.YAML = strings.Replace(es.YAML, "addresses: [", "addresses: [10.99.0.1, ", 1)
			return replace(r, []scale.Document{es}, nil)
		}},
		{"a Pod's labels change", func(r *resource.Resources) *resource.Resources {
			pod := o.Service(7, 0)[5]
			pod.YAML = strings.Replace(pod.YAML, "version: v2", "version: v1", 1)
			return replace(r, []scale.Document{pod}, nil)
		}},
		{"a DestinationRule's policy changes", func(r *resource.Resources) *resource.Resources {
			dr := o.Service(8, 0)[1]
			dr.YAML = strings.Replace(dr.YAML, "http1MaxPendingRequests: 100", "http1MaxPendingRequests: 7", 1)
			return replace(r, []scale.Document{dr}, nil)
		}},
		{"a DestinationRule gains a consistent-hash load balancer", func(r *resource.Resources) *resource.Resources {
			dr := o.Service(9, 0)[1]
			dr.YAML = strings.Replace(dr.YAML, "connectionPool:", "loadBalancer: {consistentHash: {httpHeaderName: x-a}}\n    connectionPool:", 1)
			return replace(r, []scale.Document{dr}, nil)
		}},
		{"the consistent-hash header changes (routes read the load balancer)", func(r *resource.Resources) *resource.Resources {
			dr := o.Service(9, 0)[1]
			dr.YAML = strings.Replace(dr.YAML, "connectionPool:", "loadBalancer: {consistentHash: {httpHeaderName: x-b}}\n    connectionPool:", 1)
			return replace(r, []scale.Document{dr}, nil)
		}},
		{"nothing changed", func(r *resource.Resources) *resource.Resources { return r }},
	}
	classes := []map[string]string{{"istio": "ingressgateway"}, {"istio": "ingressgateway", "tier": "edge"}}
	render := func(r *gateway.Result) string {
		b, err := yaml.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	builder := gateway.NewBuilder()
	res := base
	builder.Build(res, gateway.Options{Classes: classes})
	for _, step := range steps {
		res = step.next(res)
		got := render(builder.Build(res, gateway.Options{Classes: classes}))
		want := render(gateway.Build(res, gateway.Options{Classes: classes}))
		if got != want {
			t.Errorf("%s: the Builder's result differs from a fresh Build", step.name)
		}
	}
}
