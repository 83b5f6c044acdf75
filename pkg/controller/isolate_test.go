package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/randconfig"
	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/xds"
)

// built is what one build of a configuration published.
type built struct {
	c        *Controller
	srv      *xds.Server
	versions map[string]string // published snapshot version by class
}

// buildOnce runs the controller's build on res with a fresh controller,
// or on c when given (to see what a running controller does).
func buildOnce(t *testing.T, c *Controller, res *resource.Resources) *built {
	t.Helper()
	if c == nil {
		srv := xds.NewServer(logr.Discard(), gateway.ClassName)
		c = New(logr.Discard(), srv, nil, Options{StaticClasses: randconfig.Classes})
	}
	c.build(context.Background(), res)
	b := &built{c: c, srv: c.xds, versions: map[string]string{}}
	for _, l := range randconfig.Classes {
		class := gateway.ClassName(l)
		if snap, err := c.xds.Snapshot(class); err == nil {
			b.versions[class] = snap.Version()
		}
	}
	return b
}

func decodeYAML(t *testing.T, docs ...string) *resource.Resources {
	t.Helper()
	return testenv.Resources(t, strings.Join(docs, "\n---\n"))
}

func statusOf(c *Controller, key resource.Key) *status.Status {
	for _, st := range c.State().Result.Statuses {
		if st.Key == key {
			return st
		}
	}
	return nil
}

// otherStatuses are every status but key's, for comparing builds.
func otherStatuses(t *testing.T, c *Controller, key resource.Key) string {
	t.Helper()
	var out []*status.Status
	for _, st := range c.State().Result.Statuses {
		if st.Key != key {
			out = append(out, st)
		}
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const isolationBase = `
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
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
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
metadata: {name: good, namespace: default}
spec:
  hosts: [good.example.com]
  gateways: [istio-system/gw, istio-system/egress]
  http:
  - route: [{destination: {host: web.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-ext, namespace: team-b}
spec:
  hosts: [ext.example.com]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: ext.example.org}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext, namespace: team-b}
spec:
  host: ext.example.org
  trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 10}}}
`

// A ServiceEntry whose endpoint port is out of range: the binder does
// not look at endpoint ports, so the snapshot's validation catches it
// (ClusterLoadAssignment … port_value lte 65535). The endpoints carry no
// source metadata; their cluster's sources are the ServiceEntry and the
// DestinationRule, and only the ServiceEntry's exclusion fixes it.
const badServiceEntry = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: team-b}
spec:
  hosts: [ext.example.org]
  ports: [{number: 80, name: http}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.2, ports: {http: 70000}}]
`

// An EndpointSlice (file mode: no API server validates it) with a port out
// of range: blamed on the Service it belongs to.
const badEndpointSlice = `
apiVersion: v1
kind: Service
metadata: {name: api, namespace: team-c}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: team-c, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: http, port: 80000}]
endpoints: [{addresses: [10.1.0.1]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: team-c}
spec:
  hosts: [api.example.com]
  gateways: [istio-system/egress]
  http:
  - route: [{destination: {host: api}}]
`

// TestSafetyNetExcludesOnlyWhatEnvoyRejects: configuration the binder
// lets through but Envoy's validation rules reject is blamed on the
// resources it was made from; those alone are left out, with a status
// saying why, and everything else — other namespaces, other classes — is
// published exactly as if they did not exist. Later edits of good
// resources are still published (before, one bad resource froze all).
func TestSafetyNetExcludesOnlyWhatEnvoyRejects(t *testing.T) {
	se := resource.Key{Kind: resource.KindServiceEntry, Namespace: "team-b", Name: "ext"}
	svc := resource.Key{Kind: resource.KindService, Namespace: "team-c", Name: "api"}
	dr := resource.Key{Kind: resource.KindDestinationRule, Namespace: "team-b", Name: "ext"}

	good := buildOnce(t, nil, decodeYAML(t, isolationBase))
	if len(good.c.State().Errors) > 0 || len(good.versions) != len(randconfig.Classes) {
		t.Fatalf("the base configuration does not publish: %v", good.c.State().Errors)
	}
	// A running controller gets both bad resources at once: one for the
	// ingress class, one for the egress class.
	bad := buildOnce(t, good.c, decodeYAML(t, isolationBase, badServiceEntry, badEndpointSlice))
	if errs := bad.c.State().Errors; len(errs) > 0 {
		t.Fatalf("classes not published: %v", errs)
	}
	for key, want := range map[resource.Key]string{se: "port_value", svc: "port_value"} {
		st := statusOf(bad.c, key)
		if st == nil || st.Condition(status.Accepted).Status != "False" || st.Messages[0].Reason != status.ReasonEnvoyValidation ||
			!strings.Contains(st.Messages[0].Message, want) || !strings.Contains(st.Messages[0].Message, "65535") {
			t.Errorf("%s: status %+v, want Accepted False (%s) naming %s and the rule", key, st, status.ReasonEnvoyValidation, want)
		}
		if _, ok := bad.c.State().Excluded[key.String()]; !ok {
			t.Errorf("%s missing from State.Excluded %v", key, bad.c.State().Excluded)
		}
	}
	if st := statusOf(bad.c, dr); st == nil || st.Condition(status.Accepted).Status != "True" {
		t.Errorf("the innocent DestinationRule sharing the cluster was blamed: %+v", st)
	}
	rec := httptest.NewRecorder()
	bad.c.serveIR(rec, httptest.NewRequest("GET", "/debug/ir", nil))
	if body := rec.Body.String(); !strings.Contains(body, "excluded:") || !strings.Contains(body, "ServiceEntry team-b/ext") {
		t.Errorf("/debug/ir does not list the excluded resources:\n%.600s", body)
	}
	if len(bad.c.State().Excluded) != 2 {
		t.Errorf("excluded %v, want exactly the ServiceEntry and the Service", bad.c.State().Excluded)
	}
	// What is published is the configuration without them (the
	// EndpointSlice goes with its Service).
	ref := buildOnce(t, nil, decodeYAML(t, isolationBase, strings.Split(badEndpointSlice, "---")[2]))
	if !reflect.DeepEqual(bad.versions, ref.versions) {
		t.Errorf("published %v, the configuration without the bad resources publishes %v", bad.versions, ref.versions)
	}

	// Later edits of good resources still get through.
	edited := strings.Replace(isolationBase, "good.example.com", "better.example.com", 1)
	after := buildOnce(t, bad.c, decodeYAML(t, edited, badServiceEntry, badEndpointSlice))
	if reflect.DeepEqual(after.versions, bad.versions) || len(after.c.State().Errors) > 0 {
		t.Fatalf("an edit of a good VirtualService was not published while a bad resource exists: %v", after.c.State().Errors)
	}
	ingress, _ := after.srv.Snapshot(gateway.ClassName(randconfig.Classes[0]))
	if !routesHave(ingress, "better.example.com:80") {
		t.Error("the edited host is not in the published ingress snapshot")
	}

	// Fixing the resource brings it back.
	fixed := buildOnce(t, after.c, decodeYAML(t, edited, strings.Replace(badServiceEntry, "70000", "8080", 1)))
	if st := statusOf(fixed.c, se); st == nil || st.Condition(status.Accepted).Status != "True" || len(fixed.c.State().Excluded) != 0 {
		t.Errorf("after the fix: status %+v, excluded %v", st, fixed.c.State().Excluded)
	}
}

func routesHave(snap *xds.Snapshot, vhost string) bool {
	b, _ := json.Marshal(snap.Originals(xds.RouteType))
	return strings.Contains(string(b), vhost)
}

// An injected resource that breaks one of Envoy's rules, caught by the
// binder (limits) or by the snapshot's validation (the safety net).
type injection struct {
	name string
	key  resource.Key
	// always: the resource is broken whatever uses it (the binder's
	// checks); else only when its broken part is used.
	always bool
	doc    func(w *randconfig.World, host string) string
}

var injections = []injection{
	{"VirtualService with a 17 KB header value", resource.Key{Kind: resource.KindVirtualService, Namespace: "a-team", Name: "bad"}, true, func(_ *randconfig.World, host string) string {
		return badVS(host, `headers: {request: {set: {x-big: `+strings.Repeat("b", 17000)+`}}}`)
	}},
	{"VirtualService with a newline in a header value", resource.Key{Kind: resource.KindVirtualService, Namespace: "a-team", Name: "bad"}, true, func(_ *randconfig.World, host string) string {
		return badVS(host, `headers: {response: {add: {x-evil: "a\r\nset-cookie: x"}}}`)
	}},
	{"VirtualService with an empty header prefix", resource.Key{Kind: resource.KindVirtualService, Namespace: "a-team", Name: "bad"}, true, func(_ *randconfig.World, host string) string {
		return badVS(host, `match: [{headers: {x-user: {prefix: ""}}}]`)
	}},
	{"DestinationRule with a ring too large", resource.Key{Kind: resource.KindDestinationRule, Namespace: "a-team", Name: "bad"}, true, func(_ *randconfig.World, host string) string {
		return `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bad, namespace: a-team}
spec:
  host: "` + host + `"
  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 9000000}}}
`
	}},
	{"DestinationRule with a zero connect timeout", resource.Key{Kind: resource.KindDestinationRule, Namespace: "a-team", Name: "bad"}, true, func(_ *randconfig.World, host string) string {
		return `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bad, namespace: a-team}
spec:
  host: "` + host + `"
  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}
`
	}},
	{"ServiceEntry with an endpoint port out of range", resource.Key{Kind: resource.KindServiceEntry, Namespace: "a-team", Name: "bad"}, false, func(_ *randconfig.World, host string) string {
		return `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bad, namespace: a-team}
spec:
  hosts: ["` + host + `"]
  ports: [{number: 80, name: http0}, {number: 8080, name: http1}, {number: 9090, name: grpc0}, {number: 443, name: https0}]
  resolution: STATIC
  endpoints: [{address: 10.9.9.9, ports: {http0: 70000, http1: 70001, grpc0: 70002, https0: 70003}}]
`
	}},
}

// badVS routes host to a destination of the world through its gateways,
// with one broken rule.
func badVS(host, rule string) string {
	return `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: a-team}
spec:
  hosts: ["` + host + `"]
  gateways: [istio-system/gw-0, istio-system/gw-1, istio-system/gw-2]
  http:
  - ` + rule + `
    route: [{destination: {host: app-0.default.svc.cluster.local}}]
`
}

var (
	injectedVSHosts   = []string{"a.example.com", "b.example.com", "*.example.com", "c.example.org", "fresh.example.com"}
	injectedDestHosts = []string{"app-0.default.svc.cluster.local", "app-1.ns-a.svc.cluster.local", "ext.example.org", "db.example.org", "missing.example.net"}
)

// routedHosts are the hosts routes of res send traffic to without a
// subset and that no Kubernetes Service defines: a ServiceEntry for one of
// them is used, endpoints included.
func routedHosts(res *resource.Resources) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range gateway.Build(res, gateway.Options{Classes: randconfig.Classes}).Proxies {
		for _, c := range p.Clusters {
			if c.Subset != "" || strings.HasPrefix(c.Service, "*") || seen[c.Service] ||
				(len(c.Sources) > 0 && c.Sources[0].Kind == resource.KindService) {
				continue
			}
			seen[c.Service] = true
			out = append(out, c.Service)
		}
	}
	sort.Strings(out)
	return out
}

// TestPublishedEqualsConfigWithoutInvalidResource is the isolation
// property: for random valid configurations (internal/randconfig: Gateways,
// VirtualServices, DestinationRules, ServiceEntries, Services,
// EndpointSlices with Pods, Secrets; file and Kubernetes flavours) with one
// injected resource that breaks one of Envoy's rules in one of several
// ways, every class publishes; whenever the injected resource is rejected
// (the binder's checks always reject theirs, the snapshot's validation
// whenever the broken part is used), the published snapshots equal those
// of the configuration without it, every other resource's status is the
// same as without it, and its own is Accepted False saying why.
//
// PORTICO_ISOLATION_CASES sets the number of configurations (default 300;
// -short: 40); PORTICO_ISOLATION_BASE_SEED the first seed.
func TestPublishedEqualsConfigWithoutInvalidResource(t *testing.T) {
	cases := 300
	if v, err := strconv.Atoi(os.Getenv("PORTICO_ISOLATION_CASES")); err == nil && v > 0 {
		cases = v
	}
	if testing.Short() {
		cases = 40
	}
	base := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("PORTICO_ISOLATION_BASE_SEED"), 10, 64); err == nil {
		base = v
	}
	t.Logf("%d configurations, seeds from %d (PORTICO_ISOLATION_BASE_SEED reproduces)", cases, base)
	rejected := map[string]int{}
	for i := range cases {
		seed := base + uint64(i)
		w := randconfig.New(seed, randconfig.Options{Kubernetes: seed%2 == 1})
		for range int(seed % 7) {
			w.Edit()
		}
		inj := injections[int(seed/2)%len(injections)]
		clean := w.Resources()
		host := injectedVSHosts[int(seed/3)%len(injectedVSHosts)]
		switch inj.key.Kind {
		case resource.KindServiceEntry:
			// Its broken part is its endpoints: give it a host routes use
			// (edit the world until it has one).
			routed := routedHosts(clean)
			for range 30 {
				if len(routed) > 0 {
					break
				}
				w.Edit()
				clean = w.Resources()
				routed = routedHosts(clean)
			}
			if len(routed) == 0 {
				routed = injectedDestHosts
			}
			host = routed[int(seed/3)%len(routed)]
		case resource.KindDestinationRule:
			host = injectedDestHosts[int(seed/3)%len(injectedDestHosts)]
		}
		withBad, err := resource.FromObjects(append(clean.All(), decodeYAML(t, inj.doc(w, host)).All()...))
		if err != nil {
			t.Fatal(err)
		}

		ref := buildOnce(t, nil, clean)
		if errs := ref.c.State().Errors; len(errs) > 0 {
			t.Fatalf("seed %d: the random configuration itself does not publish: %v\n%s", seed, errs, w.Dump())
		}
		got := buildOnce(t, nil, withBad)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d, injected %s (host %s): %s\nconfiguration:\n%s", seed, inj.name, host, fmt.Sprintf(format, args...), w.Dump())
		}
		if errs := got.c.State().Errors; len(errs) > 0 {
			fail("classes not published: %v", errs)
		}
		st := statusOf(got.c, inj.key)
		if st == nil {
			fail("the injected resource has no status")
		}
		rejectedNow := st.Condition(status.Accepted).Status == "False"
		if inj.always && !rejectedNow {
			fail("the injected resource was not rejected: %+v", st)
		}
		// A resource whose broken part nothing uses (a ServiceEntry whose
		// endpoints no route reaches) is valid where it is: it is not
		// rejected, and it may take part, e.g. win a host.
		if rejectedNow {
			if !reflect.DeepEqual(got.versions, ref.versions) {
				fail("published %v, the configuration without it publishes %v", got.versions, ref.versions)
			}
			if g, r := otherStatuses(t, got.c, inj.key), otherStatuses(t, ref.c, inj.key); g != r {
				fail("other resources' statuses differ:\n%s", firstDifference(r, g))
			}
			m := st.Messages[0]
			if m.Code != status.SchemaValidationError || (m.Reason != status.ReasonInvalidSpec && m.Reason != status.ReasonEnvoyValidation) {
				fail("status %+v does not say why", m)
			}
			rejected[inj.name]++
		}
	}
	t.Logf("rejected injections by kind: %v", rejected)
	for _, inj := range injections {
		if rejected[inj.name] == 0 && cases >= 40 {
			t.Errorf("no %q was ever rejected: that kind went untested", inj.name)
		}
	}
}

// firstDifference shows the lines around the first difference of two
// texts.
func firstDifference(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(wl) && i < len(gl) && wl[i] == gl[i] {
		i++
	}
	from := max(0, i-10)
	return fmt.Sprintf("--- without it:\n%s\n+++ with it:\n%s",
		strings.Join(wl[from:min(len(wl), i+10)], "\n"), strings.Join(gl[from:min(len(gl), i+10)], "\n"))
}
