//go:build linux

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestOversizedHeaderValueAffectsOnlyItself: a VirtualService with a
// header value over Envoy's 16 KB limit used to make every snapshot fail
// validation, so no later change of any resource reached the proxies.
// Through the real API server, controller and proxy: the bad resource
// alone is rejected (Accepted False naming the field and the limit),
// traffic keeps flowing, and a VirtualService created afterwards is
// served.
func TestOversizedHeaderValueAffectsOnlyItself(t *testing.T) {
	ensureCounter(t)
	stop, _, failures := requestLoop(t, "counter.lab.example.com")
	h.apply(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: big-header}
spec:
  hosts: [big.example.com]
  gateways: [istio-system/default-gateway]
  http:
  - headers: {request: {set: {x-big: "`+strings.Repeat("b", 17000)+`"}}}
    route: [{destination: {host: counter}}]
`)
	eventually(t, "big-header rejected with the field and the limit named", 30*time.Second, func() error {
		st := h.istioStatus(t, "VirtualService", "default", "big-header")
		c := condition(st, "Accepted")
		if c == nil || c["status"] != "False" || c["reason"] != "InvalidSpec" {
			return fmt.Errorf("%v", c)
		}
		if msg := fmt.Sprint(c["message"]); !strings.Contains(msg, "spec.http[0].headers.request.set[x-big]") || !strings.Contains(msg, "16384") {
			return fmt.Errorf("message %q does not name the field and the limit", msg)
		}
		return nil
	})
	h.apply(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: after-big-header}
spec:
  hosts: [after.example.com]
  gateways: [istio-system/default-gateway]
  http: [{route: [{destination: {host: counter}}]}]
`)
	eventually(t, "a VirtualService created after the bad one is served", 30*time.Second, func() error {
		if code, _, err := h.httpGet(80, "after.example.com", "/", nil); err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})
	if code, _, err := h.httpGet(80, "big.example.com", "/", nil); err != nil || code != 404 {
		t.Errorf("big.example.com answered %d (%v), want 404: the rejected VirtualService must not be served", code, err)
	}
	if n := stop(); n == 0 || failures.Load() > 0 {
		t.Fatalf("%d requests failed (of %d) while the oversized header was applied", failures.Load(), n)
	}
	h.delete(t, "networking.istio.io/v1", "VirtualService", "default", "big-header")
	h.delete(t, "networking.istio.io/v1", "VirtualService", "default", "after-big-header")
}
