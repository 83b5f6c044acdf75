package gateway

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds/validate"
)

const limitsBase = `
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
metadata: {name: good, namespace: default}
spec:
  hosts: [good.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {prefix: /v1}}]
    route: [{destination: {host: web.example.com, subset: v1}}]
  - route: [{destination: {host: web.example.com}}]
`

// vsWith is a VirtualService "bad" in namespace team-b with one HTTP rule
// made of rule (YAML inside the rule's mapping, two-space indented).
func vsWith(rule string) string {
	return `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: team-b}
spec:
  hosts: [bad.example.com]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: web.example.com}}]
` + rule
}

func drWith(policy string) string {
	return `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bad, namespace: team-b}
spec:
  host: web.example.com
` + policy
}

// TestEnvoyLimits: each resource breaks one of Envoy's validation rules.
// Without the binder's check, the configuration made from it fails
// Envoy's validation (the rule is real: every proxy would reject the
// whole snapshot); with it, the resource alone is rejected — Accepted
// False naming the field and the rule — and the rest binds exactly as if
// it did not exist.
func TestEnvoyLimits(t *testing.T) {
	big := strings.Repeat("a", 16385)
	cases := []struct {
		name, doc, field, rule string
	}{
		{"header value over 16 KB", vsWith("    headers: {request: {set: {x-big: " + big + "}}}\n"),
			"spec.http[0].headers.request.set[x-big]", "at most 16384"},
		{"header value with a newline", vsWith("    headers: {response: {add: {x-evil: \"a\\nb\"}}}\n"),
			"spec.http[0].headers.response.add[x-evil]", "HTTP_HEADER_VALUE"},
		{"empty header name", vsWith("    headers: {request: {set: {\"\": v}}}\n"),
			"spec.http[0].headers.request.set[]", "min_len 1"},
		{"header name with a newline in a destination", `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: team-b}
spec:
  hosts: [bad.example.com]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: web.example.com}, headers: {request: {remove: ["a\nb"]}}}]
`, "spec.http[0].route[0].headers.request.remove[0]", "HTTP_HEADER_NAME"},
		{"empty header name to remove", vsWith("    headers: {response: {remove: [\"\"]}}\n"),
			"spec.http[0].headers.response.remove[0]", "min_len 1"},
		{"empty header prefix match", vsWith("    match: [{headers: {x-user: {prefix: \"\"}}}]\n"),
			"spec.http[0].match[0].headers[x-user].prefix", "StringMatcher.prefix min_len 1"},
		{"empty query parameter name", vsWith("    match: [{queryParams: {\"\": {exact: x}}}]\n"),
			"spec.http[0].match[0].queryParams[]", "min_len 1"},
		{"query parameter name over 1 KB", vsWith("    match:\n    - queryParams:\n        ? " + strings.Repeat("q", 1025) + "\n        : {exact: x}\n"),
			"spec.http[0].match[0].queryParams[", "at most 1024"},
		{"empty uri regex", vsWith("    match: [{uri: {regex: \"\"}}]\n"),
			"spec.http[0].match[0].uri.regex", "RegexMatcher.regex min_len 1"},
		{"rewrite authority with a newline", vsWith("    rewrite: {authority: \"a\\r\\nb\"}\n"),
			"spec.http[0].rewrite.authority", "host_rewrite_literal"},
		{"zero retry backoff", vsWith("    retries: {attempts: 2, backoff: 0s}\n"),
			"spec.http[0].retries.backoff", "base_interval gt 0s"},
		{"zero fault delay", vsWith("    fault: {delay: {fixedDelay: 0s, percentage: {value: 10}}}\n"),
			"spec.http[0].fault.delay.fixedDelay", "fixed_delay gt 0s"},
		{"empty CORS origin prefix", vsWith("    corsPolicy: {allowOrigins: [{prefix: \"\"}]}\n"),
			"spec.http[0].corsPolicy.allowOrigins[0].prefix", "min_len 1"},
		{"hash header name with a newline", drWith("  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: \"x\\ny\"}}}\n"),
			"spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName", "HTTP_HEADER_NAME"},
		{"ring larger than Envoy allows", drWith("  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 9000000}}}}\n"),
			"spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize", "lte"},
		{"zero connect timeout", drWith("  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}\n"),
			"spec.trafficPolicy.connectionPool.tcp.connectTimeout", "connect_timeout gt 0s"},
		{"zero connect timeout in a subset's port", drWith("  subsets:\n  - name: v1\n    labels: {v: \"1\"}\n    trafficPolicy: {portLevelSettings: [{port: {number: 80}, connectionPool: {tcp: {connectTimeout: 0s}}}]}\n"),
			"spec.subsets[0].trafficPolicy.portLevelSettings[0].connectionPool.tcp.connectTimeout", "connect_timeout gt 0s"},
		{"zero outlier interval", drWith("  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1, interval: 0s}}\n"),
			"spec.trafficPolicy.outlierDetection.interval", "gt 0s"},
		{"SNI over 255 bytes", drWith("  trafficPolicy: {tls: {mode: SIMPLE, sni: " + strings.Repeat("s", 256) + "}}\n"),
			"spec.trafficPolicy.tls.sni", "at most 255"},
	}
	opts := Options{Classes: []map[string]string{{"istio": "ingressgateway"}}, Now: func() time.Time { return goldenNow }}
	ingress := map[string]string{"istio": "ingressgateway"}
	decode := func(t *testing.T, docs ...string) *resource.Resources {
		t.Helper()
		objs, errs := resource.Decode([]byte(strings.Join(docs, "\n---\n")), "test")
		if len(errs) > 0 {
			t.Fatal(errs[0])
		}
		res, err := resource.FromObjects(objs)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	render := func(t *testing.T, v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			with, without := decode(t, limitsBase, tc.doc), decode(t, limitsBase)

			// The rule is Envoy's: bound without the check, the snapshot
			// would not validate.
			unchecked := &Builder{skipLimits: true}
			tr, err := translate.Translate(unchecked.Build(with, opts).Proxy(ingress), translate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if validateAll(tr) == nil {
				t.Fatalf("without the binder's check the configuration still passes Envoy's validation: the limit is not Envoy's")
			}

			got := Build(with, opts)
			var st *status.Status
			for _, s := range got.Statuses {
				if s.Key.Name == "bad" && s.Key.Namespace == "team-b" {
					st = s
				}
			}
			if st == nil || st.Condition(status.Accepted).Status != "False" {
				t.Fatalf("status %+v: want Accepted False", st)
			}
			m := st.Messages[0]
			if !strings.HasPrefix(m.Field, tc.field) || m.Code != status.SchemaValidationError || !strings.Contains(m.Message, tc.rule) {
				t.Errorf("message %+v: want field %s, IST0106, rule %q", m, tc.field, tc.rule)
			}
			if len(m.Message) > 1024 {
				t.Errorf("the message is %d bytes: user strings must be clipped", len(m.Message))
			}
			tr, err = translate.Translate(got.Proxy(ingress), translate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := validateAll(tr); err != nil {
				t.Errorf("with the check the configuration still fails Envoy's validation: %v", err)
			}
			if g, w := render(t, got.Proxies), render(t, Build(without, opts).Proxies); g != w {
				t.Errorf("the configuration differs from the one without the rejected resource:\n%s\n---\n%s", g, w)
			}
		})
	}
}

func validateAll(r *translate.Resources) error {
	var all []proto.Message
	for _, m := range r.Listeners {
		all = append(all, m)
	}
	for _, m := range r.Routes {
		all = append(all, m)
	}
	for _, m := range r.Clusters {
		all = append(all, m)
	}
	for _, m := range r.Endpoints {
		all = append(all, m)
	}
	for _, m := range r.Secrets {
		all = append(all, m)
	}
	for _, m := range all {
		if err := validate.Deep(m); err != nil {
			return err
		}
	}
	return nil
}
