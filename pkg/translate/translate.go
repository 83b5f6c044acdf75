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

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
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
	t        *translator
	vhosts   map[vhostKey]memoVirtualHost
	clusters map[string]memoCluster
	// The maps of the build before the last, emptied, and the maps of
	// which IR each output came from: reused, so that a one-route change
	// among thousands does not allocate maps for all of them again (at
	// 30,000 routes they were a sixth of a change's garbage).
	spareVhosts   map[vhostKey]memoVirtualHost
	spareClusters map[string]memoCluster
	clusterIR     map[*clusterv3.Cluster]*ir.Cluster
	claIR         map[*endpointv3.ClusterLoadAssignment]*ir.Cluster
}

// vhostKey names a virtual host within its route configuration.
type vhostKey struct{ routeConfig, vhost string }

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

type memoVirtualHost struct {
	ir *ir.VirtualHost
	at **routev3.VirtualHost // in the previous output
}

type memoCluster struct {
	ir  *ir.Cluster
	out **clusterv3.Cluster                // in the previous output
	cla **endpointv3.ClusterLoadAssignment // in the previous output; nil for none
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
	// Only what this build uses is remembered, so deleted resources are
	// forgotten.
	vhosts, clusters := tr.spareVhosts, tr.spareClusters
	tr.spareVhosts, tr.spareClusters = nil, nil // on errors, made again next time
	if vhosts == nil {
		vhosts = make(map[vhostKey]memoVirtualHost, len(tr.vhosts))
	}
	if clusters == nil {
		clusters = make(map[string]memoCluster, len(p.Clusters))
	}
	out := &Resources{
		Clusters:  make([]*clusterv3.Cluster, 0, len(p.Clusters)+1), // +1: the tracing collector's
		Endpoints: make([]*endpointv3.ClusterLoadAssignment, 0, len(p.Clusters)+1),
	}
	for _, l := range p.Listeners {
		lis, err := t.listener(l)
		if err != nil {
			return nil, fmt.Errorf("listener %s (from %s): %w", l.Name, refList(l.Sources), err)
		}
		out.Listeners = append(out.Listeners, lis)
	}
	for _, rc := range p.RouteConfigs {
		// The Host's port is ignored when choosing a virtual host but
		// forwarded unchanged, as Istio's gateways do (it lists
		// "host:*" domains; Gateway API conformance checks the
		// backend sees the client's Host, port included).
		r := &routev3.RouteConfiguration{Name: rc.Name, ValidateClusters: wrapperspb.Bool(false), IgnorePortInHostMatching: true}
		r.VirtualHosts = make([]*routev3.VirtualHost, len(rc.VirtualHosts))
		for i, vh := range rc.VirtualHosts {
			key := vhostKey{rc.Name, vh.Name}
			m, ok := tr.vhosts[key]
			if ok && sameVirtualHost(m.ir, vh) {
				r.VirtualHosts[i] = *m.at
			} else {
				v, err := t.virtualHost(vh)
				if err != nil {
					return nil, fmt.Errorf("route configuration %s: %w", rc.Name, err)
				}
				r.VirtualHosts[i] = v
				pend.add(v, func(m proto.Message) { r.VirtualHosts[i] = m.(*routev3.VirtualHost) })
			}
			// The slice is complete in size: the slot stays valid.
			vhosts[key] = memoVirtualHost{ir: vh, at: &r.VirtualHosts[i]}
		}
		out.Routes = append(out.Routes, r)
	}
	// Which IR each cluster and load assignment comes from, to set the
	// memo's slots once the lists are sorted.
	if tr.clusterIR == nil {
		tr.clusterIR = make(map[*clusterv3.Cluster]*ir.Cluster, len(p.Clusters))
		tr.claIR = make(map[*endpointv3.ClusterLoadAssignment]*ir.Cluster, len(p.Clusters))
	}
	clusterIR, claIR := tr.clusterIR, tr.claIR
	// Emptied on every return: they must not keep this build's messages.
	defer func() { clear(clusterIR); clear(claIR) }()
	for _, c := range p.Clusters {
		m, ok := tr.clusters[c.Name]
		var cl *clusterv3.Cluster
		var cla *endpointv3.ClusterLoadAssignment
		fresh := false // translated in this build: handed to the stream
		if ok && (m.ir == c || reflect.DeepEqual(m.ir, c)) {
			cl = *m.out
			if m.cla != nil {
				cla = *m.cla
			}
		} else {
			var err error
			if cl, cla, err = t.cluster(c); err != nil {
				return nil, fmt.Errorf("cluster %s (from %s): %w", c.Name, refList(c.Sources), err)
			}
			fresh = true
		}
		clusters[c.Name] = memoCluster{ir: c}
		clusterIR[cl] = c
		out.Clusters = append(out.Clusters, cl)
		if fresh {
			at := len(out.Clusters) - 1
			pend.add(cl, func(m proto.Message) {
				to := m.(*clusterv3.Cluster)
				if from := out.Clusters[at]; from != to {
					clusterIR[to] = clusterIR[from]
					delete(clusterIR, from)
					out.Clusters[at] = to
				}
			})
		}
		if cla != nil {
			claIR[cla] = c
			out.Endpoints = append(out.Endpoints, cla)
			if fresh {
				at := len(out.Endpoints) - 1
				pend.add(cla, func(m proto.Message) {
					to := m.(*endpointv3.ClusterLoadAssignment)
					if from := out.Endpoints[at]; from != to {
						claIR[to] = claIR[from]
						delete(claIR, from)
						out.Endpoints[at] = to
					}
				})
			}
		}
	}
	// Everything handed over before the lists are sorted (the setters
	// know places by index) and the memo's slots are taken.
	pend.flush()
	if c := t.tracingCluster(clusters); c != nil {
		cl, cla, err := t.cluster(c)
		if err != nil {
			return nil, fmt.Errorf("tracing collector cluster %s: %w", c.Name, err)
		}
		// Remembered like the others, so the slots below find its IR.
		clusters[c.Name] = memoCluster{ir: c}
		clusterIR[cl] = c
		out.Clusters = append(out.Clusters, cl)
		if cla != nil {
			claIR[cla] = c
			out.Endpoints = append(out.Endpoints, cla)
		}
	}
	for _, s := range p.Secrets {
		sec, err := secret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %s (from %s): %w", s.Name, refList(s.Sources), err)
		}
		out.Secrets = append(out.Secrets, sec)
	}
	sort.Slice(out.Listeners, func(i, j int) bool { return out.Listeners[i].Name < out.Listeners[j].Name })
	sort.Slice(out.Routes, func(i, j int) bool { return out.Routes[i].Name < out.Routes[j].Name })
	sort.Slice(out.Clusters, func(i, j int) bool { return out.Clusters[i].Name < out.Clusters[j].Name })
	sort.Slice(out.Endpoints, func(i, j int) bool { return out.Endpoints[i].ClusterName < out.Endpoints[j].ClusterName })
	sort.Slice(out.Secrets, func(i, j int) bool { return out.Secrets[i].Name < out.Secrets[j].Name })
	for i, cl := range out.Clusters {
		m := clusters[clusterIR[cl].Name]
		m.out = &out.Clusters[i]
		clusters[clusterIR[cl].Name] = m
	}
	for i, cla := range out.Endpoints {
		m := clusters[claIR[cla].Name]
		m.cla = &out.Endpoints[i]
		clusters[claIR[cla].Name] = m
	}
	prevVhosts, prevClusters := tr.vhosts, tr.clusters
	tr.vhosts, tr.clusters = vhosts, clusters
	clear(prevVhosts)
	clear(prevClusters)
	tr.spareVhosts, tr.spareClusters = prevVhosts, prevClusters
	return out, nil
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
		md = sourceMetadata([]ir.Ref{r}, nil)
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
// the first of them unless extra sets it.
func sourceMetadata(refs []ir.Ref, extra map[string]*structpb.Value) *corev3.Metadata {
	return sourceMetadataOf(refs, extra, true)
}

// sourceMetadataOf is sourceMetadata, with istio.config defaulted to the
// first source only when defaultConfig is set.
func sourceMetadataOf(refs []ir.Ref, extra map[string]*structpb.Value, defaultConfig bool) *corev3.Metadata {
	if len(refs) == 0 && len(extra) == 0 {
		return nil
	}
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	istio := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for k, v := range extra {
		istio.Fields[k] = v
	}
	if len(refs) > 0 {
		if _, ok := istio.Fields["config"]; !ok && defaultConfig {
			istio.Fields["config"] = structpb.NewStringValue(refs[0].ConfigPath())
		}
		list := make([]*structpb.Value, len(refs))
		for i, r := range refs {
			list[i] = structpb.NewStringValue(r.String())
		}
		md.FilterMetadata[metaPortico] = &structpb.Struct{Fields: map[string]*structpb.Value{
			"sources": structpb.NewListValue(&structpb.ListValue{Values: list}),
		}}
	}
	md.FilterMetadata[metaIstio] = istio
	return md
}
