package gateway

import (
	"reflect"
	"slices"
	"strings"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/status"
)

// tableMemo is the binding of one route table that a single server fills
// (every HTTPS server's own table; an HTTP port's table when one server
// holds the port), kept from build to build so that a change re-binds
// only the hosts it touches.
//
// Binding a table is a pass over every VirtualService bound to the
// server's Gateway: each adds its routes to each host it shares with the
// server. At 10,000 VirtualServices on one port that pass made a new
// virtual host for every host on every change (a third of a change's
// binding) although one VirtualService had changed. A virtual host is a
// function of its host and of the VirtualServices that contribute to it,
// in their order; so the memo keeps, per position in the list of bound
// VirtualServices, the hosts that one contributed to, and per host its
// contributors and its virtual host. When the list holds the same
// VirtualServices (the same converted objects) at the same positions but
// for a few, only the hosts those few contributed to before or do now are
// built again; every other virtual host is the very object of the last
// build, which the translator then recognises by identity.
//
// Everything a pass reads besides the VirtualServices is compared before
// the memo is used (the server's Gateway, port, hosts and redirect, the
// Gateway's rate limit, whether classes differ by source labels), and
// anything else (another length, many changes, another server) builds it
// again from scratch, with the same code. The result equals bindHTTPRoutes'
// (TestTableMemoEqualsBinding), which still binds tables that several
// servers share and Gateway API listeners' HTTPS tables.
type tableMemo struct {
	// The pass's inputs besides the VirtualServices.
	gwKey            string
	port             uint32
	hosts            []serverHost
	gwRef            ir.Ref
	requireTLS       bool
	rateLimit        *ir.LocalRateLimit
	usesSourceLabels bool

	// infos are the bound VirtualServices, hostsAt the hosts each
	// contributed routes to (in hostIntersections' order, nil for none).
	infos   []*vsInfo
	hostsAt [][]*tableHost
	byHost  map[string]*tableHost
	// building is set while the memo is changed in place: a build that
	// did not finish leaves it unusable.
	building bool
	// clustersChanged says whether this build changed the set of
	// VirtualServices' clusters the table uses (see classClusters).
	clustersChanged bool
}

// tableHost is one host of a memoized table.
type tableHost struct {
	host string
	// at lists the positions of its contributors, ascending.
	at []int32
	vh *ir.VirtualHost
	// reports are the findings of its contributions, by position.
	reports []tableReport
}

type tableReport struct {
	at    int32
	entry status.Entry
}

// memoizable reports whether a table filled by server s alone may be
// bound through a tableMemo.
func (b *builder) memoizable(s *gwServer) bool {
	return !b.noTableMemo && !b.synthetic(s.gwKey)
}

// sameInputs reports whether the memo was made for this pass.
func (m *tableMemo) sameInputs(b *builder, s *gwServer, requireTLS bool, rl *ir.LocalRateLimit) bool {
	return !m.building && m.gwKey == s.gwKey.NamespacedName() && m.port == s.port && m.gwRef == s.gwRef &&
		m.requireTLS == requireTLS && m.usesSourceLabels == b.usesSourceLabels &&
		slices.Equal(m.hosts, s.hosts) && (m.rateLimit == rl || reflect.DeepEqual(m.rateLimit, rl))
}

// bindHTTPTable binds the HTTP rules of every VirtualService bound to s
// into t, which no other server fills, through the class's memo of it
// (see tableMemo). Its findings, the clusters it uses and its virtual
// hosts are those bindHTTPRoutes would give.
func (b *builder) bindHTTPTable(st *classState, t *routeTable, s *gwServer, requireTLS bool) {
	key := st.class + "\x00" + t.name
	infos := b.boundVirtualServices(s)
	rl := b.gwRateLimit[s.gwKey.NamespacedName()]
	m := b.prevTables[key]
	var changed []int
	if m != nil && m.sameInputs(b, s, requireTLS, rl) && len(m.infos) == len(infos) {
		for i, info := range infos {
			if m.infos[i] != info {
				changed = append(changed, i)
				if len(changed) > 16+len(infos)/8 {
					m = nil // cheaper built again
					break
				}
			}
		}
	} else {
		m = nil
	}
	if m == nil {
		m = &tableMemo{gwKey: s.gwKey.NamespacedName(), port: s.port, hosts: s.hosts, gwRef: s.gwRef,
			requireTLS: requireTLS, rateLimit: rl, usesSourceLabels: b.usesSourceLabels}
		m.fill(b, st, s, infos)
		m.clustersChanged = true
	} else {
		m.clustersChanged = false
		if len(changed) > 0 {
			m.update(b, st, s, infos, changed)
		}
	}
	b.nextTables[key] = m
	m.emit(b, st, t, s)
}

// contributedHosts returns the hosts info adds routes to on server s.
func (b *builder) contributedHosts(st *classState, info *vsInfo, s *gwServer) []string {
	if len(info.http) == 0 {
		return nil
	}
	hosts := hostIntersections(info, s)
	if len(hosts) == 0 || len(b.httpRoutes(info, s.gwKey.NamespacedName(), s.port, st.labels)) == 0 {
		return nil
	}
	return hosts
}

// fill builds the memo from scratch.
func (m *tableMemo) fill(b *builder, st *classState, s *gwServer, infos []*vsInfo) {
	m.infos = slices.Clone(infos)
	m.hostsAt = make([][]*tableHost, len(infos))
	m.byHost = make(map[string]*tableHost, len(infos))
	for i, info := range infos {
		m.hostsAt[i] = m.hostsOf(b.contributedHosts(st, info, s))
		for _, th := range m.hostsAt[i] {
			th.at = append(th.at, int32(i))
		}
	}
	for h, th := range m.byHost {
		m.build(b, st, h, th)
	}
}

// update builds again the hosts that the VirtualServices at the changed
// positions contributed to or do now.
func (m *tableMemo) update(b *builder, st *classState, s *gwServer, infos []*vsInfo, changed []int) {
	m.building = true
	touched := map[string]*tableHost{}
	for _, i := range changed {
		old, was := m.infos[i], len(m.hostsAt[i]) > 0
		for _, th := range m.hostsAt[i] {
			th.at = slices.DeleteFunc(th.at, func(at int32) bool { return at == int32(i) })
			touched[th.host] = th
		}
		m.infos[i] = infos[i]
		m.hostsAt[i] = m.hostsOf(b.contributedHosts(st, infos[i], s))
		for _, th := range m.hostsAt[i] {
			at, _ := slices.BinarySearch(th.at, int32(i))
			th.at = slices.Insert(th.at, at, int32(i))
			touched[th.host] = th
		}
		// The table uses its contributors' clusters.
		if is := len(m.hostsAt[i]) > 0; was != is || is && !slices.Equal(old.allHTTPClusters(), infos[i].allHTTPClusters()) {
			m.clustersChanged = true
		}
	}
	for h, th := range touched {
		if len(th.at) == 0 {
			delete(m.byHost, h)
			continue
		}
		m.build(b, st, h, th)
	}
	m.building = false
}

// hostsOf returns the memo's entries for hosts, made where missing.
func (m *tableMemo) hostsOf(hosts []string) []*tableHost {
	if len(hosts) == 0 {
		return nil
	}
	out := make([]*tableHost, len(hosts))
	for i, h := range hosts {
		th := m.byHost[h]
		if th == nil {
			th = &tableHost{host: h}
			m.byHost[h] = th
		}
		out[i] = th
	}
	return out
}

// build makes host h's virtual host from its contributors, as
// bindHTTPRoutes does contribution by contribution.
func (m *tableMemo) build(b *builder, st *classState, h string, th *tableHost) {
	vh := &ir.VirtualHost{Name: ir.VirtualHostName(h, m.port), Domains: []string{h}}
	reorder := false
	th.reports = th.reports[:0]
	for _, at := range th.at {
		info := m.infos[at]
		routes := b.httpRoutes(info, m.gwKey, m.port, st.labels)
		by := catchAllOwner(vh)
		reorder = reorder || by != nil
		vh.Routes = append(vh.Routes, routes...)
		if by != nil && *by != info.ref && allCatchAll(routes) {
			th.reports = append(th.reports, tableReport{at: at, entry: status.Entry{Key: info.key, Message: b.unreachableMessage(vh, by, info)}})
		}
		vh.RequireTLS = vh.RequireTLS || m.requireTLS
		if m.rateLimit != nil && vh.LocalRateLimit == nil {
			vh.LocalRateLimit = m.rateLimit
		}
		vh.Sources = appendRef(vh.Sources, info.ref)
	}
	if reorder {
		vh.Routes = catchAllLast(vh.Routes)
	}
	th.vh = vh
}

// emit hands the memo's table to this build: its findings and its
// virtual hosts (its clusters come at the end of the class, see
// classClusters), all in the order in which bindHTTPRoutes would have
// made them (VirtualService by VirtualService, each one's hosts in turn;
// a host comes where its first contributor first names it).
func (m *tableMemo) emit(b *builder, st *classState, t *routeTable, s *gwServer) {
	final := make([]*ir.VirtualHost, 0, len(m.byHost)+len(s.hosts))
	for i, hosts := range m.hostsAt {
		if len(hosts) == 0 {
			continue
		}
		for _, th := range hosts {
			if th.at[0] == int32(i) {
				final = append(final, th.vh)
			}
			for _, r := range th.reports {
				if r.at == int32(i) {
					b.report.Replay([]status.Entry{r.entry})
				}
			}
		}
	}
	st.memoTables = append(st.memoTables, m)
	if m.requireTLS {
		// Istio redirects every host of an httpsRedirect server, bound to a
		// VirtualService or not (a host listed twice, for two namespaces,
		// once).
		var redirected map[string]bool
		for _, sh := range s.hosts {
			if _, covered := m.byHost[sh.Host]; covered || redirected[sh.Host] {
				continue
			}
			if redirected == nil {
				redirected = map[string]bool{}
			}
			redirected[sh.Host] = true
			final = append(final, &ir.VirtualHost{Name: ir.VirtualHostName(sh.Host, m.port), Domains: []string{sh.Host}, RequireTLS: true, Sources: []ir.Ref{s.gwRef}})
		}
	}
	if len(final) > 0 { // nil otherwise, as bindHTTPRoutes leaves it
		t.final = final
	}
}

// classClusterMemo is the clusters of a class's last build and what
// decided them (see classClusters).
type classClusterMemo struct {
	reg      *registry
	used     []clusterKey
	tables   []*tableMemo
	clusters []*ir.Cluster
	order    []namedCluster
	reported []status.Entry
	secrets  []*ir.Secret
}

// classClusters gives the class its clusters: those its bindings used
// directly (st.used) and its memoized tables' VirtualServices' clusters,
// each built once (clusterOnce), sorted by name.
//
// With one class in the build, when the registry is the last build's,
// the class used the same keys directly and its memoized tables are the
// last build's with no change to their VirtualServices' clusters, its
// clusters are the last build's: they are taken whole, with what
// building them reported and the secrets they added, instead of
// collecting, naming, comparing and looking up every one of them again
// (20,000 at 10,000 VirtualServices with two subsets each: a fifth of a
// change's binding). TestTableMemoEqualsBinding checks the result against
// binding without memos.
func (b *builder) classClusters(st *classState, proxy *ir.Proxy) {
	last := b.prevClassClusters[st.class]
	if last != nil && b.singleClass && last.reg == b.reg && len(b.prevClusters) == len(last.order) &&
		slices.Equal(last.used, st.used) && slices.Equal(last.tables, st.memoTables) &&
		!slices.ContainsFunc(st.memoTables, func(m *tableMemo) bool { return m.clustersChanged }) {
		proxy.Clusters = last.clusters
		b.report.Replay(last.reported)
		for _, s := range last.secrets {
			b.addSecret(s)
		}
		b.nextClusterOrder[st.class] = last.order
		b.carryClusters = true
		b.nextClassClusters[st.class] = last
		return
	}
	st.clusters = make(map[clusterKey]struct{}, b.sizes["clusters\x00"+st.class])
	for _, ck := range st.used {
		st.clusters[ck] = struct{}{}
	}
	for _, m := range st.memoTables {
		for i, hosts := range m.hostsAt {
			if len(hosts) == 0 {
				continue
			}
			info := m.infos[i]
			if _, done := st.clustersOf[info]; done {
				continue
			}
			st.clustersOf[info] = struct{}{}
			for _, ck := range info.allHTTPClusters() {
				st.clusters[ck] = struct{}{}
			}
		}
	}
	order := b.clusterOrder[st.class]
	if !sameClusters(order, st.clusters) {
		order = make([]namedCluster, 0, len(st.clusters))
		for ck := range st.clusters {
			order = append(order, namedCluster{ck.name(), ck})
		}
		slices.SortFunc(order, func(a, b namedCluster) int { return strings.Compare(a.name, b.name) })
	}
	b.nextClusterOrder[st.class] = order
	mark := b.report.Mark()
	var secrets []*ir.Secret
	outer := b.addedSecrets
	b.addedSecrets = &secrets
	for _, u := range order {
		proxy.Clusters = append(proxy.Clusters, b.clusterOnce(u.key, u.name))
	}
	b.addedSecrets = outer
	if outer != nil {
		*outer = append(*outer, secrets...)
	}
	b.nextClassClusters[st.class] = &classClusterMemo{reg: b.reg, used: st.used, tables: st.memoTables,
		clusters: proxy.Clusters, order: order, reported: b.report.Since(mark), secrets: secrets}
}
