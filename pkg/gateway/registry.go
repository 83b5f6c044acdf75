package gateway

import (
	"fmt"
	"net"
	"sort"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// service is a backend the gateway can route to: a Kubernetes Service or one
// host of a ServiceEntry.
type service struct {
	FQDN       string
	Namespace  string
	Ports      []servicePort
	Discovery  ir.Discovery
	External   bool
	Source     ir.Ref
	endpoints  []endpoint
	resolution networkingapi.ServiceEntry_Resolution
}

type servicePort struct {
	Number   uint32
	Name     string
	Protocol string
	// TargetPort is the endpoint port when endpoints do not say otherwise.
	TargetPort uint32
}

type endpoint struct {
	Address string
	// Ports maps service port names to endpoint ports; PortNumbers maps
	// service port numbers (for unnamed single-port services).
	Ports  map[string]uint32
	Labels map[string]string
	Weight uint32
}

func (s *service) port(number uint32) (servicePort, bool) {
	for _, p := range s.Ports {
		if p.Number == number {
			return p, true
		}
	}
	return servicePort{}, false
}

func (s *service) portList() string {
	var out []string
	for _, p := range s.Ports {
		out = append(out, fmt.Sprint(p.Number))
	}
	return strings.Join(out, ", ")
}

// endpointsFor returns the endpoints of a service port whose labels include
// selector, sorted for deterministic output.
func (s *service) endpointsFor(p servicePort, selector map[string]string) []ir.Endpoint {
	var out []ir.Endpoint
	for _, ep := range s.endpoints {
		if !labelsMatch(selector, ep.Labels) {
			continue
		}
		port, ok := ep.Ports[p.Name]
		if !ok {
			port = p.TargetPort
			if port == 0 {
				port = p.Number
			}
		}
		out = append(out, ir.Endpoint{Address: ep.Address, Port: port, Weight: ep.Weight, Labels: ep.Labels})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Address != out[j].Address {
			return out[i].Address < out[j].Address
		}
		return out[i].Port < out[j].Port
	})
	return out
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// registry indexes backends, DestinationRules and Secrets for one build.
// Its accessors (deps.go) record what they are asked and what they find
// while a cached computation runs.
type registry struct {
	domainSuffix string
	services     map[string]*service
	// destinationRules by expanded host, oldest first.
	destinationRules map[string][]*networking.DestinationRule
	wildcardDRs      []*networking.DestinationRule
	secrets          map[string]*corev1.Secret // namespace/name
	// deps, when set, receives every read (see recording).
	deps *deps
}

func refOf(kind string, ns, name string) ir.Ref {
	return ir.Ref{Kind: kind, Namespace: ns, Name: name}
}

// registryInputs is everything a registry is built from: newRegistry sees
// nothing else, so an equal set of inputs yields an equal registry.
type registryInputs struct {
	domainSuffix     string
	services         []*corev1.Service
	endpointSlices   []*discoveryv1.EndpointSlice
	pods             []*metav1.PartialObjectMetadata
	serviceEntries   []*networking.ServiceEntry
	destinationRules []*networking.DestinationRule
	secrets          []*corev1.Secret
}

func registryInputsOf(res *resource.Resources, domainSuffix string) *registryInputs {
	return &registryInputs{domainSuffix: domainSuffix, services: res.Services, endpointSlices: res.EndpointSlices, pods: res.Pods,
		serviceEntries: res.ServiceEntries, destinationRules: res.DestinationRules, secrets: res.Secrets}
}

// same reports whether b holds the same versions of the same objects.
func (a *registryInputs) same(b *registryInputs) bool {
	return a.domainSuffix == b.domainSuffix && sameObjects(a.services, b.services) && sameObjects(a.endpointSlices, b.endpointSlices) &&
		sameObjects(a.pods, b.pods) && sameObjects(a.serviceEntries, b.serviceEntries) &&
		sameObjects(a.destinationRules, b.destinationRules) && sameObjects(a.secrets, b.secrets)
}

func sameObjects[T any, P interface {
	*T
	metav1.Object
}](a, b []P) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && idOf(a[i]) != idOf(b[i]) {
			return false
		}
	}
	return true
}

// serviceMemo is a Kubernetes Service's registry entry with what building
// it read: the Service, its EndpointSlices and the Pods they name.
type serviceMemo struct {
	domainSuffix string
	svc          objectID
	slices       []objectID
	pods         []podRead
	built        *service
}

// podRead is one Pod looked up while building a service entry.
type podRead struct {
	name objectName
	id   objectID
}

// seHost is one host of one version of a ServiceEntry.
type seHost struct {
	se   objectID
	host string
}

// registryMemo carries registry entries from one build to the next, so
// that an unchanged Service (with its EndpointSlices and Pods) or
// ServiceEntry keeps its entry — the very pointer, which is what cached
// conversions and clusters recorded reading.
type registryMemo struct {
	prev, next     map[objectName]*serviceMemo
	prevSE, nextSE map[seHost]*service
}

// podIndex finds Pods by name, recording each lookup.
type podIndex struct {
	byName map[objectName]*metav1.PartialObjectMetadata
	reads  *[]podRead
}

func (p podIndex) get(n objectName) *metav1.PartialObjectMetadata {
	pod := p.byName[n]
	if p.reads != nil {
		*p.reads = append(*p.reads, podRead{name: n, id: idOf(pod)})
	}
	return pod
}

// reusable reports whether m was built from these very objects.
func (m *serviceMemo) reusable(domainSuffix string, svc *corev1.Service, slices []*discoveryv1.EndpointSlice, pods podIndex) bool {
	if m.domainSuffix != domainSuffix || m.svc != idOf(svc) || len(m.slices) != len(slices) {
		return false
	}
	for i, es := range slices {
		if m.slices[i] != idOf(es) {
			return false
		}
	}
	for _, r := range m.pods {
		if idOf(pods.byName[r.name]) != r.id {
			return false
		}
	}
	return true
}

// objectName is a namespace and a name, as a map key.
type objectName struct{ namespace, name string }

func newRegistry(in *registryInputs, report *status.Report, memo *registryMemo) *registry {
	domainSuffix := in.domainSuffix
	r := &registry{
		domainSuffix:     domainSuffix,
		services:         map[string]*service{},
		destinationRules: map[string][]*networking.DestinationRule{},
		secrets:          map[string]*corev1.Secret{},
	}
	pods := podIndex{byName: make(map[objectName]*metav1.PartialObjectMetadata, len(in.pods))}
	for _, p := range in.pods {
		pods.byName[objectName{p.Namespace, p.Name}] = p
	}
	slices := make(map[objectName][]*discoveryv1.EndpointSlice, len(in.services))
	for _, es := range in.endpointSlices {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		k := objectName{es.Namespace, svc}
		slices[k] = append(slices[k], es)
	}
	for _, svc := range in.services {
		k := objectName{svc.Namespace, svc.Name}
		own := slices[k]
		if memo != nil {
			if m, ok := memo.prev[k]; ok && m.reusable(domainSuffix, svc, own, pods) {
				r.services[m.built.FQDN] = m.built
				memo.next[k] = m
				continue
			}
		}
		m := &serviceMemo{domainSuffix: domainSuffix, svc: idOf(svc)}
		for _, es := range own {
			m.slices = append(m.slices, idOf(es))
		}
		m.built = r.fromKubeService(svc, own, podIndex{byName: pods.byName, reads: &m.pods})
		r.services[m.built.FQDN] = m.built
		if memo != nil {
			memo.next[k] = m
		}
	}
	for _, se := range in.serviceEntries {
		r.addServiceEntry(se, report, memo)
	}
	for _, dr := range in.destinationRules {
		host := fqdn(dr.Spec.Host, dr.Namespace, domainSuffix)
		if isWildcard(host) {
			r.wildcardDRs = append(r.wildcardDRs, dr)
			continue
		}
		r.destinationRules[host] = append(r.destinationRules[host], dr)
	}
	for _, s := range in.secrets {
		r.secrets[s.Namespace+"/"+s.Name] = s
	}
	return r
}

// protocolOf infers a port's protocol the way Istio does: appProtocol first,
// then the port name's prefix ("http-web", "grpc", "tcp-db").
func protocolOf(name string, appProtocol *string) string {
	if appProtocol != nil && *appProtocol != "" {
		return normalizeProtocol(*appProtocol)
	}
	prefix := name
	if i := strings.IndexByte(name, '-'); i >= 0 {
		prefix = name[:i]
	}
	return normalizeProtocol(prefix)
}

func normalizeProtocol(p string) string {
	switch strings.ToLower(p) {
	case "http", "http1", "kubernetes.io/http":
		return "HTTP"
	case "http2", "kubernetes.io/h2c":
		return "HTTP2"
	case "grpc", "grpc-web":
		return "GRPC"
	case "https":
		return "HTTPS"
	case "tls":
		return "TLS"
	case "tcp", "mongo", "mysql", "redis":
		return "TCP"
	}
	return "TCP"
}

func (r *registry) fromKubeService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, pods podIndex) *service {
	s := &service{
		FQDN:      svc.Name + "." + svc.Namespace + ".svc." + r.domainSuffix,
		Namespace: svc.Namespace,
		Discovery: ir.DiscoveryEDS,
		Source:    refOf(resource.KindService, svc.Namespace, svc.Name),
	}
	for _, p := range svc.Spec.Ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			continue // UDP and SCTP are not proxied.
		}
		sp := servicePort{Number: uint32(p.Port), Name: p.Name, Protocol: protocolOf(p.Name, p.AppProtocol)}
		if p.TargetPort.IntVal > 0 {
			sp.TargetPort = uint32(p.TargetPort.IntVal)
		}
		s.Ports = append(s.Ports, sp)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName && svc.Spec.ExternalName != "" {
		s.Discovery = ir.DiscoveryStrictDNS
		s.External = true
		s.endpoints = []endpoint{{Address: svc.Spec.ExternalName}}
		return s
	}
	seen := map[string]int{}
	for _, es := range slices {
		if es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			var labels map[string]string
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				ns := ep.TargetRef.Namespace
				if ns == "" {
					ns = es.Namespace
				}
				if p := pods.get(objectName{ns, ep.TargetRef.Name}); p != nil {
					labels = withWorkloadName(p)
				}
			}
			for _, addr := range ep.Addresses {
				idx, ok := seen[addr]
				if !ok {
					idx = len(s.endpoints)
					seen[addr] = idx
					s.endpoints = append(s.endpoints, endpoint{Address: addr, Ports: map[string]uint32{}, Labels: labels})
				}
				for _, p := range es.Ports {
					if p.Port == nil {
						continue
					}
					name := ""
					if p.Name != nil {
						name = *p.Name
					}
					s.endpoints[idx].Ports[name] = uint32(*p.Port)
				}
			}
		}
	}
	return s
}

func (r *registry) addServiceEntry(se *networking.ServiceEntry, report *status.Report, memo *registryMemo) {
	key := resource.KeyOf(se)
	spec := &se.Spec
	disc := ir.DiscoveryEDS
	switch spec.Resolution {
	case networkingapi.ServiceEntry_DNS, networkingapi.ServiceEntry_DNS_ROUND_ROBIN:
		disc = ir.DiscoveryStrictDNS
	case networkingapi.ServiceEntry_NONE:
		report.Add(key, status.Message{Code: status.UnsupportedAtGateway, Level: status.Warning, Reason: status.ReasonUnsupported,
			Field: "spec.resolution", Message: "resolution NONE forwards to the original destination, which at a gateway is the gateway itself; routes to this entry get no endpoints (use STATIC with endpoints, or DNS)"})
	}
	if len(spec.Hosts) == 0 {
		report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: "spec.hosts", Message: "at least one host is required"})
		return
	}
	if len(spec.Ports) == 0 {
		report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: "spec.ports", Message: "at least one port is required"})
		return
	}
	var ports []servicePort
	names := map[string]bool{}
	for i, p := range spec.Ports {
		if p.Number == 0 || p.Number > 65535 {
			report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: fmt.Sprintf("spec.ports[%d].number", i), Message: fmt.Sprintf("invalid port %d", p.Number)})
			return
		}
		if names[p.Name] && p.Name != "" {
			report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: fmt.Sprintf("spec.ports[%d].name", i), Message: fmt.Sprintf("duplicate port name %q", p.Name)})
			return
		}
		names[p.Name] = true
		proto := normalizeProtocol(p.Protocol)
		if p.Protocol == "" {
			proto = protocolOf(p.Name, nil)
		}
		ports = append(ports, servicePort{Number: p.Number, Name: p.Name, Protocol: proto, TargetPort: p.TargetPort})
	}
	var eps []endpoint
	for i, we := range spec.Endpoints {
		if we.Address == "" {
			report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: fmt.Sprintf("spec.endpoints[%d].address", i), Message: "address is required"})
			return
		}
		if disc == ir.DiscoveryEDS && net.ParseIP(we.Address) == nil {
			report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: fmt.Sprintf("spec.endpoints[%d].address", i),
				Message: fmt.Sprintf("%q is not an IP address; STATIC resolution needs IPs (use resolution: DNS for host names)", we.Address)})
			return
		}
		eps = append(eps, endpoint{Address: we.Address, Ports: we.Ports, Labels: we.Labels, Weight: we.Weight})
	}
	for i, h := range spec.Hosts {
		host := strings.ToLower(h)
		if err := validateHost(host, true); err != nil {
			report.Reject(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: fmt.Sprintf("spec.hosts[%d]", i), Message: err.Error()})
			return
		}
		if disc == ir.DiscoveryStrictDNS && len(eps) == 0 && isWildcard(host) {
			report.Add(key, status.Message{Code: status.SchemaValidationError, Level: status.Error, Reason: status.ReasonInvalidSpec, Field: fmt.Sprintf("spec.hosts[%d]", i),
				Message: fmt.Sprintf("wildcard host %q cannot be resolved by DNS without endpoints", host)})
			continue
		}
	}
	for _, h := range spec.Hosts {
		host := strings.ToLower(h)
		if old, ok := r.services[host]; ok {
			report.Add(key, status.Message{Code: status.ConflictingGateways, Level: status.Warning, Reason: status.ReasonConflictingServer, Field: "spec.hosts",
				Message: fmt.Sprintf("host %q is already defined by %s, which is used instead", host, old.Source)})
			continue
		}
		s := &service{
			FQDN: host, Namespace: se.Namespace, Ports: ports, Discovery: disc,
			External:   spec.Location == networkingapi.ServiceEntry_MESH_EXTERNAL,
			Source:     refOf(resource.KindServiceEntry, se.Namespace, se.Name),
			resolution: spec.Resolution,
		}
		switch {
		case len(eps) > 0:
			s.endpoints = eps
		case disc == ir.DiscoveryStrictDNS && !isWildcard(host):
			s.endpoints = []endpoint{{Address: host}}
		}
		if memo != nil {
			// The entry is a function of this version of the ServiceEntry
			// and the host only: keep the previous build's pointer.
			k := seHost{se: idOf(se), host: host}
			if old, ok := memo.prevSE[k]; ok {
				s = old
			}
			memo.nextSE[k] = s
		}
		r.services[host] = s
	}
}

// findService finds the service for an expanded host: exact first, then
// the most specific ServiceEntry wildcard.
func (r *registry) findService(host string) *service {
	if s, ok := r.services[host]; ok {
		return s
	}
	var best *service
	for name, s := range r.services {
		if isWildcard(name) && hostCovers(name, host) {
			if best == nil || len(name) > len(best.FQDN) || len(name) == len(best.FQDN) && name < best.FQDN {
				best = s
			}
		}
	}
	return best
}

// findDestinationRule returns the rule that applies to a host: the oldest
// exact match, else the most specific wildcard.
func (r *registry) findDestinationRule(host string) *networking.DestinationRule {
	if drs := r.destinationRules[host]; len(drs) > 0 {
		return drs[0]
	}
	var best *networking.DestinationRule
	bestLen := -1
	for _, dr := range r.wildcardDRs {
		h := fqdn(dr.Spec.Host, dr.Namespace, r.domainSuffix)
		if hostCovers(h, host) && len(h) > bestLen {
			best, bestLen = dr, len(h)
		}
	}
	return best
}

// WorkloadNameLabel is the label Istio reads a pod's workload name from
// when it is set; otherwise the name comes from the pod's owner.
const WorkloadNameLabel = "service.istio.io/workload-name"

// withWorkloadName returns the pod's labels with WorkloadNameLabel set to
// its workload, as Istio names it for telemetry (destination_workload):
// the Deployment of a ReplicaSet-owned pod (the ReplicaSet's name without
// its pod-template-hash suffix), else the owning controller's name (a
// StatefulSet, DaemonSet, Job), else the pod's own name. The pod's map is
// never modified: it belongs to the snapshot.
func withWorkloadName(p *metav1.PartialObjectMetadata) map[string]string {
	if _, ok := p.Labels[WorkloadNameLabel]; ok {
		return p.Labels
	}
	name := p.Name
	for _, ref := range p.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		name = ref.Name
		if ref.Kind == "ReplicaSet" {
			if hash := p.Labels["pod-template-hash"]; hash != "" {
				name = strings.TrimSuffix(name, "-"+hash)
			}
		}
		break
	}
	out := make(map[string]string, len(p.Labels)+1)
	for k, v := range p.Labels {
		out[k] = v
	}
	out[WorkloadNameLabel] = name
	return out
}
