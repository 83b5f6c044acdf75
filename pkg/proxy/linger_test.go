package proxy_test

import (
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/portico-gateway/portico/internal/poll"
	"github.com/portico-gateway/portico/internal/testenv"
)

// A request that matched a route of the table being replaced looks its
// cluster up a moment later. When the new table no longer refers to that
// cluster (a canary's subset dropped), the cluster must outlive the swap
// for a moment, or that request gets 503 NC — TestConfigPushUnderLoad saw
// 1 in ~500 under config churn. It goes once the linger is over.
func TestClustersOutliveTheRouteTableThatDropsThem(t *testing.T) {
	v1, v2 := testenv.StartBackend(t, "v1"), testenv.StartBackend(t, "v2")
	cp := testenv.StartControlPlane(t, "")
	config := func(route string) string {
		return gateway80 + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app}
spec:
  hosts: ['*']
  gateways: [istio-system/gw]
  http: [{route: ` + route + `}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: app}
spec:
  host: app
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
` + testenv.ServiceEntry("app", "app.default.svc.cluster.local", 80, "HTTP", v1, v2)
	}
	cp.Publish(t, config(`[{destination: {host: app, subset: v1}, weight: 50}, {destination: {host: app, subset: v2}, weight: 50}]`))
	p := testenv.StartProxy(t, cp.Addr, testenv.ProxyOptions{Ports: []uint32{80}})
	p.WaitReady(t)
	const v2Cluster = "outbound|80|v2|app.default.svc.cluster.local"
	if p.Clusters.Get(v2Cluster) == nil {
		t.Fatalf("%s missing before the change", v2Cluster)
	}
	routesUseV2 := func() bool {
		for _, e := range p.DumpInput().Routes {
			if rc, ok := e.Resource.(*routev3.RouteConfiguration); ok && strings.Contains(rc.String(), v2Cluster) {
				return true
			}
		}
		return false
	}
	cp.Publish(t, config(`[{destination: {host: app, subset: v1}}]`))
	poll.Until(t, "the route table without v2 to be active", func() bool { return !routesUseV2() })
	swapped := time.Now()
	if p.Clusters.Get(v2Cluster) == nil {
		t.Fatalf("%s was dropped with the route table that used it: a request that matched the old table a moment ago gets 503 NC", v2Cluster)
	}
	poll.Until(t, v2Cluster+" to go once the linger is over", func() bool { return p.Clusters.Get(v2Cluster) == nil })
	if d := time.Since(swapped); d > 10*time.Second {
		t.Errorf("the unused cluster lingered %v", d)
	}
}
