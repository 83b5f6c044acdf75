// Package translate turns a proxy's IR into Envoy v3 resources. It is a pure
// function: the same IR always yields byte-identical resources. Names follow
// Istio (listeners 0.0.0.0_80, route configs http.80, clusters
// outbound|80||host, secrets kubernetes://name) and every resource carries
// metadata naming the Istio resources it came from.
//
// The Go edge proxy (pkg/proxy) implements exactly the subset of Envoy's API
// emitted here; anything added here must be honoured there (or NACKed).
package translate

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/pkg/ir"
)

// Options tune translation.
type Options struct {
	// SystemCAPath is where upstream certificates are verified when a
	// DestinationRule originates TLS without caCertificates (Istio's
	// VERIFY_CERTIFICATE_AT_CLIENT behaviour).
	SystemCAPath string
	// ServerName is the value of the "server" response header.
	ServerName string
	// DisableAccessLog turns off the stdout access log.
	DisableAccessLog bool
	// AccessLog is meshConfig's access log (nil: the stdout logger in
	// Envoy's default format, unless DisableAccessLog). See accesslog.go.
	AccessLog *AccessLog
	// AccessLogging is what Telemetry resources select; when set it
	// replaces AccessLog and DisableAccessLog. See accesslog.go.
	AccessLogging *AccessLogging
	// Metrics are Telemetry metrics overrides (nil: none). See metrics.go.
	Metrics *MetricsOverrides
	// Tracing is the gateway's tracing (nil: none). See tracing.go.
	Tracing *Tracing
	// Edge are the HTTP listeners' timeouts and limits (zero: DefaultEdge).
	Edge Edge
}

// DefaultSystemCAPath is Debian's CA bundle, which Istio's proxy image uses too.
const DefaultSystemCAPath = "/etc/ssl/certs/ca-certificates.crt"

// Resources are one proxy's Envoy resources, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

// Count returns the number of resources.
func (r *Resources) Count() int {
	return len(r.Listeners) + len(r.Routes) + len(r.Clusters) + len(r.Endpoints) + len(r.Secrets)
}

// Translate converts one proxy's IR. It fails only on IR that binding
// should never produce (a bug, reported with the resource it came from).
func Translate(p *ir.Proxy, opts Options) (*Resources, error) {
	return NewTranslator(opts).Translate(p)
}

// Translator translates one proxy class's IR build after build. Virtual
// hosts and clusters whose IR did not change since the previous build keep
// their Envoy messages (the very same pointers), so that a change to one
// VirtualService among thousands costs one virtual host's translation, and
// the xDS server can recognise everything else as unchanged without
// marshalling it. The output is identical to a fresh translation; the
// messages it returns must not be modified. Not safe for concurrent use.
//
// The memo refers to the messages through their places in the previous
// output (slots), not directly: the xDS snapshot builder replaces the
// virtual hosts, clusters and load assignments of a published output by
// compact stand-ins that encode to the same bytes (pkg/xds/compact.go),
// and the next build hands back those, so that the full messages are not
// kept alive by this memo.
type Translator struct {
	t *translator
	// routeConfigs remembers each route configuration's last IR virtual
	// hosts and output slots; clusters the last clusters'. Both are
	// looked up by position first: from one build to the next the lists
	// keep their order but for what changed, and comparing in place
	// spares the map lookups and inserts by name that were a sixth of a
	// one-route change at 10,000 virtual hosts.
	routeConfigs map[string]*memoRouteConfig
	clusters     *memoClusters
	// scratch holds a build's working lists for the next build (emptied:
	// they must not keep messages the xDS server has replaced alive), and
	// spare the position lists of the build before the last.
	scratch struct {
		cls          []*clusterv3.Cluster
		clas         []*endpointv3.ClusterLoadAssignment
		claOf, claAt []int32
		order        []int32
	}
	spare *memoClusters
}

// Stream receives newly translated virtual hosts, clusters and load
// assignments in batches, as soon as a batch is full, and may replace any
// of them in place (batch[i]) by a message of the same type that encodes
// to the same bytes: the xDS server encodes, hashes and validates them
// right away and keeps only a compact stand-in, so that a cold start never
// holds every full Envoy message at once (see pkg/xds/compact.go).
type Stream func(batch []proto.Message)

// streamBatch is how many new messages are handed to a Stream at once:
// enough to spread its work over the CPUs, few enough that the full
// messages alive at any time are a small fraction of a large build.
const streamBatch = 512

// memoRouteConfig is one route configuration of the previous build.
type memoRouteConfig struct {
	irs []*ir.VirtualHost
	out []*routev3.VirtualHost // the previous output's virtual hosts: slots
	// byName indexes irs by name, made the first time a virtual host is
	// not where it was.
	byName map[string]int
}

// find returns the index of the previous build's virtual host named
// name, looking at index i first.
func (m *memoRouteConfig) find(i int, name string) (int, bool) {
	if m == nil {
		return 0, false
	}
	return findByName(m.irs, &m.byName, i, name, func(vh *ir.VirtualHost) string { return vh.Name })
}

// findByName returns the index in list of the element called name,
// looking at index i first and through *index (made on first use) then.
func findByName[T any](list []T, index *map[string]int, i int, name string, nameOf func(T) string) (int, bool) {
	if i < len(list) && nameOf(list[i]) == name {
		return i, true
	}
	if *index == nil {
		*index = make(map[string]int, len(list))
		for j, x := range list {
			(*index)[nameOf(x)] = j
		}
	}
	j, ok := (*index)[name]
	return j, ok
}

// memoClusters is the previous build's clusters: irs[i] became
// out[pos[i]] and, unless claPos[i] is -1, cla[claPos[i]]. out and cla
// are the previous output's lists: slots.
type memoClusters struct {
	irs         []*ir.Cluster
	out         []*clusterv3.Cluster
	cla         []*endpointv3.ClusterLoadAssignment
	pos, claPos []int32
	byName      map[string]int
}

// find is memoRouteConfig.find for clusters.
func (m *memoClusters) find(i int, name string) (int, bool) {
	if m == nil {
		return 0, false
	}
	return findByName(m.irs, &m.byName, i, name, func(c *ir.Cluster) string { return c.Name })
}

// sameVirtualHost reports whether two IR virtual hosts are deeply equal.
// The binder builds a new virtual host every build, but an unchanged one
// holds the very same routes (remembered with the VirtualService's
// conversion), so comparing fields with routes by identity settles it
// without reflect.DeepEqual's walk and visited map, thousands of times
// per build; anything else falls back to the deep comparison.
func sameVirtualHost(a, b *ir.VirtualHost) bool {
	if a == b {
		return true
	}
	// Every field of ir.VirtualHost (TestSameVirtualHostCoversEveryField
	// fails when one is added).
	if a.Name == b.Name && a.RequireTLS == b.RequireTLS && a.LocalRateLimit == b.LocalRateLimit &&
		slices.Equal(a.Domains, b.Domains) && slices.Equal(a.Routes, b.Routes) && slices.Equal(a.Sources, b.Sources) {
		return true
	}
	return reflect.DeepEqual(a, b)
}

// NewTranslator returns a translator with nothing remembered.
func NewTranslator(opts Options) *Translator {
	if opts.SystemCAPath == "" {
		opts.SystemCAPath = DefaultSystemCAPath
	}
	if opts.ServerName == "" {
		opts.ServerName = "istio-envoy"
	}
	if opts.Edge == (Edge{}) {
		opts.Edge = DefaultEdge()
	}
	return &Translator{t: &translator{opts: opts}}
}

// Translate converts a proxy's IR, reusing what the previous call built for
// unchanged virtual hosts and clusters. The IR must not be modified
// afterwards (it is kept to compare with the next build's).
func (tr *Translator) Translate(p *ir.Proxy) (*Resources, error) {
	return tr.TranslateStream(p, nil)
}

// TranslateStream is Translate, handing every virtual host, cluster and
// load assignment it translates anew (not those reused from the previous
// build) to stream, in batches, and keeping what stream puts in their
// place. A nil stream is Translate.
func (tr *Translator) TranslateStream(p *ir.Proxy, stream Stream) (*Resources, error) {
	t := tr.t
	pend := &pending{stream: stream}
	defer pend.stop() // on errors too: the worker must not outlive the call
	t.meta = map[ir.Ref]*corev3.Metadata{}
	defer func() { t.meta = nil }()
	out := &Resources{}
	for _, l := range p.Listeners {
		lis, err := t.listener(l)
		if err != nil {
			return nil, fmt.Errorf("listener %s (from %s): %w", l.Name, refList(l.Sources), err)
		}
		out.Listeners = append(out.Listeners, lis)
	}
	// Only what this build uses is remembered, so deleted resources are
	// forgotten. The memo is replaced only when the build succeeds.
	routeConfigs := make(map[string]*memoRouteConfig, len(p.RouteConfigs))
	for _, rc := range p.RouteConfigs {
		// The Host's port is ignored when choosing a virtual host but
		// forwarded unchanged, as Istio's gateways do (it lists
		// "host:*" domains; Gateway API conformance checks the
		// backend sees the client's Host, port included).
		r := &routev3.RouteConfiguration{Name: rc.Name, ValidateClusters: wrapperspb.Bool(false), IgnorePortInHostMatching: true}
		r.VirtualHosts = make([]*routev3.VirtualHost, len(rc.VirtualHosts))
		prev := tr.routeConfigs[rc.Name]
		for i, vh := range rc.VirtualHosts {
			if j, ok := prev.find(i, vh.Name); ok && sameVirtualHost(prev.irs[j], vh) {
				r.VirtualHosts[i] = prev.out[j]
				continue
			}
			v, err := t.virtualHost(vh)
			if err != nil {
				return nil, fmt.Errorf("route configuration %s: %w", rc.Name, err)
			}
			r.VirtualHosts[i] = v
			pend.add(v, func(m proto.Message) { r.VirtualHosts[i] = m.(*routev3.VirtualHost) })
		}
		// The slice is complete in size: its elements are the slots.
		routeConfigs[rc.Name] = &memoRouteConfig{irs: rc.VirtualHosts, out: r.VirtualHosts}
		out.Routes = append(out.Routes, r)
	}
	// Clusters and load assignments in the order of their IR (indices
	// the stream's setters keep), sorted by name once all are final.
	prevC := tr.clusters
	irs := p.Clusters
	sc := &tr.scratch
	cls := slices.Grow(sc.cls[:0], len(irs)+1) // +1: the tracing collector's
	clas := slices.Grow(sc.clas[:0], len(irs)+1)
	claOf := slices.Grow(sc.claOf[:0], len(irs)+1) // index in clas, -1 for none
	defer func() {
		clear(cls[:cap(cls)])
		clear(clas[:cap(clas)])
		sc.cls, sc.clas, sc.claOf = cls[:0], clas[:0], claOf[:0]
	}()
	add := func(cl *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, fresh bool) {
		cls = append(cls, cl)
		if fresh {
			at := len(cls) - 1
			pend.add(cl, func(m proto.Message) { cls[at] = m.(*clusterv3.Cluster) })
		}
		if cla == nil {
			claOf = append(claOf, -1)
			return
		}
		clas = append(clas, cla)
		at := len(clas) - 1
		claOf = append(claOf, int32(at))
		if fresh {
			pend.add(cla, func(m proto.Message) { clas[at] = m.(*endpointv3.ClusterLoadAssignment) })
		}
	}
	for i, c := range irs {
		if j, ok := prevC.find(i, c.Name); ok && (prevC.irs[j] == c || reflect.DeepEqual(prevC.irs[j], c)) {
			var cla *endpointv3.ClusterLoadAssignment
			if k := prevC.claPos[j]; k >= 0 {
				cla = prevC.cla[k]
			}
			add(prevC.out[prevC.pos[j]], cla, false)
			continue
		}
		cl, cla, err := t.cluster(c)
		if err != nil {
			return nil, fmt.Errorf("cluster %s (from %s): %w", c.Name, refList(c.Sources), err)
		}
		add(cl, cla, true)
	}
	// Everything handed over before the lists are sorted (the setters
	// know places by index).
	pend.flush()
	if c := t.tracingCluster(irs); c != nil {
		cl, cla, err := t.cluster(c)
		if err != nil {
			return nil, fmt.Errorf("tracing collector cluster %s: %w", c.Name, err)
		}
		irs = append(irs[:len(irs):len(irs)], c) // a copy: p.Clusters stays the binder's
		add(cl, cla, false)
	}
	memoC := tr.spare
	if memoC == nil {
		memoC = &memoClusters{}
	}
	*memoC = memoClusters{irs: irs, pos: resized(memoC.pos, len(cls)), claPos: resized(memoC.claPos, len(cls))}
	out.Clusters = make([]*clusterv3.Cluster, len(cls))
	sc.order = byName(sc.order, len(cls), func(i int) string { return cls[i].Name })
	for k, i := range sc.order {
		out.Clusters[k] = cls[i]
		memoC.pos[i] = int32(k)
	}
	out.Endpoints = make([]*endpointv3.ClusterLoadAssignment, len(clas))
	claAt := resized(sc.claAt, len(clas))
	sc.claAt = claAt
	sc.order = byName(sc.order, len(clas), func(i int) string { return clas[i].ClusterName })
	for k, i := range sc.order {
		out.Endpoints[k] = clas[i]
		claAt[i] = int32(k)
	}
	for i, ci := range claOf {
		memoC.claPos[i] = -1
		if ci >= 0 {
			memoC.claPos[i] = claAt[ci]
		}
	}
	memoC.out, memoC.cla = out.Clusters, out.Endpoints
	for _, s := range p.Secrets {
		sec, err := secret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %s (from %s): %w", s.Name, refList(s.Sources), err)
		}
		out.Secrets = append(out.Secrets, sec)
	}
	sort.Slice(out.Listeners, func(i, j int) bool { return out.Listeners[i].Name < out.Listeners[j].Name })
	sort.Slice(out.Routes, func(i, j int) bool { return out.Routes[i].Name < out.Routes[j].Name })
	sort.Slice(out.Secrets, func(i, j int) bool { return out.Secrets[i].Name < out.Secrets[j].Name })
	tr.routeConfigs, tr.clusters, tr.spare = routeConfigs, memoC, tr.clusters
	return out, nil
}

// resized returns s with length n, reusing its array when it is large
// enough.
func resized(s []int32, n int) []int32 {
	if cap(s) < n {
		return make([]int32, n)
	}
	return s[:n]
}

// byName returns the indices 0..n-1 ordered by name(i), in order's
// array. Names are unique; lists usually come sorted already, which the
// sort finds in one pass.
func byName(order []int32, n int, name func(i int) string) []int32 {
	order = resized(order, n)
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int { return strings.Compare(name(int(a)), name(int(b))) })
	return order
}

type translator struct {
	opts Options
	// meta shares one metadata message among the routes of a source
	// within a build: thousands of routes come from few VirtualServices,
	// and building the same Struct again was a third of translation.
	meta map[ir.Ref]*corev3.Metadata
}

// refMetadata is sourceMetadata for a single source, shared.
func (t *translator) refMetadata(r ir.Ref) *corev3.Metadata {
	md, ok := t.meta[r]
	if !ok {
		md = sourceMetadata([]ir.Ref{r})
		if t.meta != nil {
			t.meta[r] = md
		}
	}
	return md
}

func refList(refs []ir.Ref) string {
	if len(refs) == 0 {
		return "no source"
	}
	s := refs[0].String()
	for _, r := range refs[1:] {
		s += ", " + r.String()
	}
	return s
}

// toAny packs a message; packing a generated message cannot fail.
// toAny packs m deterministically: filter configs hold maps (RBAC
// policies, jwt_authn providers), and Go's map order would otherwise give
// the same configuration different bytes on every build — a listener that
// looks changed (and drains) at each push, and snapshots that never
// compare equal.
func toAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("packing %T: %v", m, err))
	}
	return a
}

// adsSource is the config source of everything but listeners and clusters:
// the same ADS stream.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// Metadata namespaces. "istio" keeps Istio's keys so its tools work;
// "portico" lists every source.
const (
	metaIstio   = "istio"
	metaPortico = "portico"
)

// sourceMetadata names the resources an object came from; istio.config is
// the first of them.
func sourceMetadata(refs []ir.Ref) *corev3.Metadata {
	if len(refs) == 0 {
		return nil
	}
	return sourceMetadataOf(refs, []mdField{{"config", mdString(refs[0].ConfigPath())}})
}

// sourceMetadataOf is metadata of istio fields and portico.sources
// listing refs (left out when there are none).
func sourceMetadataOf(refs []ir.Ref, istio []mdField) *corev3.Metadata {
	filters := []mdField{{metaIstio, mdStruct(istio...)}}
	if len(refs) > 0 {
		list := make([]mdValue, len(refs))
		for i, r := range refs {
			list[i] = mdString(r.String())
		}
		filters = append(filters, mdField{metaPortico, mdStruct(mdField{"sources", mdList(list...)})})
	}
	return packMetadata(filters...)
}
