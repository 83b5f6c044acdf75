package gateway

import (
	"fmt"
	"sort"
	"strings"

	networking "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/status"
)

// classState accumulates one class's configuration.
type classState struct {
	class  string // ClassName(labels)
	labels map[string]string
	ports  map[portKey]*portGroup
	order  []portKey
	routes map[string]*routeTable
	// clusters is keyed by the key, not the name: a name would be built
	// for every route of every build. It is filled at the end of the
	// class (see classClusters), from used, the keys bindings used
	// directly, in order, and memoTables, the memoized tables, whose
	// VirtualServices' clusters are used.
	clusters   map[clusterKey]struct{}
	used       []clusterKey
	memoTables []*tableMemo
	// clustersOf records the VirtualServices whose HTTP clusters are in
	// clusters already: one bound through several hosts or servers adds
	// them once.
	clustersOf map[*vsInfo]struct{}
	secrets    map[string]*ir.Secret
}

type portKey struct {
	bind string
	port uint32
}

// portGroup is every server that landed on one address:port.
type portGroup struct {
	key     portKey
	family  string
	owner   *gwServer // the oldest server: it decided the port's family
	servers []*gwServer
	// sni maps SNI names ("" for the catch-all) to what claimed them;
	// sniBy to the resource that did (nil for terminated servers, which
	// claim theirs before passthrough routes whatever their age).
	sni   map[string]string
	sniBy map[string]metav1.Object
	// chains collects TLS-family filter chains in creation order.
	chains []*ir.FilterChain
	tcp    *ir.TCPFilter
	tcpBy  *vsInfo
}

// routeTable is a route configuration under construction.
type routeTable struct {
	name   string
	port   uint32
	vhosts map[string]*ir.VirtualHost
	order  []string
	// added remembers which VirtualService already contributed to which
	// virtual host, so binding through two servers never duplicates routes.
	// Within one server's pass no pair repeats (a VirtualService is bound
	// once per Gateway, its hosts once per server), so the first pass only
	// lists its pairs, and the map is made when a second server binds:
	// most tables have one server, and hashing every pair for them was a
	// tenth of binding.
	added     map[addedKey]bool
	firstPass []addedKey
	passes    int
	// reorder marks the virtual hosts whose routes may hold a catch-all
	// before their end (see appendRoutes).
	reorder map[string]bool
	// memoized says the table comes from a tableMemo: final is its
	// virtual hosts, complete and in order, and vhosts and order are
	// unused.
	memoized bool
	final    []*ir.VirtualHost
}

type addedKey struct {
	host string
	vs   *vsInfo
}

// newRouteTable makes a route table sized like the class's last one of
// the same name.
func (b *builder) newRouteTable(st *classState, name string, port uint32) *routeTable {
	n := b.sizes["routes\x00"+st.class+"\x00"+name]
	return &routeTable{name: name, port: port, vhosts: make(map[string]*ir.VirtualHost, n), order: make([]string, 0, n)}
}

// appendRoutes appends one VirtualService's routes, cut after their first
// catch-all (see httpRoutes), to the host's virtual host, and returns the
// owner of a catch-all the host already had, or nil. Only then can a
// catch-all end up before other routes: each contribution has one at
// most, as its last route. Such hosts are marked, so that finalRoutes
// reorders them and only them.
func (t *routeTable) appendRoutes(host string, vh *ir.VirtualHost, routes []*ir.Route) *ir.Ref {
	by := catchAllOwner(vh)
	if by != nil {
		if t.reorder == nil {
			t.reorder = map[string]bool{}
		}
		t.reorder[host] = true
	}
	vh.Routes = append(vh.Routes, routes...)
	return by
}

// finalRoutes returns the host's routes with every catch-all moved after
// the other routes (see appendRoutes).
func (t *routeTable) finalRoutes(host string, vh *ir.VirtualHost) []*ir.Route {
	if !t.reorder[host] {
		return vh.Routes
	}
	return catchAllLast(vh.Routes)
}

func (t *routeTable) vhost(host string) *ir.VirtualHost {
	if vh, ok := t.vhosts[host]; ok {
		return vh
	}
	vh := &ir.VirtualHost{Name: ir.VirtualHostName(host, t.port), Domains: []string{host}}
	t.vhosts[host] = vh
	t.order = append(t.order, host)
	return vh
}

// buildClass binds the Gateways of one class and returns its proxy
// configuration (without name and labels, which the caller sets).
func (b *builder) buildClass(gateways []*networking.Gateway, labels map[string]string) *ir.Proxy {
	class := ClassName(labels)
	st := &classState{
		class:      class,
		labels:     labels,
		ports:      map[portKey]*portGroup{},
		routes:     map[string]*routeTable{},
		clustersOf: make(map[*vsInfo]struct{}, b.sizes["clustersOf\x00"+class]),
		secrets:    map[string]*ir.Secret{},
	}
	b.cur = st
	defer func() {
		b.cur = nil
		if st.clusters != nil {
			b.nextSizes["clusters\x00"+class] = len(st.clusters)
			b.nextSizes["clustersOf\x00"+class] = len(st.clustersOf)
		} else { // the last build's clusters (see classClusters)
			b.nextSizes["clusters\x00"+class] = b.sizes["clusters\x00"+class]
			b.nextSizes["clustersOf\x00"+class] = b.sizes["clustersOf\x00"+class]
		}
		for name, t := range st.routes {
			if !t.memoized {
				b.nextSizes["routes\x00"+class+"\x00"+name] = len(t.vhosts)
			}
		}
	}()
	proxy := &ir.Proxy{}
	selected := map[string]bool{}
	for _, gw := range gateways {
		key := gw.Namespace + "/" + gw.Name
		selected[key] = true
		proxy.Gateways = append(proxy.Gateways, key)
		for _, s := range b.servers[key] {
			b.mergeServer(st, s)
		}
	}
	// Terminated chains claim their SNI names before passthrough chains, so
	// a passthrough route can never shadow a certificate a server owns.
	for _, k := range st.order {
		g := st.ports[k]
		for _, s := range g.servers {
			switch s.kind {
			case kindHTTP:
				b.bindHTTP(st, g, s, selected)
			case kindHTTPS:
				b.bindHTTPS(st, g, s, selected)
			case kindTLSTerminated:
				b.bindTLSTerminated(st, g, s, selected)
			case kindTCP:
				b.bindTCP(st, g, s, selected)
			}
		}
	}
	for _, k := range st.order {
		g := st.ports[k]
		claimTerminatedSNI(g)
		for _, s := range g.servers {
			if s.kind == kindPassthrough {
				b.bindPassthrough(st, g, s, selected)
			}
		}
	}
	proxy.Listeners = b.assembleListeners(st)
	proxy.RouteConfigs = assembleRoutes(st)
	b.attachSecurity(st, proxy)
	markRateLimited(proxy)

	b.classClusters(st, proxy)
	snames := make([]string, 0, len(st.secrets))
	for n := range st.secrets {
		snames = append(snames, n)
	}
	sort.Strings(snames)
	for _, n := range snames {
		proxy.Secrets = append(proxy.Secrets, st.secrets[n])
	}
	return proxy
}

// namedCluster is a cluster's key with its name.
type namedCluster struct {
	name string
	key  clusterKey
}

// sameClusters reports whether order lists exactly the clusters of set
// (it never lists one twice).
func sameClusters(order []namedCluster, set map[clusterKey]struct{}) bool {
	if len(order) != len(set) {
		return false
	}
	for _, u := range order {
		if _, ok := set[u.key]; !ok {
			return false
		}
	}
	return true
}

// mergeServer places a server on its port, resolving conflicts in favour of
// servers already there (servers arrive oldest Gateway first).
func (b *builder) mergeServer(st *classState, s *gwServer) {
	k := portKey{bind: s.bind, port: s.port}
	g, ok := st.ports[k]
	if !ok {
		g = &portGroup{key: k, family: s.kind.family(), owner: s, sni: map[string]string{}, sniBy: map[string]metav1.Object{}}
		st.ports[k] = g
		st.order = append(st.order, k)
	}
	if g.family != s.kind.family() {
		b.report.Add(s.gwKey, gwMessage(status.Error, status.ConflictingGateways, status.ReasonConflictingServer, s.field,
			"port %d is already served as %s by %s, which wins because %s; this %s server is ignored",
			s.port, g.owner.kind, g.owner.describe(), serverWins(g.owner, s), s.kind))
		b.noteServer(s, false)
		return
	}
	if g.family == "TLS" {
		var kept []serverHost
		for _, h := range s.hosts {
			name := h.Host
			if name == "*" {
				name = ""
			}
			if owner, dup := g.sni[name]; dup && owner != s.describe() {
				shown := h.Host
				b.report.Add(s.gwKey, gwMessage(status.Error, status.ConflictingGateways, status.ReasonConflictingServer, s.field+".hosts",
					"host %q on TLS port %d is already served by %s, which wins because %s; it is dropped from this server",
					shown, s.port, owner, wins(g.sniBy[name], s.gw)))
				continue
			}
			g.sni[name] = s.describe()
			g.sniBy[name] = s.gw
			kept = append(kept, h)
		}
		if len(kept) == 0 {
			b.noteServer(s, false)
			return
		}
		if len(kept) != len(s.hosts) {
			cp := *s
			cp.hosts = kept
			s = &cp
		}
	}
	g.servers = append(g.servers, s)
	b.noteServer(s, true)
	if s.tls != nil {
		for _, sec := range s.secrets {
			b.addSecret(sec)
		}
	}
}

// boundVirtualServices yields the VirtualServices that name the server's
// Gateway, oldest first.
func (b *builder) boundVirtualServices(s *gwServer) []*vsInfo {
	return b.vsByGateway[s.gwKey.NamespacedName()]
}

func (b *builder) useCluster(st *classState, ck clusterKey) {
	st.used = append(st.used, ck)
}

// bindHTTPRoutes adds the HTTP rules of every bound VirtualService to a
// route table, for one server.
func (b *builder) bindHTTPRoutes(st *classState, t *routeTable, s *gwServer, requireTLS bool) {
	gwKey := s.gwKey.NamespacedName()
	t.passes++
	first := t.passes == 1
	if !first && t.added == nil {
		t.added = make(map[addedKey]bool, len(t.firstPass))
		for _, k := range t.firstPass {
			t.added[k] = true
		}
		t.firstPass = nil
	}
	var covered map[string]bool // hosts with routes: only redirects need them
	if requireTLS {
		covered = map[string]bool{}
	}
	for _, info := range b.boundVirtualServices(s) {
		if len(info.http) == 0 {
			continue
		}
		for _, host := range hostIntersections(info, s) {
			added := addedKey{host: host, vs: info}
			if !first && t.added[added] {
				if covered != nil {
					covered[host] = true
				}
				continue
			}
			routes := b.httpRoutes(info, gwKey, s.port, st.labels)
			if len(routes) == 0 {
				continue
			}
			if first {
				t.firstPass = append(t.firstPass, added)
			} else {
				t.added[added] = true
			}
			if covered != nil {
				covered[host] = true
			}
			vh := t.vhost(host)
			if by := t.appendRoutes(host, vh, routes); by != nil && *by != info.ref && allCatchAll(routes) {
				b.report.Add(info.key, b.unreachableMessage(vh, by, info))
			}
			vh.RequireTLS = vh.RequireTLS || requireTLS
			if rl := b.gwRateLimit[gwKey]; rl != nil && vh.LocalRateLimit == nil {
				vh.LocalRateLimit = rl // the oldest Gateway's, when hosts are shared
			}
			vh.Sources = appendRef(vh.Sources, info.ref)
			if _, done := st.clustersOf[info]; !done {
				st.clustersOf[info] = struct{}{}
				for _, ck := range info.allHTTPClusters() {
					b.useCluster(st, ck)
				}
			}
		}
	}
	if requireTLS {
		// Istio redirects every host of an httpsRedirect server, bound to a
		// VirtualService or not.
		for _, h := range s.hosts {
			if !covered[h.Host] {
				vh := t.vhost(h.Host)
				vh.RequireTLS = true
				vh.Sources = appendRef(vh.Sources, s.gwRef)
			}
		}
	}
}

// unreachableMessage says that info's routes on vh, which all match
// every request, come after those of by, which already did.
func (b *builder) unreachableMessage(vh *ir.VirtualHost, by *ir.Ref, info *vsInfo) status.Message {
	return status.Message{Code: status.VirtualServiceUnreachableRule, Level: status.Warning, Reason: status.ReasonConflictingServer,
		Field: "spec.http", Message: fmt.Sprintf("on %s, VirtualService %s/%s already matches every request and its routes come first because %s, so these routes are not reached while it exists",
			vh.Name, by.Namespace, by.Name, wins(b.vsObject(by.Namespace, by.Name), info.obj))}
}

// httpRoutes returns a VirtualService's routes for one server, cut after
// the first that matches every request (the rest are never reached).
// The list is remembered with the conversion, as its routes are.
func (b *builder) httpRoutes(info *vsInfo, gwKey string, port uint32, labels map[string]string) []*ir.Route {
	key := boundKey{gateway: gwKey, port: port}
	if b.usesSourceLabels {
		key.class = ClassName(labels)
	}
	if info.routes.set && info.routes.key == key {
		return info.routes.routes
	}
	for _, r := range info.moreRoutes {
		if r.key == key {
			return r.routes
		}
	}
	var routes []*ir.Route
	for _, rule := range info.http {
		for _, m := range rule.matches {
			if !m.appliesTo(gwKey, port, labels) {
				continue
			}
			routes = append(routes, m.route)
		}
	}
	routes = untilCatchAll(routes)
	if !info.routes.set {
		info.routes = boundRoutes{key: key, routes: routes, set: true}
	} else {
		info.moreRoutes = append(info.moreRoutes, boundRoutes{key: key, routes: routes, set: true})
	}
	return routes
}

// boundRoutes is a VirtualService's routes for one server.
type boundRoutes struct {
	key    boundKey
	routes []*ir.Route
	set    bool
}

func (b *builder) bindHTTP(st *classState, g *portGroup, s *gwServer, _ map[string]bool) {
	name := ir.HTTPRouteName(s.port)
	t, ok := st.routes[name]
	switch {
	case !ok && b.memoizable(s) && onlyHTTPServer(g, s):
		t = &routeTable{name: name, port: s.port, memoized: true}
		st.routes[name] = t
		b.bindHTTPTable(st, t, s, s.httpsRedirect)
	case !ok:
		t = b.newRouteTable(st, name, s.port)
		st.routes[name] = t
		fallthrough
	default:
		b.bindHTTPRoutes(st, t, s, s.httpsRedirect)
	}
	if len(g.chains) == 0 {
		g.chains = append(g.chains, &ir.FilterChain{
			Name: name,
			HTTP: &ir.HTTPFilter{RouteConfig: name, StatPrefix: statPrefix(s)},
		})
	}
	g.chains[0].Sources = appendRef(g.chains[0].Sources, s.gwRef)
}

// onlyHTTPServer reports whether s is the one HTTP server of its port,
// and so the only one to fill the port's route table.
func onlyHTTPServer(g *portGroup, s *gwServer) bool {
	for _, o := range g.servers {
		if o != s && o.kind == kindHTTP {
			return false
		}
	}
	return true
}

func statPrefix(s *gwServer) string { return fmt.Sprintf("outbound_%s_%d", s.bind, s.port) }

func (s *gwServer) serverNames() []string {
	var out []string
	for _, n := range s.sniNames() {
		if n == "" {
			return nil // catch-all: matches any SNI, and none
		}
		out = append(out, n)
	}
	return out
}

func (b *builder) bindHTTPS(st *classState, g *portGroup, s *gwServer, _ map[string]bool) {
	name := ir.HTTPSRouteName(s.port, s.portName, s.gw.Name, s.gw.Namespace)
	if b.memoizable(s) {
		t := &routeTable{name: name, port: s.port, memoized: true}
		st.routes[name] = t
		b.bindHTTPTable(st, t, s, false)
	} else {
		t := b.newRouteTable(st, name, s.port)
		st.routes[name] = t
		b.bindHTTPRoutes(st, t, s, false)
		if b.synthetic(s.gwKey) {
			b.misdirected(t, g, s)
		}
	}
	g.chains = append(g.chains, &ir.FilterChain{
		Name:        name,
		ServerNames: s.serverNames(),
		TLS:         s.tls,
		HTTP:        &ir.HTTPFilter{RouteConfig: name, StatPrefix: statPrefix(s), ForwardClientCert: true},
		Sources:     []ir.Ref{s.gwRef},
	})
}

// misdirected answers 421 (Misdirected Request) on a Gateway API HTTPS
// listener's chain for hosts it does not serve, as the spec's
// GatewayHTTPSListenerDetectMisdirectedRequests asks: a client reusing a
// connection made for one listener's name (HTTP/2 coalescing) for a
// host another HTTPS server on the port holds, or that no server there
// holds, is told to connect again. The other servers' names come first
// (a listener for *.example.com must not answer for a.example.com when
// another listener has it), then a catch-all unless the listener serves
// any host.
func (b *builder) misdirected(t *routeTable, g *portGroup, s *gwServer) {
	own := map[string]bool{}
	for _, h := range s.hosts {
		own[h.Host] = true
	}
	add := func(host string) {
		if _, taken := t.vhosts[host]; taken || own[host] {
			return
		}
		vh := t.vhost(host)
		vh.Routes = append(vh.Routes, &ir.Route{
			Name:           "misdirected",
			Source:         s.gwRef,
			Match:          ir.Match{Path: &ir.StringMatch{Type: ir.MatchPrefix, Value: "/"}},
			DirectResponse: &ir.DirectResponse{Status: 421},
		})
	}
	for _, other := range g.servers {
		if other == s || other.kind != kindHTTPS {
			continue
		}
		for _, oh := range other.hosts {
			for _, h := range s.hosts {
				if oh.Host != h.Host && hostCovers(h.Host, oh.Host) {
					add(oh.Host)
				}
			}
		}
	}
	if !own["*"] {
		add("*")
	}
}

// firstTCPRule finds the oldest TCP rule bound to a server.
func (b *builder) firstTCPRule(s *gwServer) (*vsInfo, *l4Rule, []*vsInfo) {
	gwKey := s.gwKey.NamespacedName()
	var winner *vsInfo
	var rule *l4Rule
	var shadowed []*vsInfo
	for _, info := range b.boundVirtualServices(s) {
		if len(info.tcp) == 0 || !hostsIntersect(info, s) {
			continue
		}
		for _, r := range info.tcp {
			applies := false
			for _, m := range r.matches {
				if m.appliesTo(gwKey, s.port) {
					applies = true
				}
			}
			if !applies {
				continue
			}
			if rule == nil {
				winner, rule = info, r
			} else if info != winner {
				shadowed = append(shadowed, info)
			}
		}
	}
	return winner, rule, shadowed
}

func (b *builder) tcpFilter(st *classState, info *vsInfo, rule *l4Rule) *ir.TCPFilter {
	for _, ck := range rule.keys {
		b.useCluster(st, ck)
	}
	return &ir.TCPFilter{StatPrefix: rule.clusters[0].Name, Clusters: rule.clusters, Source: info.ref}
}

func (b *builder) reportShadowed(shadowed []*vsInfo, winner *vsInfo, port uint32) {
	for _, info := range shadowed {
		b.report.Add(info.key, status.Message{Code: status.VirtualServiceUnreachableRule, Level: status.Warning, Reason: status.ReasonConflictingServer,
			Field: "spec.tcp", Message: fmt.Sprintf("TCP port %d is already routed by VirtualService %s, which wins because %s; these tcp rules are not used there",
				port, winner.key.NamespacedName(), wins(winner.obj, info.obj))})
	}
}

func (b *builder) bindTCP(st *classState, g *portGroup, s *gwServer, _ map[string]bool) {
	info, rule, shadowed := b.firstTCPRule(s)
	if rule == nil {
		return
	}
	if g.tcp != nil {
		// Another TCP server on this port was bound first.
		if g.tcpBy != info {
			b.reportShadowed(append([]*vsInfo{info}, shadowed...), g.tcpBy, s.port)
		}
		return
	}
	b.reportShadowed(shadowed, info, s.port)
	g.tcp = b.tcpFilter(st, info, rule)
	g.tcpBy = info
	g.chains = append(g.chains, &ir.FilterChain{Name: fmt.Sprintf("tcp.%d", s.port), TCP: g.tcp, Sources: []ir.Ref{s.gwRef, info.ref}})
}

func (b *builder) bindTLSTerminated(st *classState, g *portGroup, s *gwServer, _ map[string]bool) {
	info, rule, shadowed := b.firstTCPRule(s)
	if rule == nil {
		return
	}
	b.reportShadowed(shadowed, info, s.port)
	g.chains = append(g.chains, &ir.FilterChain{
		Name:        fmt.Sprintf("tls.%d.%s.%s.%s", s.port, s.portName, s.gw.Name, s.gw.Namespace),
		ServerNames: s.serverNames(),
		TLS:         s.tls,
		TCP:         b.tcpFilter(st, info, rule),
		Sources:     []ir.Ref{s.gwRef, info.ref},
	})
}

// bindPassthrough creates one filter chain per tls rule match, selected by
// the SNI names the rule and the server have in common.
func (b *builder) bindPassthrough(st *classState, g *portGroup, s *gwServer, _ map[string]bool) {
	gwKey := s.gwKey.NamespacedName()
	for _, info := range b.boundVirtualServices(s) {
		for _, rule := range info.tls {
			for mi, m := range rule.matches {
				if !m.appliesTo(gwKey, s.port) {
					continue
				}
				var names []string
				for _, sni := range m.sniHosts {
					for _, sh := range s.hosts {
						if sh.Namespace != "*" && sh.Namespace != info.obj.Namespace {
							continue
						}
						if h, ok := intersectHosts(sni, sh.Host); ok {
							n := h
							if n == "*" {
								n = ""
							}
							if owner, dup := g.sni["chain:"+n]; dup {
								b.report.Add(info.key, status.Message{Code: status.VirtualServiceUnreachableRule, Level: status.Warning, Reason: status.ReasonConflictingServer,
									Field:   fmt.Sprintf("%s.match[%d].sniHosts", rule.field, mi),
									Message: fmt.Sprintf("SNI %q on port %d is already routed by %s, which wins because %s", h, s.port, owner, sniWins(g.sniBy["chain:"+n], info.obj))})
								continue
							}
							if !contains(names, n) {
								names = append(names, n)
							}
						}
					}
				}
				if len(names) == 0 {
					continue
				}
				for _, n := range names {
					g.sni["chain:"+n] = fmt.Sprintf("%s %s", info.key, rule.field)
					g.sniBy["chain:"+n] = info.obj
				}
				var serverNames []string
				for _, n := range names {
					if n == "" {
						serverNames = nil
						break
					}
					serverNames = append(serverNames, n)
				}
				sort.Strings(serverNames)
				g.chains = append(g.chains, &ir.FilterChain{
					Name:        fmt.Sprintf("passthrough.%d.%s", s.port, strings.Join(names, ",")),
					ServerNames: serverNames,
					TCP:         b.tcpFilter(st, info, rule),
					Sources:     []ir.Ref{s.gwRef, info.ref},
				})
			}
		}
	}
}

// claimTerminatedSNI records the SNI names of terminated chains so that
// passthrough chains cannot reuse them (Envoy rejects duplicate matches).
func claimTerminatedSNI(g *portGroup) {
	for _, fc := range g.chains {
		if fc.TLS == nil {
			continue
		}
		if len(fc.ServerNames) == 0 {
			g.sni["chain:"] = "TLS server " + fc.Name
		}
		for _, n := range fc.ServerNames {
			g.sni["chain:"+n] = "TLS server " + fc.Name
		}
	}
}

func (b *builder) assembleListeners(st *classState) []*ir.Listener {
	var out []*ir.Listener
	for _, k := range st.order {
		g := st.ports[k]
		if len(g.chains) == 0 {
			continue
		}
		l := &ir.Listener{Name: ir.ListenerName(k.bind, k.port), Address: k.bind, Port: k.port, FilterChains: g.chains}
		for _, s := range g.servers {
			l.Sources = appendRef(l.Sources, s.gwRef)
		}
		out = append(out, l)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return out[i].Address < out[j].Address
	})
	return out
}

func assembleRoutes(st *classState) []*ir.RouteConfig {
	names := make([]string, 0, len(st.routes))
	for n := range st.routes {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*ir.RouteConfig
	for _, n := range names {
		t := st.routes[n]
		rc := &ir.RouteConfig{Name: n}
		if t.memoized {
			rc.VirtualHosts = t.final
			out = append(out, rc)
			continue
		}
		for _, h := range t.order {
			vh := t.vhosts[h]
			vh.Routes = t.finalRoutes(h, vh)
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
		}
		out = append(out, rc)
	}
	return out
}

// catchAllOwner returns the source of a route in vh that matches every
// request, if any: routes after it can never be reached.
func catchAllOwner(vh *ir.VirtualHost) *ir.Ref {
	for _, r := range vh.Routes {
		if isCatchAll(r) {
			src := r.Source
			return &src
		}
	}
	return nil
}

// isCatchAll is Istio's IsCatchAllRoute on the IR: a route matching every
// path (no uri match, prefix "/" or regex ".*") with no header or query
// parameter condition. Method, authority and scheme matches are headers.
func isCatchAll(r *ir.Route) bool {
	m := r.Match
	if len(m.Headers) > 0 || len(m.QueryParams) > 0 {
		return false
	}
	return m.Path == nil || m.Path.Type == ir.MatchPrefix && m.Path.Value == "/" || m.Path.Type == ir.MatchRegex && m.Path.Value == ".*"
}

// untilCatchAll drops the routes of one VirtualService behind its first
// catch-all, as Istio does: they can never match, and catchAllLast must not
// make them reachable by moving that catch-all behind them.
func untilCatchAll(routes []*ir.Route) []*ir.Route {
	for i, r := range routes {
		if isCatchAll(r) {
			return routes[:i+1]
		}
	}
	return routes
}

func allCatchAll(routes []*ir.Route) bool {
	for _, r := range routes {
		if !isCatchAll(r) {
			return false
		}
	}
	return true
}

// catchAllLast moves catch-all routes behind the others, keeping the
// relative order within each group, as Istio does for every gateway virtual
// host (route.SortVHostRoutes): when VirtualServices merge on one host, an
// older one's catch-all no longer hides a newer one's specific routes.
func catchAllLast(routes []*ir.Route) []*ir.Route {
	var tail []*ir.Route
	out := routes[:0:0]
	for _, r := range routes {
		if isCatchAll(r) {
			tail = append(tail, r)
		} else {
			out = append(out, r)
		}
	}
	if len(tail) == 0 {
		return routes
	}
	return append(out, tail...)
}
