package resource

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
)

func TestDecodeReportsFieldPaths(t *testing.T) {
	cases := []struct {
		name, yaml, field, msg string
	}{
		{"unknown field with suggestion", "spec:\n  hosts: [a]\n  http:\n  - route: [{destination: {hots: x}}]\n",
			"spec.http[0].route[0].destination.hots", `did you mean "host"`},
		{"wrong type", "spec:\n  hosts: [a]\n  http:\n  - retries: {attempts: two}\n", "spec.http[0].retries.attempts", "expected an integer"},
		{"bad duration", "spec:\n  hosts: [a]\n  http:\n  - timeout: 5 seconds\n", "spec.http[0].timeout", "invalid duration"},
		{"bad enum", "spec:\n  hosts: [a]\n  http:\n  - redirect: {derivePort: SOMETIMES}\n", "spec.http[0].redirect.derivePort", "unknown value"},
		{"two oneof members", "spec:\n  hosts: [a]\n  http:\n  - match: [{uri: {exact: /a, prefix: /b}}]\n", "spec.http[0].match[0].uri", "only one of"},
		{"top level", "spex: {}\n", "spex", "unknown field"},
	}
	for _, c := range cases {
		doc := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: ns}\n" + c.yaml
		_, errs := Decode([]byte(doc), "f.yaml")
		if len(errs) != 1 {
			t.Errorf("%s: %d errors", c.name, len(errs))
			continue
		}
		e := errs[0]
		if !strings.HasPrefix(e.Field, strings.Split(c.field, "[")[0]) || !strings.Contains(e.Error(), c.field) || !strings.Contains(e.Error(), c.msg) {
			t.Errorf("%s: %v (want field %s, %q)", c.name, e, c.field, c.msg)
		}
		if e.Key != (Key{Kind: "VirtualService", Namespace: "ns", Name: "vs"}) || e.Source != "f.yaml" {
			t.Errorf("%s: key %v source %s", c.name, e.Key, e.Source)
		}
	}
}

func TestDecodeAcceptsWhatIstioUsersWrite(t *testing.T) {
	doc := `apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: rating
spec:
  host: rating
  trafficPolicy:
    connectionPool:
      http: {http1MaxPendingRequests: 3, maxRequestsPerConnection: 3}
      tcp: {maxConnections: 3, connect_timeout: 250ms}
    outlierDetection: {baseEjectionTime: 3m, consecutive5xxErrors: 1, interval: 1s, maxEjectionPercent: 100}
    loadBalancer: {simple: LEAST_REQUEST}
---
# comment-only document
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ignored}
`
	objs, errs := Decode([]byte(doc), "dr.yaml")
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	if len(objs) != 1 {
		t.Fatalf("got %d objects, want 1 (ServiceAccounts are skipped)", len(objs))
	}
	dr := objs[0]
	if dr.GetNamespace() != "default" {
		t.Errorf("namespace defaults to default, got %q", dr.GetNamespace())
	}
	var spec *networkingapi.DestinationRule = &dr.(*drType).Spec
	if got := spec.TrafficPolicy.OutlierDetection.BaseEjectionTime.AsDuration().String(); got != "3m0s" {
		t.Errorf("baseEjectionTime = %s", got)
	}
	if got := spec.TrafficPolicy.ConnectionPool.Tcp.ConnectTimeout.AsDuration().String(); got != "250ms" {
		t.Errorf("snake_case field: connectTimeout = %s", got)
	}
}

func TestSplitDocumentsLines(t *testing.T) {
	docs := SplitDocuments([]byte("a: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n--- # trailing\nd: 4\n"))
	if len(docs) != 3 || docs[0].Line != 1 || docs[1].Line != 5 || docs[1].Index != 2 || docs[2].Line != 8 {
		t.Fatalf("%+v", docs)
	}
}

type drType = networking.DestinationRule

func TestDecodeReportsIgnoredKinds(t *testing.T) {
	src := `apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: strict, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec: {selector: {istio: ingressgateway}}
`
	objs, errs, ignored := DecodeWithIgnored([]byte(src), "seed002.yaml")
	if len(errs) != 0 || len(objs) != 1 {
		t.Fatalf("got %d objects, errors %v", len(objs), errs)
	}
	want := Ignored{Source: "seed002.yaml", Document: 0, Line: 1, APIVersion: "security.istio.io/v1beta1", Kind: "PeerAuthentication", Namespace: "default", Name: "strict"}
	if len(ignored) != 1 || ignored[0] != want {
		t.Fatalf("ignored = %+v, want [%+v]", ignored, want)
	}
}

// Every decode error points at the file line (not the document's) and
// column of what is wrong: the field a message names, or where the YAML
// stops parsing.
func TestDecodeErrorPositions(t *testing.T) {
	first := `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
`
	cases := []struct {
		name      string
		second    string // the second document, starting on line 8
		line, col int
		says      string
	}{
		{"unknown field deep in the spec", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
spec:
  hosts: [a.example.com]
  http:
  - route:
    - destination:
        hots: x
`, 17, 9, "spec.http[0].route[0].destination.hots"},
		{"wrong type, snake_case key", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [a]
  http:
  - retries:
      attempts: 2
      per_try_timeout: soon
`, 16, 7, "per_try_timeout"},
		{"unknown top-level field", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spex: {}
`, 11, 1, "spex"},
		{"Kubernetes object, strict JSON", `apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  ports:
  - port: 80
    nmae: http
`, 14, 5, "nmae"},
		{"Kubernetes object, wrong type", `apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  ports:
  - name: http
    port: eighty
`, 14, 5, "port"},
		{"metadata", `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw2
  labelz: {a: b}
spec: {}
`, 12, 3, "labelz"},
		{"RequestAuthentication, unknown field", `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules:
  - issuer: a
    jwksUrl: http://x
`, 14, 5, "spec.jwtRules[0].jwksUrl"},
		{"AuthorizationPolicy, bad enum", `apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  action: PERMIT
`, 12, 3, "spec.action"},
		{"AuthorizationPolicy, wrong type deep", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  rules:
  - to:
    - operation:
        methods: GET
`, 15, 9, "spec.rules[0].to[0].operation.methods"},
		{"YAML syntax: bad indentation", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
 namespace: x
spec: {}
`, 12, 2, "invalid YAML"},
		{"YAML syntax: unclosed flow sequence", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [a, b
  http: []
`, 12, 10, "invalid YAML"},
		{"YAML syntax: tab indentation", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs}\nspec:\n\thosts: [a]\n", 12, 1, "invalid YAML"},
	}
	for _, c := range cases {
		_, errs := Decode([]byte(first+"---\n"+c.second), "dir/f.yaml")
		if len(errs) != 1 {
			t.Errorf("%s: %d errors: %v", c.name, len(errs), errs)
			continue
		}
		e := errs[0]
		if e.Line != c.line || e.Column != c.col || e.DocumentLine != 8 || e.Document != 1 {
			t.Errorf("%s: at %d:%d (document %d from line %d), want %d:%d; %v", c.name, e.Line, e.Column, e.Document, e.DocumentLine, c.line, c.col, e)
		}
		prefix := fmt.Sprintf("dir/f.yaml:%d:%d: document 2", c.line, c.col)
		if msg := e.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, c.says) || strings.Contains(msg, "yaml: line") {
			t.Errorf("%s: %q, want it to start %q and say %q (and no document-relative line)", c.name, msg, prefix, c.says)
		}
	}
}

// Both served versions of the security kinds decode to the same Go types,
// as Istio's CRDs share one schema; a missing spec is an empty one (for
// an AuthorizationPolicy, Istio's "deny all"); other versions are refused.
func TestDecodeSecurityKinds(t *testing.T) {
	src := `apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: bookjwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks_uri: http://127.0.0.1/jwks.json
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: istio-system}
spec:
  targetRefs: [{kind: Gateway, group: networking.istio.io, name: gw}]
  action: DENY
  rules:
  - from: [{source: {notRequestPrincipals: ["*"]}}]
    when: [{key: "request.auth.claims[role]", values: [customer]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: istio-system}
`
	objs, errs := Decode([]byte(src), "auth.yaml")
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	res, err := FromObjects(objs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.RequestAuthentications) != 1 || len(res.AuthorizationPolicies) != 2 {
		t.Fatalf("got %d RequestAuthentications, %d AuthorizationPolicies", len(res.RequestAuthentications), len(res.AuthorizationPolicies))
	}
	ra := res.RequestAuthentications[0]
	if r := ra.Spec.JwtRules[0]; r.JwksUri != "http://127.0.0.1/jwks.json" || r.FromHeaders[0].Prefix != "Bearer " || !r.ForwardOriginalToken {
		t.Errorf("jwt rule = %v", r)
	}
	if KeyOf(ra) != (Key{Kind: KindRequestAuthentication, Namespace: "istio-system", Name: "bookjwt"}) {
		t.Errorf("key = %v", KeyOf(ra))
	}
	ap := res.AuthorizationPolicies[1]
	if ap.Name != "require-jwt" || ap.Spec.Action.String() != "DENY" || ap.Spec.TargetRefs[0].Name != "gw" ||
		ap.Spec.Rules[0].When[0].Key != "request.auth.claims[role]" {
		t.Errorf("policy = %v", ap)
	}
	if deny := res.AuthorizationPolicies[0]; deny.Name != "deny-all" || deny.Spec.Action.String() != "ALLOW" || len(deny.Spec.Rules) != 0 {
		t.Errorf("policy without spec = %v", deny)
	}
	_, errs = Decode([]byte("apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {}\n"), "old.yaml")
	if len(errs) != 1 || errs[0].Field != "apiVersion" || !strings.Contains(errs[0].Error(), "want v1beta1 or v1") {
		t.Errorf("v1alpha1: %v", errs)
	}
}

// Pods are decoded into a reused Pod and kept as their metadata: what one
// Pod's document sets must not show in the next one's, nor the next one's
// in what was kept of the first. Pods of both forms alternate, so that
// each is decoded into a Pod the other form used before; the fast and
// the JSON way both.
func TestPodsDecodedOneAfterAnotherShareNothing(t *testing.T) {
	full := `apiVersion: v1
kind: Pod
metadata:
  name: full
  namespace: ns
  labels: {app: web, version: v1}
  annotations: {a: b}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-1, uid: "1"}]
spec:
  containers: [{name: app, image: app}]
`
	bare := `apiVersion: v1
kind: Pod
metadata: {name: bare}
spec:
  containers: []
`
	decode := func(doc string) *metav1.PartialObjectMetadata {
		t.Helper()
		objs, errs := Decode([]byte(doc), "pods.yaml")
		if len(errs) > 0 || len(objs) != 1 {
			t.Fatalf("decoding %q: %v objects, errors %v", doc, len(objs), errs)
		}
		return objs[0].(*metav1.PartialObjectMetadata)
	}
	var kept []*metav1.PartialObjectMetadata
	for i := range 20 {
		doc := full
		if i%2 == 1 {
			doc = bare
		}
		// Each form decoded the three ways: from the parse tree; from the
		// tree, then again the JSON way into the same Pod (a quantity,
		// which setTyped leaves to the JSON decoder); and from JSON only
		// (a number as a key, which the tree leaves to YAMLToJSON).
		way := i / 2 % 3
		switch way {
		case 1:
			doc = strings.Replace(doc, "spec:", "spec:\n  overhead: {cpu: 250m}", 1)
		case 2:
			doc = strings.Replace(doc, "spec:", "spec:\n  nodeSelector: {1: one}", 1)
		}
		if _, _, ok := decodeYAML([]byte(doc)); ok != (way < 2) {
			t.Fatalf("%q decoded the fast way: %v", doc, ok)
		}
		kept = append(kept, decode(doc))
	}
	for i, p := range kept {
		if i%2 == 1 {
			if p.Name != "bare" || p.Namespace != "default" || p.Labels != nil || p.Annotations != nil || p.OwnerReferences != nil {
				t.Fatalf("the %dth Pod (bare) decoded with another's metadata: %+v", i, p.ObjectMeta)
			}
			continue
		}
		if p.Name != "full" || p.Namespace != "ns" || p.Labels["app"] != "web" || p.Labels["version"] != "v1" || len(p.Labels) != 2 ||
			p.Annotations["a"] != "b" || len(p.OwnerReferences) != 1 || p.OwnerReferences[0].Name != "web-1" {
			t.Fatalf("the %dth Pod (full) changed once others were decoded: %+v", i, p.ObjectMeta)
		}
	}
}
