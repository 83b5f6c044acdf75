package gateway

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
)

// TestTableMemoEqualsBinding drives a Builder through random edits and
// compares every build with a fresh one that binds every table with
// bindHTTPRoutes (no tableMemo): the proxies' IR and the statuses must
// be equal.
//
// The VirtualServices share hosts (so a host has several contributors,
// in order), match every request or not (so catch-alls are reordered and
// later ones reported unreachable), carry exact hosts and wildcards, and
// name one Gateway, the other, both or neither. The Gateways have HTTP
// servers with and without httpsRedirect, HTTPS servers, hosts scoped to
// namespaces, a second HTTP server on the same port now and then (a
// table two servers fill) and a rate limit that comes and goes. Edits:
// new versions of VirtualServices (most often), additions, deletions,
// several at once, new Gateways, a Gateway's redirect or rate limit
// alone, and DestinationRules of the backends (so the registry changes
// under unchanged VirtualServices, and clusters add secrets and report
// findings).
func TestTableMemoEqualsBinding(t *testing.T) {
	sequences := 120
	if testing.Short() {
		sequences = 30
	}
	hosts := []string{"a.example.com", "b.example.com", "c.example.com", "*.example.com", "d.other.org", "e.other.org"}
	namespaces := []string{"ns1", "ns2"}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for seq := range uint64(sequences) {
		rng := rand.New(rand.NewPCG(seq, 41))
		serial := 0
		newVS := func(name, ns string) *networking.VirtualService {
			serial++
			vs := &networking.VirtualService{}
			vs.Name, vs.Namespace = name, ns
			vs.CreationTimestamp = metav1.NewTime(created.Add(time.Duration(len(name)+int(name[len(name)-1])) * time.Second))
			for range 1 + rng.IntN(2) {
				vs.Spec.Hosts = append(vs.Spec.Hosts, hosts[rng.IntN(len(hosts))])
			}
			switch rng.IntN(4) {
			case 0:
				vs.Spec.Gateways = []string{"istio-system/gw-a"}
			case 1:
				vs.Spec.Gateways = []string{"istio-system/gw-b"}
			case 2:
				vs.Spec.Gateways = []string{"istio-system/gw-a", "istio-system/gw-b"}
			default:
				vs.Spec.Gateways = []string{"istio-system/gw-a", "istio-system/missing"}
			}
			for r := range 1 + rng.IntN(3) {
				route := &networkingapi.HTTPRoute{
					Route:   []*networkingapi.HTTPRouteDestination{{Destination: &networkingapi.Destination{Host: fmt.Sprintf("svc-%d.example.com", rng.IntN(4))}}},
					Headers: &networkingapi.Headers{Response: &networkingapi.Headers_HeaderOperations{Set: map[string]string{"x-serial": fmt.Sprint(serial, r)}}},
				}
				if rng.IntN(3) > 0 {
					route.Match = []*networkingapi.HTTPMatchRequest{{Uri: &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: fmt.Sprintf("/p%d", rng.IntN(3))}}}}
				}
				vs.Spec.Http = append(vs.Spec.Http, route)
			}
			return vs
		}
		newGateway := func(name string) *networking.Gateway {
			gw := &networking.Gateway{}
			gw.Name, gw.Namespace = name, "istio-system"
			gw.CreationTimestamp = metav1.NewTime(created)
			gw.Spec.Selector = map[string]string{"istio": "ingressgateway"}
			serverHosts := func() []string {
				var out []string
				for range 1 + rng.IntN(3) {
					h := []string{"*", "*.example.com", "a.example.com", "d.other.org", "e.other.org"}[rng.IntN(5)]
					out = append(out, []string{"*/", "ns1/", "./"}[rng.IntN(3)]+h)
				}
				return out
			}
			port := uint32(80)
			if name == "gw-b" && rng.IntN(3) == 0 {
				port = 8080 // its own HTTP port, or a share of gw-a's
			}
			gw.Spec.Servers = []*networkingapi.Server{
				{Port: &networkingapi.Port{Number: port, Name: "http", Protocol: "HTTP"}, Hosts: serverHosts(),
					Tls: map[bool]*networkingapi.ServerTLSSettings{true: {HttpsRedirect: true}, false: nil}[rng.IntN(3) == 0]},
				{Port: &networkingapi.Port{Number: 443, Name: "https-" + name, Protocol: "HTTPS"}, Hosts: serverHosts(),
					Tls: &networkingapi.ServerTLSSettings{Mode: networkingapi.ServerTLSSettings_SIMPLE, ServerCertificate: "/etc/certs/tls.crt", PrivateKey: "/etc/certs/tls.key"}},
			}
			if rng.IntN(3) == 0 {
				gw.Annotations = map[string]string{RateLimitAnnotation: fmt.Sprintf("%d/s", 1+rng.IntN(3))}
			}
			return gw
		}
		// DestinationRules for the backends: the registry changes under
		// unchanged VirtualServices, and clusters add secrets (a CA file)
		// and report findings (ISTIO_MUTUAL is not supported here).
		newDR := func(i int) *networking.DestinationRule {
			dr := &networking.DestinationRule{}
			dr.Name, dr.Namespace = fmt.Sprintf("dr-%d", i), "ns1"
			dr.CreationTimestamp = metav1.NewTime(created)
			dr.Spec.Host = fmt.Sprintf("svc-%d.example.com", i)
			switch rng.IntN(4) {
			case 0:
				dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{Tls: &networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_SIMPLE, CaCertificates: fmt.Sprintf("/etc/ca-%d.pem", rng.IntN(2))}}
			case 1:
				dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{Tls: &networkingapi.ClientTLSSettings{Mode: networkingapi.ClientTLSSettings_ISTIO_MUTUAL}}
			case 2:
				dr.Spec.TrafficPolicy = &networkingapi.TrafficPolicy{ConnectionPool: &networkingapi.ConnectionPoolSettings{Http: &networkingapi.ConnectionPoolSettings_HTTPSettings{Http1MaxPendingRequests: int32(1 + rng.IntN(100))}}}
			default:
				return nil
			}
			return dr
		}
		drs := make([]*networking.DestinationRule, 4)
		for i := range drs {
			drs[i] = newDR(i)
		}
		gateways := []*networking.Gateway{newGateway("gw-a"), newGateway("gw-b")}
		var list []*networking.VirtualService
		for i := range 6 + rng.IntN(10) {
			list = append(list, newVS(fmt.Sprintf("vs-%02d", i), namespaces[rng.IntN(2)]))
		}
		sortVS := func() {
			slices.SortFunc(list, func(a, b *networking.VirtualService) int {
				if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
					return c
				}
				return compareNames(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
			})
		}
		sortVS()
		bl := NewBuilder()
		opts := Options{Classes: []map[string]string{{"istio": "ingressgateway"}}, Now: func() time.Time { return created }}
		for step := range 30 {
			switch op := rng.IntN(11); {
			case op < 5 && len(list) > 0: // new versions of one or a few
				list = slices.Clone(list)
				for range 1 + rng.IntN(2) {
					i := rng.IntN(len(list))
					list[i] = newVS(list[i].Name, list[i].Namespace)
				}
			case op == 5:
				name := fmt.Sprintf("vs-%02d", 20+rng.IntN(20))
				list = slices.DeleteFunc(slices.Clone(list), func(vs *networking.VirtualService) bool { return vs.Name == name })
				list = append(list, newVS(name, namespaces[rng.IntN(2)]))
				sortVS()
			case op == 6 && len(list) > 0:
				i := rng.IntN(len(list))
				list = slices.Delete(slices.Clone(list), i, i+1)
			case op == 7:
				gateways = slices.Clone(gateways)
				i := rng.IntN(2)
				gateways[i] = newGateway(gateways[i].Name)
			case op == 9:
				drs = slices.Clone(drs)
				i := rng.IntN(len(drs))
				drs[i] = newDR(i)
			case op == 8: // one thing of a Gateway: its redirect or its rate limit
				gateways = slices.Clone(gateways)
				i := rng.IntN(2)
				gw := gateways[i].DeepCopy()
				if rng.IntN(2) == 0 {
					gw.Spec.Servers[0].Tls = map[bool]*networkingapi.ServerTLSSettings{true: {HttpsRedirect: true}, false: nil}[gw.Spec.Servers[0].Tls == nil]
				} else {
					gw.Annotations = map[bool]map[string]string{true: {RateLimitAnnotation: "7/m"}, false: nil}[gw.Annotations == nil]
				}
				gateways[i] = gw
			}
			res := &resource.Resources{Gateways: gateways, VirtualServices: list}
			for _, dr := range drs {
				if dr != nil {
					res.DestinationRules = append(res.DestinationRules, dr)
				}
			}
			got := bl.Build(res, opts)
			fresh := NewBuilder()
			fresh.noTableMemo = true
			want := fresh.Build(res, opts)
			if !reflect.DeepEqual(got.Proxies, want.Proxies) {
				t.Fatalf("sequence %d, step %d: the proxies differ from binding every table afresh:\n%s", seq, step, diffProxies(got, want))
			}
			if !reflect.DeepEqual(got.Statuses, want.Statuses) {
				t.Fatalf("sequence %d, step %d: the statuses differ from binding every table afresh:\n%s\nwant:\n%s", seq, step, dump(got.Statuses), dump(want.Statuses))
			}
		}
		if len(bl.tables) == 0 {
			t.Fatalf("sequence %d: no table was memoized", seq)
		}
	}
}

// diffProxies names the first virtual host that differs.
func diffProxies(got, want *Result) string {
	if len(got.Proxies) != len(want.Proxies) {
		return fmt.Sprintf("%d proxies, want %d", len(got.Proxies), len(want.Proxies))
	}
	for i, p := range got.Proxies {
		w := want.Proxies[i]
		if len(p.RouteConfigs) != len(w.RouteConfigs) {
			return fmt.Sprintf("%s: %d route configurations, want %d", p.Name, len(p.RouteConfigs), len(w.RouteConfigs))
		}
		for j, rc := range p.RouteConfigs {
			wrc := w.RouteConfigs[j]
			if len(rc.VirtualHosts) != len(wrc.VirtualHosts) {
				return fmt.Sprintf("%s: %d virtual hosts, want %d:\n%s\nwant:\n%s", rc.Name, len(rc.VirtualHosts), len(wrc.VirtualHosts), dump(names(rc.VirtualHosts)), dump(names(wrc.VirtualHosts)))
			}
			for k, vh := range rc.VirtualHosts {
				if !reflect.DeepEqual(vh, wrc.VirtualHosts[k]) {
					return fmt.Sprintf("%s: virtual host %d:\n%s\nwant:\n%s", rc.Name, k, dump(*vh), dump(*wrc.VirtualHosts[k]))
				}
			}
		}
		if !reflect.DeepEqual(p.Clusters, w.Clusters) {
			return fmt.Sprintf("%s: clusters differ", p.Name)
		}
	}
	return "elsewhere (listeners, secrets)"
}

func names(vhs []*ir.VirtualHost) []string {
	var out []string
	for _, vh := range vhs {
		out = append(out, vh.Name)
	}
	return out
}
