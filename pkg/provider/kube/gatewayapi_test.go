package kube

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/resource"
)

const gatewayAPIYAML = `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system, generation: 1}
spec:
  gatewayClassName: portico
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: https
    port: 443
    protocol: HTTPS
    tls: {certificateRefs: [{name: local-cert}, {name: shared-cert, namespace: certs}, {kind: Other, group: example.com, name: not-a-secret}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: gw, namespace: istio-system}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{name: gw, namespace: istio-system}]
  rules: [{backendRefs: [{name: mysql, port: 3306}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: grant, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: istio-system}]
  to: [{group: "", kind: Secret}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: web-tls, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  validation:
    hostname: web.example.com
    caCertificateRefs: [{group: "", kind: ConfigMap, name: web-ca}, {group: "", kind: Secret, name: web-ca-secret}]
`

func gatewayAPIObjects(t *testing.T, y string) []client.Object {
	t.Helper()
	var out []client.Object
	for _, doc := range strings.Split(y, "\n---\n") {
		out = append(out, istioObject(t, doc))
	}
	return out
}

// The Gateway API kinds are read from the cache next to the Istio ones
// (an Istio Gateway and a Gateway API Gateway of the same name are two
// objects); Namespaces (labels only) come with them, and not without; a
// Gateway API object Portico cannot decode is reported invalid under its
// group-qualified key.
func TestSnapshotReadsGatewayAPIKinds(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default", UID: "ns-default", Labels: map[string]string{"team": "web"}}}
	p, c := fakeProvider(t, ns, istioObject(t, gatewayYAML))
	ctx := context.Background()
	res, err := p.snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Namespaces) != 0 || res.HasGatewayAPI() {
		t.Fatalf("no Gateway API objects, yet %d namespaces", len(res.Namespaces))
	}
	for _, o := range gatewayAPIObjects(t, gatewayAPIYAML) {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	bad := istioObject(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bad, namespace: default}
spec: {gatewayClassName: portico, listeners: [{name: http, port: eighty, protocol: HTTP}]}
`)
	if err := c.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	res, err = p.snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Gateways) != 1 || len(res.KubeGateways) != 1 || len(res.GatewayClasses) != 1 || len(res.HTTPRoutes) != 1 ||
		len(res.TCPRoutes) != 1 || len(res.ReferenceGrants) != 1 || len(res.BackendTLSPolicies) != 1 {
		t.Fatalf("snapshot: %d istio gateways, %d gateways, %d classes, %d httproutes, %d tcproutes, %d grants, %d policies",
			len(res.Gateways), len(res.KubeGateways), len(res.GatewayClasses), len(res.HTTPRoutes), len(res.TCPRoutes),
			len(res.ReferenceGrants), len(res.BackendTLSPolicies))
	}
	if gw := res.KubeGateways[0]; gw.Name != "gw" || len(gw.Spec.Listeners) != 2 || gw.Spec.Listeners[1].Port != 443 {
		t.Errorf("Gateway API Gateway: %+v", gw.Spec)
	}
	if res.GatewayClasses[0].Spec.ControllerName != "portico.io/gateway-controller" || res.GatewayClasses[0].Namespace != "" {
		t.Errorf("GatewayClass: %+v", res.GatewayClasses[0])
	}
	if len(res.Namespaces) != 1 || res.Namespaces[0].Labels["team"] != "web" {
		t.Fatalf("namespaces: %v", res.Namespaces)
	}
	want := resource.Key{Group: resource.GatewayAPIGroup, Kind: resource.KindGateway, Namespace: "default", Name: "bad"}
	if len(res.Invalid) != 1 || res.Invalid[0].Key != want || !strings.Contains(res.Invalid[0].Error, "port") {
		t.Fatalf("invalid: %+v", res.Invalid)
	}
	// An unchanged Namespace keeps its identity; an edited one does not.
	first := res.Namespaces[0]
	res, _ = p.snapshot(ctx)
	if res.Namespaces[0] != first {
		t.Error("an unchanged Namespace was converted again")
	}
	ns.Labels["team"] = "api"
	if err := c.Update(ctx, ns); err != nil {
		t.Fatal(err)
	}
	res, _ = p.snapshot(ctx)
	if res.Namespaces[0] == first || res.Namespaces[0].Labels["team"] != "api" {
		t.Errorf("an edited Namespace: %v", res.Namespaces[0].Labels)
	}
}

// Only the Secrets and ConfigMaps Gateway API objects name are watched:
// listener certificates (in another namespace too), CA bundles of
// BackendTLSPolicies by kind; references to other kinds are not.
func TestReferencedGatewayAPIObjects(t *testing.T) {
	res := testenv.Resources(t, gatewayAPIYAML)
	if got, want := strings.Join(sortedKeys(referencedSecrets(res)), " "), "certs/shared-cert default/web-ca-secret istio-system/local-cert"; got != want {
		t.Errorf("referenced secrets %q, want %q", got, want)
	}
	if got, want := strings.Join(sortedKeys(referencedConfigMaps(res)), " "), "default/web-ca"; got != want {
		t.Errorf("referenced configmaps %q, want %q", got, want)
	}
}

// config/deploy's ClusterRole lets the controller watch every Gateway API
// kind it reads and write every status it writes, and provision proxies:
// without it the controller fails at start in a real cluster.
func TestRBACCoversGatewayAPI(t *testing.T) {
	b, err := os.ReadFile("../../../config/deploy/controller/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.ClusterRole
	docs := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var r rbacv1.ClusterRole
		if err := sigsyaml.Unmarshal(doc, &r); err == nil && r.Kind == "ClusterRole" {
			role = &r
		}
	}
	if role == nil {
		t.Fatal("no ClusterRole in rbac.yaml")
	}
	allows := func(group, res, verb string) bool {
		for _, r := range role.Rules {
			if contains(r.APIGroups, group) && contains(r.Resources, res) && contains(r.Verbs, verb) {
				return true
			}
		}
		return false
	}
	for _, kind := range gatewayAPIKinds {
		plural := strings.ToLower(kind) + "s"
		if kind == resource.KindBackendTLSPolicy {
			plural = "backendtlspolicies"
		} else if kind == resource.KindGatewayClass {
			plural = "gatewayclasses"
		}
		for _, verb := range []string{"get", "list", "watch"} {
			if !allows(resource.GatewayAPIGroup, plural, verb) {
				t.Errorf("the controller may not %s %s", verb, plural)
			}
		}
		if kind != resource.KindReferenceGrant && !allows(resource.GatewayAPIGroup, plural+"/status", "patch") {
			t.Errorf("the controller may not patch %s/status", plural)
		}
	}
	for _, need := range []struct{ group, res string }{{"apps", "deployments"}, {"", "services"}, {"", "serviceaccounts"},
		{"rbac.authorization.k8s.io", "roles"}, {"rbac.authorization.k8s.io", "rolebindings"}} {
		for _, verb := range []string{"get", "list", "watch", "create", "update", "delete"} {
			if !allows(need.group, need.res, verb) {
				t.Errorf("the controller may not %s %s (provisioning)", verb, need.res)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
