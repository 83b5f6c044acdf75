package gateway

import (
	"strings"
	"testing"

	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

func buildYAML(t *testing.T, src string) *Result {
	t.Helper()
	objs, errs := resource.Decode([]byte(src), "test.yaml")
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	res, err := resource.FromObjects(objs)
	if err != nil {
		t.Fatal(err)
	}
	return Build(res, Options{})
}

func statusOf(r *Result, kind, name string) *status.Status {
	for _, s := range r.Statuses {
		if s.Key.Kind == kind && s.Key.Name == name {
			return s
		}
	}
	return nil
}

// Standalone, resources come from files and have no creation time: the
// conflict messages say the rule that decided (namespace/name), and a
// Gateway none of whose servers survived is not Accepted, naming the
// winner.
func TestConflictsWithoutCreationTimeSayTheRule(t *testing.T) {
	r := buildYAML(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: b-tcp, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: tcp, protocol: TCP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: a-http, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: c-mixed, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: tcp, protocol: TCP}
    hosts: ['*']
  - port: {number: 81, name: http, protocol: HTTP}
    hosts: ['*']
`)
	loser := statusOf(r, "Gateway", "b-tcp")
	// The binder's finding, then Istio's ConflictingGateways analysis.
	if len(loser.Messages) != 2 || loser.Messages[1].Code != status.ConflictingGateways {
		t.Fatalf("loser messages: %v", loser.Messages)
	}
	msg := loser.Messages[0].Message
	if !strings.Contains(msg, "Gateway default/a-http, which wins because it sorts first by name, then namespace, as in Istio; files have no creation time") ||
		strings.Contains(msg, "older") {
		t.Errorf("conflict message %q does not state the rule applied", msg)
	}
	acc := loser.Condition(status.Accepted)
	if acc.Status != "False" || acc.Reason != status.ReasonConflictingServer || !strings.Contains(acc.Message, "default/a-http") {
		t.Errorf("a Gateway all of whose servers lost: Accepted = %+v, want False naming the winner", acc)
	}
	if acc := statusOf(r, "Gateway", "a-http").Condition(status.Accepted); acc.Status != "True" || acc.Reason != status.ReasonAccepted {
		t.Errorf("winner: %+v", acc)
	}
	// One server lost, one kept: partly in use.
	if acc := statusOf(r, "Gateway", "c-mixed").Condition(status.Accepted); acc.Status != "True" || acc.Reason != status.ReasonPartiallyInvalid {
		t.Errorf("a Gateway with a surviving server: %+v", acc)
	}
}

func TestWinsSaysTheRuleApplied(t *testing.T) {
	r := buildYAML(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: z-old, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: a-new, namespace: default, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: tcp, protocol: TCP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: a-same, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: b-same, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 81, name: tcp, protocol: TCP}, hosts: ['*']}]
`)
	for name, want := range map[string]string{
		"a-new":  "z-old, which wins because it is older (created 2024-01-01T00:00:00Z)",
		"b-same": "a-same, which wins because it was created at the same time and sorts first by name, then namespace, as in Istio",
	} {
		// The binder's finding comes first; Istio's ConflictingGateways
		// analysis (IST0145, same port and host) follows it.
		if s := statusOf(r, "Gateway", name); len(s.Messages) == 0 || !strings.Contains(s.Messages[0].Message, want) {
			t.Errorf("%s: %v, want %q", name, s.Messages, want)
		}
	}
}
