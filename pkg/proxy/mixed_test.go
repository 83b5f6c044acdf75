package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/portico-gateway/portico/internal/testenv"
)

// TestSotWAndDeltaProxiesShareAController is issue #12's scenario end to
// end: a delta proxy (as the standalone controller embeds) and a
// state-of-the-world proxy (as stock Envoy with a SotW ADS bootstrap) on
// one xDS server, each serving every change, the delta one still after
// the SotW one left; proxy-status lists both, SYNCED.
func TestSotWAndDeltaProxiesShareAController(t *testing.T) {
	backend := testenv.StartBackend(t, "app")
	cp := testenv.StartControlPlane(t, "")
	publish := func(path string) {
		cp.Publish(t, gateway80+fmt.Sprintf(`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {exact: %s}}]
    directResponse: {status: 200, body: {string: "%s"}}
  - route: [{destination: {host: app}}]
`, path, path)+testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", backend))
	}
	serves := func(p *testenv.Proxy, path string) func() bool {
		return func() bool {
			resp, err := http.Get(p.URL(80) + path)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == 200 && string(b) == path
		}
	}
	publish("/v1")
	delta := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}, NodeID: "delta"})
	sotw := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}, NodeID: "sotw", SOTW: true})
	delta.WaitReady(t)
	sotw.WaitReady(t)

	publish("/v2")
	testenv.WaitFor(t, "the delta proxy to serve /v2", serves(delta, "/v2"))
	testenv.WaitFor(t, "the SotW proxy to serve /v2", serves(sotw, "/v2"))
	testenv.WaitFor(t, "proxy-status to list both proxies SYNCED", func() bool {
		st := cp.Server.ProxyStatus()
		if len(st) != 2 {
			return false
		}
		for _, p := range st {
			for _, v := range p.Types {
				if v != "SYNCED" && v != "NOT SENT" {
					return false
				}
			}
			if p.Types["Listener"] != "SYNCED" || p.Types["RouteConfiguration"] != "SYNCED" {
				return false
			}
		}
		return true
	})

	sotw.Stop()
	publish("/v3")
	testenv.WaitFor(t, "the delta proxy to serve /v3 after the SotW proxy left", serves(delta, "/v3"))
	testenv.WaitFor(t, "proxy-status to list the delta proxy only", func() bool {
		st := cp.Server.ProxyStatus()
		return len(st) == 1 && st[0].ID == "delta"
	})
}
