package xds_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds"
)

const sharedHost = `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: team-a}
spec:
  hosts: [shared.example.com]
  gateways: [istio-system/gw]
  http:
  - name: a-api
    match: [{uri: {prefix: /a}}]
    route: [{destination: {host: web.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: team-b}
spec:
  hosts: [shared.example.com, other.example.com]
  gateways: [istio-system/gw]
  http:
  - name: b-api
    route: [{destination: {host: web.example.com}}]
`

func translateYAML(t *testing.T, src string) *translate.Resources {
	t.Helper()
	objs, errs := resource.Decode([]byte(src), "test")
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	res, err := resource.FromObjects(objs)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := translate.Translate(gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}}).Proxy(ingress), translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestInvalidSnapshotNamesEveryCulprit: a snapshot breaking Envoy's rules
// in several places reports each one, blamed on the innermost failing
// part that names its sources — a route of a virtual host two
// VirtualServices share is blamed on its own VirtualService only — with
// the field in Envoy's spelling and the rule.
func TestInvalidSnapshotNamesEveryCulprit(t *testing.T) {
	res := translateYAML(t, sharedHost)
	rc := proto.Clone(res.Routes[0]).(*routev3.RouteConfiguration)
	var shared, other *routev3.VirtualHost
	for _, vh := range rc.VirtualHosts {
		switch vh.Name {
		case "shared.example.com:80":
			shared = vh
		case "other.example.com:80":
			other = vh
		}
	}
	if shared == nil || other == nil || len(shared.Routes) != 2 {
		t.Fatalf("unexpected translation: %v", rc)
	}
	for _, r := range shared.Routes {
		if r.Name == "b-api" {
			r.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-big", Value: strings.Repeat("v", 17000)}}}
		}
	}
	other.Domains = nil // a virtual host needs a domain
	res.Routes[0] = rc
	res.Clusters[0] = proto.Clone(res.Clusters[0]).(*clusterv3.Cluster)
	res.Clusters[0].ConnectTimeout = durationpb.New(-time.Second)

	_, _, err := xds.NewSnapshot(res, nil)
	var invalid *xds.InvalidError
	if !errors.As(err, &invalid) {
		t.Fatalf("want an *InvalidError, got %v", err)
	}
	want := []struct {
		typ, where, sources, path, rule string
	}{
		{resourcev3.ClusterType, "", "ServiceEntry/default/web", "connect_timeout", "greater than 0s"},
		{resourcev3.RouteType, "virtual host shared.example.com:80, route b-api", "VirtualService/team-b/b", "request_headers_to_add[0].header.value", "at most 16384 bytes"},
		{resourcev3.RouteType, "virtual host other.example.com:80", "VirtualService/team-b/b", "domains", "at least 1 item"},
	}
	if len(invalid.Problems) != len(want) {
		t.Fatalf("%d problems, want %d: %v", len(invalid.Problems), len(want), err)
	}
	for i, w := range want {
		p := invalid.Problems[i]
		if p.Type != w.typ || p.Where != w.where || strings.Join(p.Sources, ",") != w.sources || p.Path != w.path || !strings.Contains(p.Rule, w.rule) {
			t.Errorf("problem %d: %+v\nwant %+v", i, p, w)
		}
	}
	if msg := err.Error(); !strings.Contains(msg, "route b-api (from VirtualService/team-b/b)") {
		t.Errorf("the error does not name the route and its source: %s", msg)
	}
}
