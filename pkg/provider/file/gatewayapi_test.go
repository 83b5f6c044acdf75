package file

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/resource"
)

// gatewayAPIDoc renders one object of a kind with a value v that changes
// its content but not its key. Istio's Gateway and the Gateway API's
// Gateway deliberately share namespace and name.
func gatewayAPIDoc(kind string, v int) string {
	switch kind {
	case "IstioGateway":
		return fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: edge}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: %d, name: http, protocol: HTTP}, hosts: ['*']}]\n", 8000+v)
	case "Gateway":
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: edge}\nspec:\n  gatewayClassName: portico\n  listeners: [{name: http, port: %d, protocol: HTTP}]\n", 9000+v)
	case "GatewayClass":
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec:\n  controllerName: portico.io/gateway-controller\n  description: v%d\n", v)
	case "HTTPRoute":
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: edge}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [h%d.example.com]\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n", v)
	case "GRPCRoute":
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: rpc, namespace: edge}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [g%d.example.com]\n", v)
	case "TLSRoute":
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: tls, namespace: edge}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [t%d.example.com]\n  rules: [{backendRefs: [{name: tls, port: 443}]}]\n", v)
	case "TCPRoute":
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: db, namespace: edge}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: mysql, port: %d}]}]\n", 3000+v)
	case "UDPRoute":
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: dns, namespace: edge}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: dns, port: %d}]}]\n", 5000+v)
	case "ReferenceGrant":
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: grant, namespace: backends}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: edge%d}]\n  to: [{group: '', kind: Service}]\n", v)
	case "BackendTLSPolicy":
		return fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {name: tls, namespace: edge}\nspec:\n  targetRefs: [{group: '', kind: Service, name: web}]\n  validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}], hostname: b%d.example.com}\n", v)
	case "Namespace":
		return fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: edge, labels: {v: v%d}}\n", v)
	case "ConfigMap":
		return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: edge}\ndata: {ca.crt: v%d}\n", v)
	}
	panic(kind)
}

var gatewayAPIKinds = []string{"IstioGateway", "Gateway", "GatewayClass", "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute",
	"ReferenceGrant", "BackendTLSPolicy", "Namespace", "ConfigMap"}

// TestGatewayAPIKindsPatchedLikeTheRest drives random edits through files
// holding every Gateway API kind (and an Istio Gateway with the Gateway
// API Gateway's namespace and name, in another file): after every step
// the snapshot equals a fresh load, edits that keep a file's objects are
// patched in place rather than merged again, and no earlier snapshot
// changes (the lists a patch touches are copies, one per group and kind:
// keyed by kind alone, the two Gateway lists shared one copy flag and an
// edit to both in one batch wrote into the previous snapshot).
func TestGatewayAPIKindsPatchedLikeTheRest(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	dir := t.TempDir()
	render := func(r *resource.Resources) string {
		b, err := yaml.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return regexp.MustCompile(`(?m)^\s*generation: \d+\n`).ReplaceAllString(string(b), "")
	}
	// One file per kind; values per kind.
	vals := map[string]int{}
	file := func(kind string) string { return filepath.Join(dir, strings.ToLower(kind)+".yaml") }
	write := func(kind string) {
		if err := os.WriteFile(file(kind), []byte(gatewayAPIDoc(kind, vals[kind])), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range gatewayAPIKinds {
		write(k)
	}
	p := New(dir, logr.Discard(), Options{})
	p.reload(nil)
	snap := p.Snapshot()
	if len(snap.Gateways) != 1 || len(snap.KubeGateways) != 1 || len(snap.GatewayClasses) != 1 || len(snap.HTTPRoutes) != 1 ||
		len(snap.GRPCRoutes) != 1 || len(snap.TLSRoutes) != 1 || len(snap.TCPRoutes) != 1 || len(snap.UDPRoutes) != 1 ||
		len(snap.ReferenceGrants) != 1 || len(snap.BackendTLSPolicies) != 1 || len(snap.Namespaces) != 1 || len(snap.ConfigMaps) != 1 || len(snap.Invalid) != 0 {
		t.Fatalf("initial snapshot:\n%s", render(snap))
	}
	// Edit both Gateways in one batch first: the case that broke.
	steps := [][]string{{"IstioGateway", "Gateway"}}
	for range 200 {
		n := 1 + rng.IntN(3)
		var batch []string
		for range n {
			batch = append(batch, gatewayAPIKinds[rng.IntN(len(gatewayAPIKinds))])
		}
		steps = append(steps, batch)
	}
	for i, batch := range steps {
		prev, prevText := snap, render(snap)
		var paths []string
		for _, k := range batch {
			vals[k]++
			write(k)
			paths = append(paths, file(k))
		}
		merges := p.merges
		p.reload(paths)
		snap = p.Snapshot()
		if p.merges != merges {
			t.Fatalf("step %d (%v): edits keeping every file's objects were merged again instead of patched", i, batch)
		}
		if got := render(prev); got != prevText {
			t.Fatalf("step %d (%v): the previous snapshot changed:\n%s\nwas:\n%s", i, batch, got, prevText)
		}
		q := New(dir, logr.Discard(), Options{})
		q.reload(nil)
		if got, want := render(snap), render(q.Snapshot()); got != want {
			t.Fatalf("step %d (%v): snapshot differs from a fresh load:\n%s\nwant:\n%s", i, batch, got, want)
		}
	}
	if got := snap.KubeGateways[0].Spec.Listeners[0].Port; int(got) != 9000+vals["Gateway"] {
		t.Errorf("Gateway API Gateway port %d, want %d", got, 9000+vals["Gateway"])
	}
	if got := snap.Gateways[0].Spec.Servers[0].Port.Number; int(got) != 8000+vals["IstioGateway"] {
		t.Errorf("Istio Gateway port %d, want %d", got, 8000+vals["IstioGateway"])
	}
}
