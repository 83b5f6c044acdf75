//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// topologyGraph is the part of /debug/topology.json this test reads.
type topologyGraph struct {
	Scrapes []struct {
		Proxy, URL, Error string
		Readings          int
	}
	Nodes []struct {
		ID      string
		Health  string
		Metrics *struct {
			RPS, ErrorRate, Total float64
		}
	}
}

// TestTopologyKubernetes: in Kubernetes mode the controller finds the
// gateway pods to read stats from through the Services selecting their
// proxy class and those Services' EndpointSlices (the status port), and
// the topology page counts the traffic the gateway carried.
func TestTopologyKubernetes(t *testing.T) {
	needHarness(t)
	ctx := context.Background()
	const ns = "topology"
	if err := h.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}

	// The harness's proxy serves its status port on the host's loopback;
	// a pod would serve it on its own IP. Reach it from the pod network's
	// address of the host, as the controller would reach a pod.
	fwd, err := net.Listen("tcp", "10.244.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Close() })
	go func() {
		for {
			c, err := fwd.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", h.proxyStatus, 2*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	statusPort := int32(fwd.Addr().(*net.TCPAddr).Port)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "topology-gateway", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"istio": "ingressgateway"},
			Ports: []corev1.ServicePort{{Name: "status-port", Port: 15021}}}}
	if err := h.client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "topology-gateway-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: "topology-gateway"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("status-port"), Port: ptr.To(statusPort), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "istio-system", Name: "istio-ingressgateway-e2e"}}},
	}
	if err := h.client.Create(ctx, es); err != nil {
		t.Fatal(err)
	}

	app := h.startPod(t, ns, "topo-app", map[string]string{"app": "topo-app"}, "v1")
	h.service(t, ns, "topo-app", []corev1.ServicePort{httpPort("http", 8080, 8080)}, app)
	h.apply(t, `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: topology, namespace: topology}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [topology.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: topo-app, namespace: topology}
spec:
  hosts: [topology.example.com]
  gateways: [topology]
  http:
  - route:
    - destination: {host: topo-app, port: {number: 8080}}
`)
	url := "http://10.244.0.1:" + fmt.Sprint(statusPort) + "/stats/prometheus"
	graph := func() (*topologyGraph, error) {
		resp, err := http.Get("http://" + h.debugAddr + "/debug/topology.json")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var g topologyGraph
		return &g, json.NewDecoder(resp.Body).Decode(&g)
	}
	// The controller reads the proxy every 5 s (its default): wait for a
	// reading before the traffic, so the rate has a start.
	eventually(t, "the controller reading the gateway pod found through its EndpointSlice", 30*time.Second, func() error {
		g, err := graph()
		if err != nil {
			return err
		}
		for _, s := range g.Scrapes {
			if s.URL == url {
				if s.Error != "" || s.Readings == 0 {
					return fmt.Errorf("%+v", s)
				}
				if s.Proxy != "istio-system/istio-ingressgateway-e2e" {
					t.Errorf("scrape named %q, want the pod of the EndpointSlice", s.Proxy)
				}
				return nil
			}
		}
		return fmt.Errorf("no scrape of %s in %+v", url, g.Scrapes)
	})
	eventually(t, "the route to serve", 30*time.Second, func() error {
		code, _, err := h.httpGet(80, "topology.example.com", "/", nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
	for range 20 {
		if code, _, err := h.httpGet(80, "topology.example.com", "/status/500", nil); err != nil || code != 500 {
			t.Fatalf("500 from the app: %d %v", code, err)
		}
		if code, _, err := h.httpGet(80, "topology.example.com", "/", nil); err != nil || code != 200 {
			t.Fatalf("200 from the app: %d %v", code, err)
		}
	}
	cluster := "cluster:istio=ingressgateway:outbound|8080||topo-app.topology.svc.cluster.local"
	eventually(t, "the page to count the traffic at the cluster", 30*time.Second, func() error {
		g, err := graph()
		if err != nil {
			return err
		}
		for _, n := range g.Nodes {
			if n.ID != cluster {
				continue
			}
			if n.Metrics == nil || n.Metrics.RPS <= 0 || n.Metrics.ErrorRate <= 0.2 {
				return fmt.Errorf("%s: %+v", n.ID, n.Metrics)
			}
			return nil
		}
		var ids []string
		for _, n := range g.Nodes {
			ids = append(ids, n.ID)
		}
		return fmt.Errorf("no node %s in %s", cluster, strings.Join(ids, " "))
	})
}
