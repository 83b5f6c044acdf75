//go:build linux

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// TestTelemetryKubernetes: a Telemetry resource applied through the API
// server turns on filtered access logging in the running proxy, and deleting it takes them back out, with no restart.
func TestTelemetryKubernetes(t *testing.T) {
	needHarness(t)
	h.apply(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: telemetry, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [telemetry.example.com]
`)
	t.Cleanup(func() { h.delete(t, "networking.istio.io/v1", "Gateway", "istio-system", "telemetry") })
	// No characters JSON encoders may escape (<, >, &): the test looks
	// for the expression in the config dump's text.
	const expr = "response.code == 503 || request.url_path == '/e2e-telemetry'"
	h.apply(t, `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: e2e-logging, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "`+expr+`"}
`)
	t.Cleanup(func() { h.delete(t, "telemetry.istio.io/v1", "Telemetry", "istio-system", "e2e-logging") })
	eventually(t, "the Telemetry filter in the proxy's listeners", 30*time.Second, func() error {
		d, err := h.admin("/config_dump")
		if err != nil {
			return err
		}
		if !strings.Contains(d, expr) {
			return fmt.Errorf("the config dump has no access log filter %q", expr)
		}
		return nil
	})
	// A problem is written to the resource's status through the API
	// server, naming the field.
	h.apply(t, `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: e2e-bad, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: 150}]
`)
	t.Cleanup(func() { h.delete(t, "telemetry.istio.io/v1", "Telemetry", "istio-system", "e2e-bad") })
	eventually(t, "the Telemetry's status naming the bad field", 30*time.Second, func() error {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("telemetry.istio.io/v1")
		u.SetKind("Telemetry")
		if err := h.client.Get(context.Background(), types.NamespacedName{Namespace: "istio-system", Name: "e2e-bad"}, u); err != nil {
			return err
		}
		st, _ := u.Object["status"].(map[string]any)
		c := condition(st, "Accepted")
		if c == nil || c["reason"] != "PartiallyInvalid" {
			return fmt.Errorf("Accepted %v", c)
		}
		if msgs := fmt.Sprint(st["validationMessages"]); !strings.Contains(msgs, "spec.tracing[0].randomSamplingPercentage") {
			return fmt.Errorf("validationMessages %v", msgs)
		}
		return nil
	})
	h.delete(t, "telemetry.istio.io/v1", "Telemetry", "istio-system", "e2e-bad")

	h.delete(t, "telemetry.istio.io/v1", "Telemetry", "istio-system", "e2e-logging")
	eventually(t, "the filter gone after the Telemetry is deleted", 30*time.Second, func() error {
		d, err := h.admin("/config_dump")
		if err != nil {
			return err
		}
		if strings.Contains(d, "extension_filters.cel") || !strings.Contains(d, "envoy.access_loggers") {
			return fmt.Errorf("the config dump still has a CEL filter, or no access logger")
		}
		return nil
	})
}
