package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/portico-gateway/portico/internal/testenv"
)

// The startup hints are built from what the proxy serves: the configured
// hosts and the CA next to the configured certificate, not the
// quickstart's.
func TestWelcomeHintsComeFromTheConfiguration(t *testing.T) {
	dir := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key", "ca.crt")
	noCA := testenv.WriteCerts(t, t.TempDir(), "server.crt", "server.key")
	backend := testenv.StartBackend(t, "shop")
	cp := testenv.StartControlPlane(t, "")
	cp.Publish(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*.example.com']
    tls: {mode: SIMPLE, serverCertificate: %[1]s/server.crt, privateKey: %[1]s/server.key}
  - port: {number: 8443, name: https-2, protocol: HTTPS}
    hosts: ['*.example.com']
    tls: {mode: SIMPLE, serverCertificate: %[2]s/server.crt, privateKey: %[2]s/server.key}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: shop}}]}]
`, dir, noCA)+testenv.ServiceEntry("shop", "shop.default.svc.cluster.local", 80, "HTTP", backend))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80, 443, 8443}})
	p.WaitReady(t)

	text := welcome("my-config", p.Serving(), p.Problems(), "http://127.0.0.1:15000", "127.0.0.1:15014")
	for _, want := range []string{
		"Portico is serving my-config",
		fmt.Sprintf("curl -H 'Host: shop.example.com' http://127.0.0.1:%d/", p.Ports[80]),
		fmt.Sprintf("curl --cacert %s/ca.crt --resolve shop.example.com:%d:127.0.0.1 https://shop.example.com:%d/", dir, p.Ports[443], p.Ports[443]),
		fmt.Sprintf("curl -k --resolve shop.example.com:%d:127.0.0.1", p.Ports[8443]),
		"http://127.0.0.1:15014/debug/topology",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("welcome lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "counter.lab.example.com") || strings.Contains(text, "quickstart") {
		t.Errorf("welcome mentions the quickstart:\n%s", text)
	}
}

func TestExampleHost(t *testing.T) {
	for in, want := range map[string]string{
		"a.example.com,*":      "a.example.com",
		"*.example.com":        "www.example.com",
		"*":                    "",
		"*,b.example.com:80":   "",
		"*.x.org,c.example.io": "c.example.io",
	} {
		if got := exampleHost(strings.Split(in, ",")); got != want {
			t.Errorf("exampleHost(%s) = %q, want %q", in, got, want)
		}
	}
}
