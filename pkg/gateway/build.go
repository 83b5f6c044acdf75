// Package gateway binds Istio Gateways (ports, protocols, TLS) to
// VirtualServices (routing) and DestinationRules (backend policy) for each
// class of gateway proxies, validating everything on the way. Its output is
// one ir.Proxy per class plus a status for every input resource: problems
// are resolved deterministically (the oldest resource wins) and reported,
// never dropped silently.
package gateway

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	networking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/portico-gateway/portico/pkg/gatewayapi"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/jwks"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
	ptls "github.com/portico-gateway/portico/pkg/tls"
)

// Options tune a build.
type Options struct {
	// DomainSuffix completes short service names (default cluster.local).
	DomainSuffix string
	// Classes are the label sets of the proxies known to exist (connected
	// proxies, the embedded proxy). Every Gateway's own selector is a class
	// too, so every Gateway is bound and reported even before a proxy for
	// it connects.
	Classes []map[string]string
	// ProxiesKnown says Classes lists every gateway proxy that exists, so
	// that a Gateway whose selector matches none is reported (IST0101, as
	// istioctl analyze reports a selector matching no Pod). Offline builds
	// leave it false: they do not know the proxies.
	ProxiesKnown bool
	// Now is used to check certificate validity (tests pin it).
	Now func() time.Time
	// Exclude lists resources not to use at all, with the message their
	// status gets (Accepted False): the controller's answer when the
	// configuration made from a resource breaks Envoy's validation rules.
	// The result is that of a build without them, plus their statuses.
	Exclude map[resource.Key]status.Message
	// RootNamespace is Istio's root namespace: its policies without a
	// selector apply to every gateway (default istio-system).
	RootNamespace string
	// JWKS gives the key sets of jwksUri; nil rejects every token of
	// such rules (fail closed).
	JWKS jwks.Source
	// GatewayAPI tunes the conversion of Gateway API objects (our
	// controllerName, the default proxy selector); its DomainSuffix
	// defaults to the build's.
	GatewayAPI gatewayapi.Options
}

// Result is the output of a build.
type Result struct {
	// Proxies has one entry per class, sorted by name.
	Proxies  []*ir.Proxy
	Statuses []*status.Status
	// APIStatuses are the statuses of Gateway API objects (GatewayClass,
	// Gateway, routes, policies) in the Gateway API's own shape, sorted by
	// key; only objects this controller owns (its GatewayClasses, their
	// Gateways, routes with a parentRef to one) get one.
	APIStatuses []*status.APIStatus
}

// Proxy returns the IR of the class with exactly these labels.
func (r *Result) Proxy(labels map[string]string) *ir.Proxy {
	name := ClassName(labels)
	for _, p := range r.Proxies {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// ClassName is the canonical name of a label set: "k=v,k=v" sorted.
func ClassName(labels map[string]string) string {
	keys := sortedKeys(labels)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

type builder struct {
	opts     Options
	report   *status.Report
	reg      *registry
	gateways map[string]*networking.Gateway // namespace/name
	servers  map[string][]*gwServer         // valid servers per Gateway
	vss      []*vsInfo
	// vsByGateway lists, per Gateway, the VirtualServices naming it.
	vsByGateway map[string][]*vsInfo
	cur         *classState
	// usesSourceLabels is set when some match has sourceLabels: the
	// configuration then depends on each class's labels, not only on the
	// Gateways it selects, so classes are not grouped.
	usesSourceLabels bool
	// prevVS and nextVS carry VirtualService conversions between builds,
	// by the identity of the VirtualService's version.
	prevVS, nextVS *byPosition[*vsMemo]
	// sizes are the previous build's map sizes (route tables, a class's
	// clusters), and nextSizes this build's: maps made with them as hints
	// are not grown and rehashed step by step on every build.
	sizes, nextSizes map[string]int
	// clusterOrder and nextClusterOrder are each class's clusters sorted
	// by name, from the previous build and this one: when a class uses
	// the same set again (one route changed among thousands), its order
	// is reused instead of naming and sorting every cluster again.
	clusterOrder, nextClusterOrder map[string][]namedCluster
	// prevClusters and nextClusters carry clusters between builds.
	prevClusters, nextClusters map[string]*clusterMemo
	// outcomes count kept and conflicting servers per Gateway.
	outcomes map[resource.Key]*serverOutcome
	// addedSecrets, when set, receives every secret added to the class
	// (see addSecret), so that a cached cluster can add them again.
	addedSecrets *[]*ir.Secret
	// sec is the build's RequestAuthentications and AuthorizationPolicies
	// (nil when there are none).
	sec *securityState
	// gwRateLimit is each Gateway's portico.io/local-rate-limit.
	gwRateLimit map[string]*ir.LocalRateLimit
	// gwapi is the conversion of the snapshot's Gateway API objects (nil
	// when there are none).
	gwapi *gatewayapi.Output
	// prevTables and nextTables carry route tables between builds, by
	// class and table name (see tableMemo); noTableMemo binds every table
	// with bindHTTPRoutes instead.
	prevTables, nextTables map[string]*tableMemo
	noTableMemo            bool
	// prevClassClusters and nextClassClusters carry each class's
	// clusters between builds (see classClusters), which may take the
	// last build's whole when singleClass (the build has one class
	// group); it then sets carryClusters, and the last build's cluster
	// memo is the next build's.
	prevClassClusters, nextClassClusters map[string]*classClusterMemo
	singleClass, carryClusters           bool
}

// clusterOnce builds a cluster, or reuses one built before (in this build
// or the previous one) whose registry reads all find the same objects
// again; what building it reported and the secrets it added are replayed.
func (b *builder) clusterOnce(ck clusterKey, name string) *ir.Cluster {
	m, ok := b.nextClusters[name]
	if !ok {
		if m, ok = b.prevClusters[name]; ok && !b.reg.unchanged(m.deps) {
			ok = false
		}
	}
	if ok {
		b.report.Replay(m.reported)
		for _, s := range m.secrets {
			b.addSecret(s)
		}
		b.nextClusters[name] = m
		return m.cluster
	}
	m = &clusterMemo{deps: newDeps()}
	outerReads := b.reg.startRecording(m.deps)
	mark := b.report.Mark()
	outer := b.addedSecrets
	b.addedSecrets = &m.secrets
	m.cluster = b.buildCluster(ck)
	b.addedSecrets = outer
	if outer != nil {
		*outer = append(*outer, m.secrets...)
	}
	m.reported = b.report.Since(mark)
	b.reg.stopRecording(m.deps, outerReads)
	b.nextClusters[name] = m
	return m.cluster
}

// convertVirtualServiceOnce converts a VirtualService, or reuses the
// previous build's conversion of the same version when every registry
// read it made finds the same objects again; what it reported is
// replayed.
func (b *builder) convertVirtualServiceOnce(i int, vs *networking.VirtualService) *vsInfo {
	id, name := idOf(vs), objectName{vs.Namespace, vs.Name}
	if m, ok := b.prevVS.find(i, id, name); ok && m.domainSuffix == b.opts.DomainSuffix && b.reg.unchanged(m.deps) {
		b.report.Replay(m.reported)
		b.usesSourceLabels = b.usesSourceLabels || m.usesSourceLabels
		b.nextVS.set(i, id, name, m)
		return m.info
	}
	outer := b.usesSourceLabels
	b.usesSourceLabels = false
	m := &vsMemo{domainSuffix: b.opts.DomainSuffix, deps: newDeps()}
	outerReads := b.reg.startRecording(m.deps)
	mark := b.report.Mark()
	m.info = b.convertVirtualService(vs)
	m.reported = b.report.Since(mark)
	b.reg.stopRecording(m.deps, outerReads)
	m.usesSourceLabels = b.usesSourceLabels
	b.usesSourceLabels = b.usesSourceLabels || outer
	b.nextVS.set(i, id, name, m)
	return m.info
}

// Build binds and validates one snapshot of resources. It is a pure
// function of its inputs.
func Build(in *resource.Resources, opts Options) *Result {
	return NewBuilder().Build(in, opts)
}

// Builder builds snapshot after snapshot, reusing the conversion of every
// VirtualService that did not change (the same version of the object)
// and whose registry reads (destination services, DestinationRules)
// still find the same objects, and likewise clusters, registry entries
// and the registry itself, so that editing one VirtualService among
// thousands converts one. Every reuse is keyed on the identities of what
// the computation actually read, recorded by the accessors it read
// through, so its results equal Build's. Not safe for concurrent use.
type Builder struct {
	// limits and spareLimits: see limitsMemo.
	limits, spareLimits map[string]*limitsList
	// skipLimits turns envoyLimits off (tests prove with it that each
	// limit is one Envoy enforces).
	skipLimits bool
	// tables are the route tables of the last build (see tableMemo);
	// noTableMemo binds every table without them (tests compare the two).
	tables      map[string]*tableMemo
	noTableMemo bool
	// classClusters: see builder.prevClassClusters.
	classClusters map[string]*classClusterMemo
	sizes         map[string]int // see builder.sizes
	// clusterOrder: see builder.clusterOrder.
	clusterOrder map[string][]namedCluster
	services     map[objectName]*serviceMemo
	seHosts      map[seHost]*service
	clusters     map[string]*clusterMemo
	// registry is the last registry, what it was built from and what
	// building it reported, reused whole when none of it changed.
	registry         *registry
	registryInputs   *registryInputs
	registryReported []status.Entry
	// drReported is what validating each DestinationRule reported, by
	// the identity of its version; valid while the registry it read is
	// drRegistry (the registry object is reused whole when unchanged).
	// drSpare is the build before the last's, refilled.
	drReported, drSpare *byPosition[[]status.Entry]
	drRegistry          *registry
	// vs and spareVS: see builder.prevVS.
	vs, spareVS *byPosition[*vsMemo]
	// spare holds the memo maps of the build before the last, emptied
	// and filled again by the next build instead of allocating maps of
	// every object per change (a third of a megabyte a change at 1,000
	// VirtualServices).
	spare struct {
		clusters map[string]*clusterMemo
		services map[objectName]*serviceMemo
		seHosts  map[seHost]*service
	}
	reports status.ReportMemo // the last build's report index
	sorter  resource.Sorter   // the snapshot's lists, sorted oldest first
}

// recycled returns m emptied for reuse, or a map with room for n when
// there is none.
func recycled[K comparable, V any](m map[K]V, n int) map[K]V {
	if m == nil {
		return make(map[K]V, n)
	}
	clear(m)
	return m
}

// clusterMemo is a cluster with what building it read and did.
type clusterMemo struct {
	deps     *deps
	reported []status.Entry
	secrets  []*ir.Secret
	cluster  *ir.Cluster
}

// NewBuilder returns a builder with nothing remembered.
func NewBuilder() *Builder { return &Builder{} }

// vsMemo is one VirtualService's conversion with what it read and did.
type vsMemo struct {
	info             *vsInfo // nil when nothing of it could be used
	reported         []status.Entry
	usesSourceLabels bool
	domainSuffix     string
	deps             *deps
}

// Build binds and validates one snapshot, like the package's Build.
func (bl *Builder) Build(in *resource.Resources, opts Options) *Result {
	if opts.DomainSuffix == "" {
		opts.DomainSuffix = "cluster.local"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var gwapi *gatewayapi.Output
	if in.HasGatewayAPI() {
		in, gwapi = convertGatewayAPI(in, opts)
	}
	if bl.vs == nil {
		bl.vs, bl.spareVS = &byPosition[*vsMemo]{}, &byPosition[*vsMemo]{}
	}
	res := bl.sorter.SortedCopy(in)
	var limits *limitsMemo
	if !bl.skipLimits {
		limits = &limitsMemo{prev: bl.limits, next: map[string]*limitsList{}, spare: bl.spareLimits}
		defer func() { bl.limits, bl.spareLimits = limits.next, limits.prev }()
	}
	res, excluded := withoutExcluded(res, opts.Exclude, limits)
	b := &builder{
		opts:              opts,
		report:            bl.reports.NewReport(),
		gateways:          map[string]*networking.Gateway{},
		servers:           map[string][]*gwServer{},
		vsByGateway:       map[string][]*vsInfo{},
		prevVS:            bl.vs,
		nextVS:            bl.spareVS,
		prevClusters:      bl.clusters,
		nextClusters:      recycled(bl.spare.clusters, len(bl.clusters)),
		gwapi:             gwapi,
		sizes:             bl.sizes,
		nextSizes:         make(map[string]int, len(bl.sizes)),
		clusterOrder:      bl.clusterOrder,
		nextClusterOrder:  make(map[string][]namedCluster, len(bl.clusterOrder)),
		prevTables:        bl.tables,
		nextTables:        make(map[string]*tableMemo, len(bl.tables)),
		prevClassClusters: bl.classClusters,
		nextClassClusters: make(map[string]*classClusterMemo, len(bl.classClusters)),
		noTableMemo:       bl.noTableMemo,
	}
	regMemo := &registryMemo{prev: bl.services, prevSE: bl.seHosts}
	regReused := false
	defer func() {
		bl.spareVS, bl.vs = b.prevVS, b.nextVS
		if b.carryClusters {
			// The last build's clusters, whole (see classClusters); the
			// map this build did not fill is the next one's spare.
			bl.clusters, bl.spare.clusters = b.prevClusters, b.nextClusters
		} else {
			bl.spare.clusters, bl.clusters = b.prevClusters, b.nextClusters
		}
		bl.classClusters = b.nextClassClusters
		if !regReused {
			bl.spare.services, bl.spare.seHosts = regMemo.prev, regMemo.prevSE
			bl.services, bl.seHosts = regMemo.next, regMemo.nextSE
		}
		bl.reports.Keep(b.report)
		bl.sizes = b.nextSizes
		bl.clusterOrder = b.nextClusterOrder
		bl.tables = b.nextTables
	}()
	for _, x := range excluded {
		b.report.Track(x.key, x.generation)
		b.report.Reject(x.key, x.msg)
	}
	b.track(res)
	inputs := registryInputsOf(res, opts.DomainSuffix)
	if bl.registry != nil && bl.registryInputs.same(inputs) {
		b.reg = bl.registry
		b.report.Replay(bl.registryReported)
		regMemo.next, regMemo.nextSE = bl.services, bl.seHosts
		regReused = true
	} else {
		mark := b.report.Mark()
		regMemo.next, regMemo.nextSE = recycled(bl.spare.services, len(in.Services)), recycled(bl.spare.seHosts, len(bl.seHosts))
		b.reg = newRegistry(inputs, b.report, regMemo)
		bl.registry, bl.registryInputs, bl.registryReported = b.reg, inputs, b.report.Since(mark)
	}
	b.validateDestinationRules(bl, res.DestinationRules)
	for _, gw := range res.Gateways {
		key := gw.Namespace + "/" + gw.Name
		b.gateways[key] = gw
		b.servers[key] = b.validateGateway(gw)
		if rl := b.rateLimitOf(gw, resource.KeyOf(gw), refOf(resource.KindGateway, gw.Namespace, gw.Name)); rl != nil {
			if b.gwRateLimit == nil {
				b.gwRateLimit = map[string]*ir.LocalRateLimit{}
			}
			b.gwRateLimit[key] = rl
		}
	}
	b.prepareSecurity(res)
	b.nextVS.reset(len(res.VirtualServices))
	for i, vs := range res.VirtualServices {
		info := b.convertVirtualServiceOnce(i, vs)
		if info == nil {
			continue
		}
		b.vss = append(b.vss, info)
		b.checkGatewayRefs(info)
	}

	result := &Result{}
	groups := b.classGroups(res.Gateways)
	b.singleClass = len(groups) == 1
	for _, group := range groups {
		p := b.buildClass(group.gateways, group.classes[0])
		for _, labels := range group.classes {
			cp := *p
			cp.Name, cp.Labels = ClassName(labels), labels
			result.Proxies = append(result.Proxies, &cp)
		}
	}
	sort.Slice(result.Proxies, func(i, j int) bool { return result.Proxies[i].Name < result.Proxies[j].Name })
	b.rejectLosingGateways()
	b.reportUnattached()
	// After binding, so that the binder's own findings (which server
	// wins and why) come first and name the conditions.
	b.analyzeGateways(res.Gateways)
	result.Statuses = b.report.Finalize()
	if gwapi != nil {
		result.APIStatuses = gwapi.Finish(result.Statuses)
		kept := result.Statuses[:0:0]
		for _, st := range result.Statuses {
			if !gwapi.Synthetic(st.Key) {
				kept = append(kept, st)
			}
		}
		gwapi.RenameStatuses(kept)
		result.Statuses = kept
	}
	return result
}

// convertGatewayAPI converts the snapshot's Gateway API objects into
// Istio ones (pkg/gatewayapi) and returns a snapshot with them added, to
// be bound with the rest: an Istio Gateway and a Gateway API listener on
// one port of one proxy class meet in the same binder code, which
// resolves and reports their conflicts. The synthetic objects carry
// identities that change exactly when their content does, so every
// cache below (VirtualService conversions, clusters, the registry) keeps
// working across builds.
func convertGatewayAPI(in *resource.Resources, opts Options) (*resource.Resources, *gatewayapi.Output) {
	gopts := opts.GatewayAPI
	if gopts.DomainSuffix == "" {
		gopts.DomainSuffix = opts.DomainSuffix
	}
	// The conversion reads Services, ServiceEntries and Secrets (does a
	// backend or certificate exist?): it must see the snapshot without
	// the excluded ones, as the binder does, or the result would depend
	// on a resource that is not used.
	view := in
	if len(opts.Exclude) > 0 {
		v := *in
		keep := func(o resource.Object) bool { _, ex := opts.Exclude[resource.KeyOf(o)]; return !ex }
		v.ServiceEntries = keepObjects(in.ServiceEntries, keep)
		v.Services = keepObjects(in.Services, keep)
		v.Secrets = keepObjects(in.Secrets, keep)
		view = &v
	}
	out := gatewayapi.Convert(view, gopts)
	cp := *in
	cp.Gateways = append(append([]*networking.Gateway(nil), in.Gateways...), out.Gateways...)
	cp.VirtualServices = append(append([]*networking.VirtualService(nil), in.VirtualServices...), out.VirtualServices...)
	cp.DestinationRules = append(append([]*networking.DestinationRule(nil), in.DestinationRules...), out.DestinationRules...)
	cp.Secrets = append(append([]*corev1.Secret(nil), in.Secrets...), out.Secrets...)
	return &cp, out
}

func keepObjects[T resource.Object](list []T, keep func(resource.Object) bool) []T {
	var out []T
	for _, o := range list {
		if keep(o) {
			out = append(out, o)
		}
	}
	return out
}

// synthetic reports whether a key names an object the Gateway API
// conversion made.
func (b *builder) synthetic(key resource.Key) bool {
	return b.gwapi != nil && b.gwapi.Synthetic(key)
}

func (b *builder) track(res *resource.Resources) {
	// In the order statuses are listed (kind, namespace, name; the
	// snapshot is sorted), so that Finalize finds them sorted.
	for _, o := range res.AuthorizationPolicies {
		b.report.Track(resource.KeyOf(o), o.Generation)
	}
	for _, o := range res.DestinationRules {
		b.report.Track(resource.KeyOf(o), o.Generation)
	}
	for _, o := range res.Gateways {
		b.report.Track(resource.KeyOf(o), o.Generation)
	}
	for _, o := range res.RequestAuthentications {
		b.report.Track(resource.KeyOf(o), o.Generation)
	}
	for _, o := range res.ServiceEntries {
		b.report.Track(resource.KeyOf(o), o.Generation)
	}
	for _, o := range res.VirtualServices {
		b.report.Track(resource.KeyOf(o), o.Generation)
	}
	for _, inv := range res.Invalid {
		if inv.Key.Name == "" || !isIstioKind(inv.Key.Kind) {
			continue
		}
		if b.report.Get(inv.Key) == nil {
			b.report.Reject(inv.Key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec,
				Message: fmt.Sprintf("could not be read, so it is not used: %s", inv.Error)})
			continue
		}
		b.report.Add(inv.Key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonStaleSpec,
			Message: fmt.Sprintf("the latest version could not be read (%s); the last good version keeps serving", inv.Error)})
	}
}

func isIstioKind(k string) bool {
	switch k {
	case resource.KindGateway, resource.KindVirtualService, resource.KindDestinationRule, resource.KindServiceEntry,
		resource.KindRequestAuthentication, resource.KindAuthorizationPolicy:
		return true
	}
	return false
}

// validateDestinationRules validates every DestinationRule, replaying
// the previous build's findings for versions already validated against
// the same registry: what one validation reads is the rule itself, the
// domain suffix (part of the registry's inputs) and the registry.
func (b *builder) validateDestinationRules(bl *Builder, drs []*networking.DestinationRule) {
	prev, next := bl.drReported, bl.drSpare
	if prev == nil {
		prev, next = &byPosition[[]status.Entry]{}, &byPosition[[]status.Entry]{}
	}
	valid := bl.drRegistry == b.reg
	next.reset(len(drs))
	for i, dr := range drs {
		id, name := idOf(dr), objectName{dr.Namespace, dr.Name}
		if entries, ok := prev.find(i, id, name); ok && valid {
			b.report.Replay(entries)
			next.set(i, id, name, entries)
			continue
		}
		mark := b.report.Mark()
		b.validateDestinationRule(dr)
		next.set(i, id, name, b.report.Since(mark))
	}
	bl.drReported, bl.drSpare, bl.drRegistry = next, prev, b.reg
}

func (b *builder) validateDestinationRule(dr *networking.DestinationRule) {
	key := resource.KeyOf(dr)
	if dr.Spec.Host == "" {
		b.report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: "spec.host", Message: "host is required"})
		return
	}
	host := fqdn(dr.Spec.Host, dr.Namespace, b.opts.DomainSuffix)
	if err := validateHost(host, true); err != nil {
		b.report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: "spec.host", Message: err.Error()})
		return
	}
	if !isWildcard(host) {
		if drs := b.reg.destinationRules[host]; len(drs) > 1 && idOf(drs[0]) != idOf(dr) {
			b.report.Add(key, status.Message{Code: status.ConflictingGateways, Level: status.Warning, Reason: status.ReasonConflictingServer, Field: "spec.host",
				Message: fmt.Sprintf("DestinationRule %s/%s for the same host is used instead: %s", drs[0].Namespace, drs[0].Name, wins(drs[0], dr))})
		}
		if b.reg.lookup(host) == nil {
			b.report.Add(key, status.Message{Code: status.ReferencedResourceNotFound, Level: status.Warning, Reason: status.ReasonDestinationNotFound, Field: "spec.host",
				Message: fmt.Sprintf("host %q matches no Service or ServiceEntry", host)})
		}
	}
	names := map[string]bool{}
	for i, s := range dr.Spec.Subsets {
		field := fmt.Sprintf("spec.subsets[%d]", i)
		if s.Name == "" {
			b.report.Add(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: field + ".name", Message: "subset name is required"})
		}
		if names[s.Name] {
			b.report.Add(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: field + ".name",
				Message: fmt.Sprintf("duplicate subset name %q; the first definition is used", s.Name)})
		}
		names[s.Name] = true
	}
}

// checkGatewayRefs reports gateways a VirtualService names that do not
// exist and hosts no server of a named Gateway serves.
func (b *builder) checkGatewayRefs(info *vsInfo) {
	refs := slices.Clip(info.gateways) // an append copies, never writes into info
	for _, r := range info.http {
		for _, m := range r.matches {
			refs = append(refs, m.gateways...)
		}
	}
	// Lists are usually a few names long: looking back beats making and
	// hashing a map per VirtualService per build.
	var seen map[string]bool
	if len(refs) > 8 {
		seen = make(map[string]bool, len(refs))
	}
	found, served := 0, 0
	var notServed []string
	var missing []status.Message
	for i, ref := range refs {
		if ref == "mesh" {
			continue
		}
		if seen != nil {
			if seen[ref] {
				continue
			}
			seen[ref] = true
		} else if slices.Contains(refs[:i], ref) {
			continue
		}
		if _, ok := b.gateways[ref]; !ok {
			missing = append(missing, status.Message{Code: status.ReferencedResourceNotFound, Level: status.Error, Reason: status.ReasonGatewayNotFound, Field: "spec.gateways",
				Message: fmt.Sprintf("Gateway %s not found%s", ref, b.gatewayHint(ref))})
			continue
		}
		found++
		b.vsByGateway[ref] = append(b.vsByGateway[ref], info)
		if b.servesAny(info, ref) {
			served++
		} else {
			notServed = append(notServed, ref)
		}
	}
	for _, m := range missing {
		if found == 0 {
			b.report.Reject(info.key, m)
		} else {
			b.report.Add(info.key, m)
		}
	}
	if found == 0 {
		return
	}
	for _, ref := range notServed {
		m := status.Message{Code: status.VirtualServiceHostNotFoundInGW, Level: status.Warning, Reason: status.ReasonHostNotServed, Field: "spec.hosts",
			Message: fmt.Sprintf("no server of Gateway %s serves hosts %s for this VirtualService's rules (servers: %s)",
				ref, strings.Join(info.hosts, ", "), b.describeServers(ref))}
		if served == 0 {
			// Still a Warning, as in Istio (IST0132): nothing of the
			// VirtualService is in use, which the Accepted condition says.
			b.report.Reject(info.key, m)
		} else {
			b.report.Add(info.key, m)
		}
	}
}

// gatewayHint points at a same-named Gateway in another namespace: a short
// gateway name refers to the VirtualService's own namespace, which trips
// people up.
func (b *builder) gatewayHint(ref string) string {
	_, name, _ := strings.Cut(ref, "/")
	var others []string
	for k := range b.gateways {
		if _, n, _ := strings.Cut(k, "/"); n == name {
			others = append(others, k)
		}
	}
	if len(others) == 0 {
		return ""
	}
	sort.Strings(others)
	return fmt.Sprintf(" (a short name means the VirtualService's namespace; did you mean %s?)", strings.Join(others, " or "))
}

func (b *builder) describeServers(gwKey string) string {
	var parts []string
	for _, s := range b.servers[gwKey] {
		var hosts []string
		for _, h := range s.hosts {
			hosts = append(hosts, h.Host)
		}
		parts = append(parts, fmt.Sprintf("%d/%s %s", s.port, s.protocol, strings.Join(hosts, ",")))
	}
	if len(parts) == 0 {
		return "none valid"
	}
	return strings.Join(parts, "; ")
}

// servesAny reports whether some server of the Gateway can carry some rule
// of the VirtualService.
func (b *builder) servesAny(info *vsInfo, gwKey string) bool {
	for _, s := range b.servers[gwKey] {
		if !sectionFits(info, s.kind) {
			continue
		}
		if hostsIntersect(info, s) {
			return true
		}
	}
	return false
}

func sectionFits(info *vsInfo, k serverKind) bool {
	switch k {
	case kindHTTP, kindHTTPS:
		return len(info.http) > 0
	case kindPassthrough:
		return len(info.tls) > 0
	default:
		return len(info.tcp) > 0
	}
}

// hostIntersections returns the virtual host names a VirtualService gets on
// a server, honouring the server hosts' namespace scopes.
func hostIntersections(info *vsInfo, s *gwServer) []string {
	var out []string
	var seen map[string]bool // once out is too long to search
	for _, vh := range info.hosts {
		for _, sh := range s.hosts {
			if sh.Namespace != "*" && sh.Namespace != info.obj.Namespace {
				continue
			}
			h, ok := intersectHosts(vh, sh.Host)
			if !ok {
				continue
			}
			if seen == nil && len(out) < 16 {
				if !slices.Contains(out, h) {
					out = append(out, h)
				}
				continue
			}
			if seen == nil {
				seen = make(map[string]bool, 2*len(out))
				for _, o := range out {
					seen[o] = true
				}
			}
			if !seen[h] {
				seen[h] = true
				out = append(out, h)
			}
		}
	}
	return out
}

// hostsIntersect reports whether hostIntersections would find any.
func hostsIntersect(info *vsInfo, s *gwServer) bool {
	for _, vh := range info.hosts {
		for _, sh := range s.hosts {
			if sh.Namespace != "*" && sh.Namespace != info.obj.Namespace {
				continue
			}
			if _, ok := intersectHosts(vh, sh.Host); ok {
				return true
			}
		}
	}
	return false
}

type classGroup struct {
	gateways []*networking.Gateway
	classes  []map[string]string
}

// classGroups computes the proxy classes and groups those that select the
// same Gateways: they get the same configuration, built once.
func (b *builder) classGroups(gateways []*networking.Gateway) []*classGroup {
	var classes []map[string]string
	seen := map[string]bool{}
	add := func(l map[string]string) {
		if l == nil {
			l = map[string]string{}
		}
		if n := ClassName(l); !seen[n] {
			seen[n] = true
			classes = append(classes, l)
		}
	}
	for _, l := range b.opts.Classes {
		add(l)
	}
	for _, gw := range gateways {
		add(gw.Spec.Selector)
	}
	groups := map[string]*classGroup{}
	var order []string
	for _, labels := range classes {
		var selected []*networking.Gateway
		var names []string
		for _, gw := range gateways {
			if labelsMatch(gw.Spec.Selector, labels) {
				selected = append(selected, gw)
				names = append(names, gw.Namespace+"/"+gw.Name)
			}
		}
		k := strings.Join(names, ",")
		if pk := b.classPolicyKey(labels, names); pk != "" {
			k += "|policies:" + pk
		}
		if b.usesSourceLabels {
			k += "|" + ClassName(labels)
		}
		g, ok := groups[k]
		if !ok {
			g = &classGroup{gateways: selected}
			groups[k] = g
			order = append(order, k)
		}
		g.classes = append(g.classes, labels)
	}
	out := make([]*classGroup, 0, len(order))
	for _, k := range order {
		out = append(out, groups[k])
	}
	return out
}

func (b *builder) checkCertificate(s *gwServer, name string, cert, key []byte) *status.Message {
	pair, err := ptls.ParsePair(cert, key, b.opts.Now())
	if err != nil {
		m := gwMessage(status.Error, status.InvalidGatewayCredential, status.ReasonInvalidCertificate, s.field+".tls.credentialName",
			"Secret %s/%s: %v; %s is ignored", s.gw.Namespace, name, err, s.describe())
		return &m
	}
	var hosts []string
	for _, h := range s.hosts {
		hosts = append(hosts, h.Host)
	}
	if missing := ptls.UncoveredHosts(pair.Leaf, hosts); len(missing) > 0 {
		b.report.Add(s.gwKey, gwMessage(status.Warning, status.InvalidGatewayCredential, status.ReasonInvalidCertificate, s.field+".tls.credentialName",
			"the certificate in Secret %s/%s does not cover hosts %s (its names: %s); clients will reject it for those hosts",
			s.gw.Namespace, name, strings.Join(missing, ", "), strings.Join(pair.Leaf.DNSNames, ", ")))
	}
	return nil
}
