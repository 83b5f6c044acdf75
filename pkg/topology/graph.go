// Package topology serves the controller's live topology page: the graph
// Gateways → servers (ports) → VirtualServices / Gateway API routes →
// routes → clusters → endpoints, built from the last build's IR and
// statuses, with request rate, error rate and p99 per node from the
// proxies' own stats (see Scraper), problems highlighted, and links to
// the source YAML and to the generated Envoy configuration.
package topology

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// Node kinds, in the order the page lays them out left to right.
const (
	KindGateway  = "Gateway"
	KindServer   = "Server"
	KindRouteSet = "RouteSet" // a VirtualService, HTTPRoute, GRPCRoute, TLSRoute or TCPRoute
	KindRoute    = "Route"
	KindCluster  = "Cluster"
	KindEndpoint = "Endpoint"
)

// Graph is what /debug/topology.json serves.
type Graph struct {
	GeneratedAt time.Time `json:"generatedAt"`
	// BuiltAt is when the controller built the configuration shown.
	BuiltAt time.Time `json:"builtAt"`
	// Window is the span the rates are computed over (empty: no stats).
	Window string `json:"window,omitempty"`
	// Scrapes are the proxies whose stats the numbers come from.
	Scrapes  []ScrapeInfo `json:"scrapes"`
	Nodes    []*Node      `json:"nodes"`
	Edges    []Edge       `json:"edges"`
	Problems []Problem    `json:"problems"` // not about one node: undecodable files, class errors
}

// Node is one box of the page.
type Node struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`
	Label string `json:"label"`
	// Detail is a second line: protocol, hosts, match, address.
	Detail string `json:"detail,omitempty"`
	// Class is the proxy class ("istio=ingressgateway") for nodes that
	// exist per class (servers, routes, clusters, endpoints).
	Class string `json:"class,omitempty"`
	// Resource is the object the node stands for or comes from.
	Resource *resource.Key `json:"resource,omitempty"`
	// Health is ok, warning or error: the worst problem's level.
	Health     string             `json:"health"`
	Problems   []Problem          `json:"problems,omitempty"`
	Conditions []status.Condition `json:"conditions,omitempty"`
	Metrics    *Metrics           `json:"metrics,omitempty"`
	Links      Links              `json:"links"`
}

// Edge connects two nodes.
type Edge struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Weight is a route's share of traffic to a cluster (percent).
	Weight uint32 `json:"weight,omitempty"`
}

// Problem is a validation message, a False condition, or a build error.
type Problem struct {
	Level   string `json:"level"` // Error, Warning, Info
	Code    string `json:"code,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
	// Resource names what the problem is about, for graph-wide problems.
	Resource string `json:"resource,omitempty"`
}

// Links are where the page's click-throughs go (relative URLs).
type Links struct {
	YAML  string `json:"yaml,omitempty"`
	Envoy string `json:"envoy,omitempty"`
}

// Metrics are a node's live numbers over the window.
type Metrics struct {
	// Unit is "rq" (requests) or "cx" (TCP connections).
	Unit string `json:"unit"`
	// RPS is requests (or connections) per second.
	RPS float64 `json:"rps"`
	// ErrorRate is the share of requests answered 4xx or 5xx (or of
	// connections that failed), 0 to 1; ErrorRate5xx only 5xx.
	ErrorRate    float64 `json:"errorRate"`
	ErrorRate5xx float64 `json:"errorRate5xx"`
	// P99Ms is the 99th percentile of request duration in milliseconds,
	// absent when no request completed in the window.
	P99Ms *float64 `json:"p99Ms,omitempty"`
	// Total counts since the proxies started.
	Total float64 `json:"total"`
	// Shared is set on routes and route sets whose numbers are their
	// clusters' totals, which other routes also send to: the proxy counts
	// per cluster, not per route (as Envoy without route stat prefixes).
	Shared bool `json:"shared,omitempty"`
}

// BuildInput is what a graph is made of.
type BuildInput struct {
	State *controller.State
	// Stats may be nil (no numbers).
	Stats *Window
	// ConfigDump is the path of the controller's config_dump endpoint.
	ConfigDump string
	// Source is the path serving a resource's YAML (?kind=&namespace=&name=).
	Source string
	Now    time.Time
}

// Build makes the graph of the last build. It never modifies the state.
func Build(in BuildInput) *Graph {
	g := &Graph{GeneratedAt: in.Now, Nodes: []*Node{}, Edges: []Edge{}, Problems: []Problem{}, Scrapes: []ScrapeInfo{}}
	if in.Stats != nil {
		g.Window = in.Stats.Span.Round(time.Millisecond).String()
		g.Scrapes = in.Stats.Scrapes
	}
	st := in.State
	if st == nil || st.Result == nil {
		return g
	}
	g.BuiltAt = st.BuiltAt
	b := &builder{g: g, in: in, byID: map[string]*Node{}, edges: map[[2]string]int{}, statuses: map[resource.Key]*status.Status{},
		apiStatuses: map[resource.Key]*status.APIStatus{}}
	for _, s := range st.Result.Statuses {
		b.statuses[s.Key] = s
	}
	for _, s := range st.Result.APIStatuses {
		b.apiStatuses[s.Key] = s
	}
	var served []*ir.Proxy
	for _, p := range st.Result.Proxies {
		_, published := st.Versions[p.Name]
		if published || st.Errors[p.Name] != "" {
			served = append(served, p) // else bound for statuses only: no proxy of this class exists
		}
	}
	b.manyClasses = len(served) > 1
	for _, p := range served {
		b.proxy(p)
	}
	// Resources that route nothing (a VirtualService for a Gateway that
	// does not exist, a Gateway no proxy serves) still belong on the page:
	// their problems are often why traffic does not flow.
	for _, s := range st.Result.Statuses {
		switch s.Key.Kind {
		case resource.KindGateway, resource.KindVirtualService, resource.KindHTTPRoute, resource.KindGRPCRoute,
			resource.KindTLSRoute, resource.KindTCPRoute:
		default:
			continue
		}
		b.resourceNode(nodeKind(s.Key), s.Key)
	}
	for _, s := range st.Result.APIStatuses {
		switch s.Key.Kind {
		case resource.KindGateway, resource.KindHTTPRoute, resource.KindGRPCRoute, resource.KindTLSRoute, resource.KindTCPRoute:
			b.resourceNode(nodeKind(s.Key), s.Key)
		}
	}
	for _, inv := range st.Resources.Invalid {
		g.Problems = append(g.Problems, Problem{Level: string(status.Error), Message: inv.Source + ": " + inv.Error, Resource: inv.Key.String()})
	}
	for _, class := range sortedKeys(st.Errors) {
		g.Problems = append(g.Problems, Problem{Level: string(status.Error), Message: "configuration of class " + class + " not published: " + st.Errors[class]})
	}
	for _, key := range sortedKeys(st.Excluded) {
		g.Problems = append(g.Problems, Problem{Level: string(status.Error), Message: st.Excluded[key], Resource: key})
	}
	b.metrics()
	sort.SliceStable(g.Nodes, func(i, j int) bool {
		if a, z := kindOrder(g.Nodes[i].Kind), kindOrder(g.Nodes[j].Kind); a != z {
			return a < z
		}
		return g.Nodes[i].ID < g.Nodes[j].ID
	})
	sort.SliceStable(g.Edges, func(i, j int) bool {
		if g.Edges[i].Source != g.Edges[j].Source {
			return g.Edges[i].Source < g.Edges[j].Source
		}
		return g.Edges[i].Target < g.Edges[j].Target
	})
	return g
}

func kindOrder(k string) int {
	return slices.Index([]string{KindGateway, KindServer, KindRouteSet, KindRoute, KindCluster, KindEndpoint}, k)
}

type builder struct {
	g           *Graph
	in          BuildInput
	byID        map[string]*Node
	edges       map[[2]string]int
	statuses    map[resource.Key]*status.Status
	apiStatuses map[resource.Key]*status.APIStatus
	// manyClasses: servers say which proxy class they belong to.
	manyClasses bool

	// What the numbers are computed from, per node.
	hcmPrefixes map[string][]string // server node → HTTP connection manager stat prefixes
	tcpPrefixes map[string][]string // server node → tcp_proxy stat prefixes
	clusterOf   map[string]string   // cluster node → cluster name
	classOf     map[string]string   // node → proxy class
	routeClus   map[string][]string // route / route set node → cluster nodes
	endpointOf  map[string][2]string
	clusterUse  map[string]map[string]bool // cluster node → route nodes sending to it
}

func nodeKind(k resource.Key) string {
	if k.Kind == resource.KindGateway {
		return KindGateway
	}
	return KindRouteSet
}

// routeKinds are the Gateway API route kinds by the lower-case prefix of
// the synthetic VirtualService the conversion makes of them.
var routeKinds = map[string]string{"httproute": resource.KindHTTPRoute, "grpcroute": resource.KindGRPCRoute,
	"tlsroute": resource.KindTLSRoute, "tcproute": resource.KindTCPRoute}

// refKey is the resource a piece of configuration came from, as the user
// wrote it: the Gateway API objects behind the synthetic Istio ones the
// conversion makes ("<gateway>~<listener>" Gateways, "<kind>~<route>"
// VirtualServices; "~" cannot occur in Kubernetes names).
func refKey(r ir.Ref) resource.Key {
	k := resource.Key{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name}
	before, after, ok := strings.Cut(r.Name, "~")
	if !ok {
		return k
	}
	switch r.Kind {
	case resource.KindGateway:
		return resource.Key{Group: resource.GatewayAPIGroup, Kind: resource.KindGateway, Namespace: r.Namespace, Name: before}
	case resource.KindVirtualService:
		if kind, ok := routeKinds[before]; ok {
			return resource.Key{Kind: kind, Namespace: r.Namespace, Name: after}
		}
	}
	return k
}

func (b *builder) node(n *Node) *Node {
	if old, ok := b.byID[n.ID]; ok {
		return old
	}
	if n.Health == "" {
		n.Health = "ok"
	}
	b.byID[n.ID] = n
	b.g.Nodes = append(b.g.Nodes, n)
	return n
}

func (b *builder) edge(from, to string, weight uint32) {
	k := [2]string{from, to}
	if i, ok := b.edges[k]; ok {
		if weight > b.g.Edges[i].Weight {
			b.g.Edges[i].Weight = weight
		}
		return
	}
	b.edges[k] = len(b.g.Edges)
	b.g.Edges = append(b.g.Edges, Edge{Source: from, Target: to, Weight: weight})
}

// resourceNode is the node of a Gateway or route set, with its status.
func (b *builder) resourceNode(kind string, key resource.Key) *Node {
	kindName := key.Kind
	if key.Group != "" {
		kindName += "." + key.Group
	}
	id := kindName + "/" + key.Namespace + "/" + key.Name
	if n, ok := b.byID[id]; ok {
		return n
	}
	k := key
	n := &Node{ID: id, Kind: kind, Label: key.Name, Detail: key.Kind + " " + key.Namespace, Resource: &k,
		Links: Links{YAML: b.sourceLink(key)}}
	if key.IsGatewayAPI() {
		n.Detail = key.Kind + " (Gateway API) " + key.Namespace
	}
	if s := b.statuses[key]; s != nil {
		n.Conditions = s.Conditions
		n.Problems = statusProblems(s)
	}
	if s := b.apiStatuses[key]; s != nil {
		conds, problems := apiStatusProblems(s)
		n.Conditions = append(n.Conditions, conds...)
		n.Problems = append(n.Problems, problems...)
	}
	n.Health = health(n.Problems)
	return b.node(n)
}

func (b *builder) sourceLink(key resource.Key) string {
	if b.in.Source == "" {
		return ""
	}
	v := url.Values{"kind": {key.Kind}, "namespace": {key.Namespace}, "name": {key.Name}}
	return b.in.Source + "?" + v.Encode()
}

func (b *builder) envoyLink(class, resourceField string, names ...string) string {
	if b.in.ConfigDump == "" {
		return ""
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	slices.Sort(quoted)
	quoted = slices.Compact(quoted)
	v := url.Values{"class": {class}, "resource": {resourceField}, "name_regex": {"^(" + strings.Join(quoted, "|") + ")$"}}
	s := b.in.ConfigDump + "?" + v.Encode()
	if resourceField == "dynamic_endpoint_configs" {
		s += "&include_eds"
	}
	return s
}

// statusProblems are a status's messages and its False conditions (a
// condition is not repeated when a message already says the same).
func statusProblems(s *status.Status) []Problem {
	var out []Problem
	for _, m := range s.Messages {
		out = append(out, Problem{Level: string(m.Level), Code: m.Code.ID, Field: m.Field, Message: m.Message})
	}
	for _, c := range s.Conditions {
		if c.Status != "False" {
			continue
		}
		said := false
		for _, p := range out {
			// Conditions quote their messages ("Error [IST0101] field: …").
			if strings.Contains(c.Message, p.Message) {
				said = true
			}
		}
		if !said {
			out = append(out, Problem{Level: string(status.Error), Message: c.Type + "=False (" + c.Reason + "): " + c.Message})
		}
	}
	return out
}

// apiStatusProblems reads a Gateway API status: its conditions (a
// route's per parent, a Gateway's per listener, named so) and, as
// problems, those in a bad state (False, or True for Conflicted).
func apiStatusProblems(s *status.APIStatus) ([]status.Condition, []Problem) {
	var conds []status.Condition
	var problems []Problem
	add := func(where string, cs []metav1.Condition) {
		for _, c := range cs {
			typ := c.Type
			if where != "" {
				typ = where + " " + c.Type
			}
			conds = append(conds, status.Condition{Type: typ, Status: string(c.Status), Reason: c.Reason, Message: c.Message, ObservedGeneration: c.ObservedGeneration})
			bad := c.Status == metav1.ConditionFalse
			if c.Type == "Conflicted" {
				bad = c.Status == metav1.ConditionTrue
			}
			if bad {
				problems = append(problems, Problem{Level: string(status.Error), Message: typ + "=" + string(c.Status) + " (" + c.Reason + "): " + c.Message})
			}
		}
	}
	switch st := s.Status.(type) {
	case *gwv1.GatewayStatus:
		add("", st.Conditions)
		for _, l := range st.Listeners {
			add("listener "+string(l.Name), l.Conditions)
		}
	case *gwv1.RouteStatus:
		for _, p := range st.Parents {
			add("parent "+string(p.ParentRef.Name), p.Conditions)
		}
	}
	return conds, problems
}

func health(ps []Problem) string {
	h := "ok"
	for _, p := range ps {
		switch status.Level(p.Level) {
		case status.Error:
			return "error"
		case status.Warning:
			h = "warning"
		}
	}
	return h
}

func (b *builder) proxy(p *ir.Proxy) {
	if b.hcmPrefixes == nil {
		b.hcmPrefixes, b.tcpPrefixes = map[string][]string{}, map[string][]string{}
		b.clusterOf, b.classOf = map[string]string{}, map[string]string{}
		b.routeClus, b.clusterUse = map[string][]string{}, map[string]map[string]bool{}
		b.endpointOf = map[string][2]string{}
	}
	class := p.Name
	routeConfigs := map[string]*ir.RouteConfig{}
	for _, rc := range p.RouteConfigs {
		routeConfigs[rc.Name] = rc
	}
	clusters := map[string]*ir.Cluster{}
	for _, c := range p.Clusters {
		clusters[c.Name] = c
	}
	for _, l := range p.Listeners {
		srvID := "server:" + class + ":" + l.Name
		detail := l.Address + ":" + strconv.FormatUint(uint64(l.Port), 10) + " " + listenerProtocols(l)
		if sni := serverNames(l); sni != "" {
			detail += " · " + sni
		}
		if b.manyClasses {
			detail += " · " + class
		}
		srv := b.node(&Node{ID: srvID, Kind: KindServer, Class: class, Label: "port " + strconv.FormatUint(uint64(l.Port), 10),
			Detail: detail,
			Links:  Links{Envoy: b.envoyLink(class, "dynamic_listeners", l.Name)}})
		b.classOf[srvID] = class
		for _, fc := range l.FilterChains {
			for _, src := range fc.Sources {
				if src.Kind == resource.KindGateway {
					gw := b.resourceNode(KindGateway, refKey(src))
					b.edge(gw.ID, srv.ID, 0)
				}
			}
			switch {
			case fc.HTTP != nil:
				b.hcmPrefixes[srvID] = appendNew(b.hcmPrefixes[srvID], fc.HTTP.StatPrefix)
				rc := routeConfigs[fc.HTTP.RouteConfig]
				if rc == nil {
					continue
				}
				for _, vh := range rc.VirtualHosts {
					for _, r := range vh.Routes {
						b.route(class, srv, rc.Name, vh, r, clusters)
					}
				}
			case fc.TCP != nil:
				b.tcpPrefixes[srvID] = appendNew(b.tcpPrefixes[srvID], fc.TCP.StatPrefix)
				from := srv.ID
				if fc.TCP.Source.Kind != "" {
					set := b.resourceNode(KindRouteSet, refKey(fc.TCP.Source))
					b.edge(srv.ID, set.ID, 0)
					from = set.ID
				}
				for _, wc := range fc.TCP.Clusters {
					if cn := b.cluster(class, wc.Name, clusters); cn != "" {
						b.edge(from, cn, wc.Weight)
						b.routeClus[from] = appendNew(b.routeClus[from], cn)
					}
				}
			}
		}
	}
}

// route adds a route (keyed by its source and name, so the route a
// VirtualService serves on ports 80 and 443 is one node) and what it
// forwards to.
func (b *builder) route(class string, srv *Node, rcName string, vh *ir.VirtualHost, r *ir.Route, clusters map[string]*ir.Cluster) {
	from := srv.ID
	var set *Node
	src, rule, hasSrc := routeSource(r)
	if hasSrc {
		set = b.resourceNode(KindRouteSet, src)
		b.edge(srv.ID, set.ID, 0)
		from = set.ID
	}
	id := "route:" + class + ":" + src.Kind + "/" + src.Namespace + "/" + src.Name + ":" + r.Name
	n, existed := b.byID[id]
	if !existed {
		label := r.Name
		if hasSrc {
			label = src.Name + " rule " + rule
		}
		if label == "" {
			label = "route"
		}
		n = b.node(&Node{ID: id, Kind: KindRoute, Class: class, Label: label, Detail: strings.Join(vh.Domains, " ") + " " + matchText(r.Match)})
		if hasSrc {
			k := src
			n.Resource = &k
			n.Links.YAML = b.sourceLink(k)
		}
		b.classOf[id] = class
	}
	// The route configurations holding this route, for the Envoy link.
	n.Links.Envoy = b.envoyLink(class, "dynamic_route_configs", append(routeConfigNames(n.Links.Envoy), rcName)...)
	b.edge(from, id, 0)
	switch {
	case r.Forward != nil:
		for _, wc := range r.Forward.Clusters {
			if cn := b.cluster(class, wc.Name, clusters); cn != "" {
				b.edge(id, cn, wc.Weight)
				b.routeClus[id] = appendNew(b.routeClus[id], cn)
				if set != nil {
					b.routeClus[set.ID] = appendNew(b.routeClus[set.ID], cn)
				}
				if b.clusterUse[cn] == nil {
					b.clusterUse[cn] = map[string]bool{}
				}
				b.clusterUse[cn][id] = true
			}
		}
	case r.Redirect != nil:
		n.Detail += " → redirect " + strconv.FormatUint(uint64(r.Redirect.Code), 10)
	case r.DirectResponse != nil:
		n.Detail += " → " + strconv.FormatUint(uint64(r.DirectResponse.Status), 10)
	}
}

// routeConfigNames reads back the names an Envoy link already lists.
func routeConfigNames(link string) []string {
	if link == "" {
		return nil
	}
	u, err := url.Parse(link)
	if err != nil {
		return nil
	}
	re := strings.TrimSuffix(strings.TrimPrefix(u.Query().Get("name_regex"), "^("), ")$")
	var out []string
	for _, q := range strings.Split(re, "|") {
		out = append(out, unquoteMeta(q))
	}
	return out
}

func unquoteMeta(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (b *builder) cluster(class, name string, clusters map[string]*ir.Cluster) string {
	if name == ir.InvalidBackendCluster {
		id := "cluster:" + class + ":" + name
		b.node(&Node{ID: id, Kind: KindCluster, Class: class, Label: "invalid backend", Detail: "answered with 500",
			Health: "error", Problems: []Problem{{Level: string(status.Error), Message: "a backend that does not resolve: its share of requests is answered with 500"}}})
		return id
	}
	c := clusters[name]
	id := "cluster:" + class + ":" + name
	if _, ok := b.byID[id]; ok {
		return id
	}
	n := &Node{ID: id, Kind: KindCluster, Class: class, Label: name, Links: Links{Envoy: b.envoyLink(class, "dynamic_active_clusters", name)}}
	b.node(n)
	b.classOf[id] = class
	b.clusterOf[id] = name
	if c == nil {
		n.Health = "error"
		n.Problems = []Problem{{Level: string(status.Error), Message: "no such cluster in the configuration"}}
		return id
	}
	n.Detail = c.Service
	if c.Subset != "" {
		n.Detail += " subset " + c.Subset
	}
	if c.Protocol != "" {
		n.Detail += " (" + c.Protocol + ")"
	}
	for _, src := range c.Sources {
		if src.Kind == resource.KindServiceEntry || src.Kind == resource.KindService {
			k := refKey(src)
			n.Resource = &k
			n.Links.YAML = b.sourceLink(k)
			break
		}
	}
	if len(c.Endpoints) == 0 && c.Discovery == ir.DiscoveryEDS {
		n.Health = "warning"
		n.Problems = append(n.Problems, Problem{Level: string(status.Warning), Message: "no endpoints: requests are answered 503 (no healthy upstream)"})
	}
	for _, e := range c.Endpoints {
		addr := e.Address + ":" + strconv.FormatUint(uint64(e.Port), 10)
		if strings.Contains(e.Address, ":") {
			addr = "[" + e.Address + "]:" + strconv.FormatUint(uint64(e.Port), 10)
		}
		eid := "endpoint:" + class + ":" + name + ":" + addr
		detail := ""
		if v := e.Labels["version"]; v != "" {
			detail = "version " + v
		}
		b.node(&Node{ID: eid, Kind: KindEndpoint, Class: class, Label: addr, Detail: detail,
			Links: Links{Envoy: b.envoyLink(class, "dynamic_endpoint_configs", name)}})
		b.classOf[eid] = class
		b.endpointOf[eid] = [2]string{name, addr}
		b.edge(id, eid, e.Weight)
	}
	return id
}

// serverNames lists the SNI names a listener's filter chains are chosen
// by (the hosts of its HTTPS, TLS and passthrough servers), the first few.
func serverNames(l *ir.Listener) string {
	var names []string
	for _, fc := range l.FilterChains {
		for _, n := range fc.ServerNames {
			names = appendNew(names, n)
		}
	}
	if len(names) > 3 {
		return strings.Join(names[:3], " ") + fmt.Sprintf(" +%d", len(names)-3)
	}
	return strings.Join(names, " ")
}

func listenerProtocols(l *ir.Listener) string {
	var out []string
	for _, fc := range l.FilterChains {
		p := "TCP"
		switch {
		case fc.HTTP != nil && fc.TLS != nil:
			p = "HTTPS"
		case fc.HTTP != nil:
			p = "HTTP"
		case fc.TLS != nil:
			p = "TLS"
		case len(fc.ServerNames) > 0:
			p = "TLS passthrough"
		}
		out = appendNew(out, p)
	}
	return strings.Join(out, "+")
}

// routeSource is the resource a route came from and which of its rules
// it is. Istio names routes "<namespace>.<name>.<rule>"; routes of a
// Gateway API HTTPRoute or GRPCRoute come from a synthetic VirtualService
// per listener and are named "<kind>.<namespace>.<name>.<rule>.<match>"
// (namespaces hold no dots, names may).
func routeSource(r *ir.Route) (key resource.Key, rule string, ok bool) {
	if r.Source.Kind == "" {
		return resource.Key{}, "", false
	}
	key = refKey(r.Source)
	if strings.Contains(r.Source.Name, "~") {
		parts := strings.Split(r.Name, ".")
		if kind, known := routeKinds[parts[0]]; known && len(parts) >= 5 {
			n := len(parts)
			return resource.Key{Kind: kind, Namespace: parts[1], Name: strings.Join(parts[2:n-2], ".")}, parts[n-2] + "." + parts[n-1], true
		}
	}
	rule = r.Name
	if rest, found := strings.CutPrefix(r.Name, r.Source.Namespace+"."+r.Source.Name+"."); found {
		rule = rest
	}
	return key, rule, true
}

func matchText(m ir.Match) string {
	var parts []string
	if m.Path != nil {
		switch m.Path.Type {
		case ir.MatchPrefix:
			parts = append(parts, m.Path.Value+"*")
		case ir.MatchRegex:
			parts = append(parts, "~"+m.Path.Value)
		default:
			parts = append(parts, m.Path.Value)
		}
	}
	for _, h := range m.Headers {
		parts = append(parts, fmt.Sprintf("%s=%s", h.Name, h.Match.Value))
	}
	return strings.Join(parts, " ")
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
