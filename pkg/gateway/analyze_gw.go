package gateway

// Istio's Gateway analyzers (istio.io/istio pkg/config/analysis/analyzers/
// gateway: ConflictingGatewayAnalyzer, CertificateAnalyzer,
// IngressGatewayPortAnalyzer's selector check), with Istio's codes and
// levels. Istio matches selectors against Pods; Portico matches them
// against the proxies it knows (Options.Classes).

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	networking "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// advisory marks an analysis finding that does not change what is served.
func advisory(m status.Message) status.Message {
	m.Advisory = true
	return m
}

// analyzeGateways runs the Gateway analyzers over every Istio Gateway of
// the build (Gateway API Gateways are not Istio Gateways to Istio's
// analyzers either). It runs once per build over everything, outside any
// cached computation.
func (b *builder) analyzeGateways(all []*networking.Gateway) {
	var gws []*networking.Gateway
	for _, gw := range all {
		if !b.synthetic(resource.KeyOf(gw)) {
			gws = append(gws, gw)
		}
	}
	for _, gw := range gws {
		b.selectorWithoutProxy(gw)
		b.conflictingGateways(gw, gws)
		b.duplicateCertificates(gw, gws)
	}
}

// selectorWithoutProxy reports (IST0101, Error, as Istio) a Gateway whose
// selector matches none of the proxies known to exist. Only when the
// caller knows every proxy (Options.ProxiesKnown): an offline build does
// not, as istioctl analyze without Pods would report every Gateway.
func (b *builder) selectorWithoutProxy(gw *networking.Gateway) {
	if !b.opts.ProxiesKnown {
		return
	}
	for _, labels := range b.opts.Classes {
		if labelsMatch(gw.Spec.Selector, labels) {
			return
		}
	}
	b.report.Add(resource.KeyOf(gw), advisory(gwMessage(status.Error, status.ReferencedResourceNotFound, status.ReasonNoProxy, "spec.selector",
		"Referenced selector not found: %q (no gateway proxy has these labels, so nothing serves this Gateway until one does)", ClassName(gw.Spec.Selector))))
}

// sameProxies is Istio's test for two Gateway selectors in
// ConflictingGatewayAnalyzer: equal, or one's text containing the other's
// and some workload (here: a known proxy) matching both.
func (b *builder) sameProxies(x, y map[string]string) bool {
	sx, sy := ClassName(x), ClassName(y)
	if sx == sy {
		return true
	}
	if !strings.Contains(sx, sy) && !strings.Contains(sy, sx) {
		return false
	}
	for _, labels := range b.opts.Classes {
		if labelsMatch(x, labels) && labelsMatch(y, labels) {
			return true
		}
	}
	return false
}

// conflictingGateways reports (IST0145, Error) a server whose port and one
// of whose hosts, spelt the same and on the same bind address, another
// Gateway on the same proxies also serves. Istio compares the other
// Gateway's last server on the port only; Portico compares all of them
// (the last-only rule misses conflicts in a Gateway with two servers on a
// port).
func (b *builder) conflictingGateways(gw *networking.Gateway, gws []*networking.Gateway) {
	name := gw.Namespace + "/" + gw.Name
	selector := ClassName(gw.Spec.Selector)
	for i, srv := range gw.Spec.Servers {
		if srv == nil || srv.Port == nil {
			continue
		}
		var others []string
		for _, other := range gws {
			oname := other.Namespace + "/" + other.Name
			if oname == name || !b.sameProxies(gw.Spec.Selector, other.Spec.Selector) {
				continue
			}
			if sharesHost(srv.Port.Number, srv.Bind, srv.Hosts, other) {
				others = append(others, oname)
			}
		}
		if len(others) == 0 {
			continue
		}
		sort.Strings(others)
		b.report.Add(resource.KeyOf(gw), advisory(gwMessage(status.Error, status.ConflictingGateways, status.ReasonConflictingServer, fmt.Sprintf("spec.servers[%d].hosts", i),
			"Conflict with gateways %s (workload selector %s, port %s, hosts %v).",
			strings.Join(others, ","), selector, strconv.Itoa(int(srv.Port.Number)), strings.Join(srv.Hosts, ","))))
	}
}

func sharesHost(port uint32, bind string, hosts []string, other *networking.Gateway) bool {
	for _, osrv := range other.Spec.Servers {
		if osrv == nil || osrv.Port == nil || osrv.Port.Number != port || osrv.Bind != bind {
			continue
		}
		for _, h := range hosts {
			for _, oh := range osrv.Hosts {
				if h == oh {
					return true
				}
			}
		}
	}
	return false
}

// duplicateCertificates reports (IST0138, Warning) TLS servers of two
// Gateways on the same proxies using the same certificate: a client
// reusing an HTTP/2 connection for the other Gateway's host gets 404s.
// The other Gateway's selector must include this one's (Istio's
// selectorSubset; an empty selector takes every Gateway).
func (b *builder) duplicateCertificates(gw *networking.Gateway, gws []*networking.Gateway) {
	name := gw.Namespace + "/" + gw.Name
	for _, other := range gws {
		oname := other.Namespace + "/" + other.Name
		if oname == name || !labelsMatch(gw.Spec.Selector, other.Spec.Selector) {
			continue
		}
		if sharesCertificate(gw, other) {
			b.report.Add(resource.KeyOf(gw), advisory(gwMessage(status.Warning, status.GatewayDuplicateCertificate, status.ReasonConflictingServer, "spec.servers",
				"Duplicate certificate in multiple gateways %v may cause 404s if clients re-use HTTP2 connections.", []string{name, oname})))
		}
	}
}

func sharesCertificate(x, y *networking.Gateway) bool {
	for _, a := range x.Spec.Servers {
		for _, c := range y.Spec.Servers {
			at, ct := a.GetTls(), c.GetTls()
			if at == nil || ct == nil {
				continue
			}
			switch {
			case at.CredentialName != "" && ct.CredentialName != "":
				if at.CredentialName == ct.CredentialName {
					return true
				}
			case at.CredentialName == "" && ct.CredentialName == "":
				if at.ServerCertificate != "" && at.ServerCertificate == ct.ServerCertificate &&
					at.PrivateKey != "" && at.PrivateKey == ct.PrivateKey {
					return true
				}
			}
		}
	}
	return false
}
