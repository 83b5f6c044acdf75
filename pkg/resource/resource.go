// Package resource defines the immutable input snapshot every provider
// produces and every later stage consumes: Istio networking objects plus the
// Kubernetes objects that describe backends (Services, EndpointSlices, pod
// labels) and certificates (Secrets).
package resource

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	networking "istio.io/client-go/pkg/apis/networking/v1"
	security "istio.io/client-go/pkg/apis/security/v1"
	telemetry "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Kinds Portico reads. The strings are the Kubernetes kind names so that they
// can be shown to users unchanged.
const (
	KindGateway         = "Gateway"
	KindVirtualService  = "VirtualService"
	KindDestinationRule = "DestinationRule"
	KindServiceEntry    = "ServiceEntry"
	KindService         = "Service"
	KindEndpointSlice   = "EndpointSlice"
	KindPod             = "Pod"
	KindSecret          = "Secret"
	// Security kinds (security.istio.io): end-user authentication and
	// authorization at the gateway. v1 and v1beta1 share one schema, so
	// both decode to the v1 Go types.
	KindRequestAuthentication = "RequestAuthentication"
	KindAuthorizationPolicy   = "AuthorizationPolicy"
	// KindTelemetry (telemetry.istio.io v1 and v1alpha1, one schema):
	// tracing, access logging and metrics settings (pkg/telemetry).
	KindTelemetry = "Telemetry"

	// Kubernetes Gateway API kinds (gateway.networking.k8s.io). Every
	// served version decodes to the v1 Go types. Their keys carry
	// GatewayAPIGroup, since "Gateway" alone is Istio's kind.
	KindGatewayClass     = "GatewayClass"
	KindHTTPRoute        = "HTTPRoute"
	KindGRPCRoute        = "GRPCRoute"
	KindTLSRoute         = "TLSRoute"
	KindTCPRoute         = "TCPRoute"
	KindUDPRoute         = "UDPRoute"
	KindReferenceGrant   = "ReferenceGrant"
	KindBackendTLSPolicy = "BackendTLSPolicy"
	// KindNamespace: namespace labels, for allowedRoutes selectors.
	KindNamespace = "Namespace"
	// KindConfigMap: CA bundles BackendTLSPolicies refer to.
	KindConfigMap = "ConfigMap"
)

// GatewayAPIGroup is the API group of the Kubernetes Gateway API kinds.
const GatewayAPIGroup = "gateway.networking.k8s.io"

// IstioGroup is the API group of the Istio networking kinds.
const IstioGroup = "networking.istio.io"

// SecurityGroup is the API group of the Istio security kinds.
const SecurityGroup = "security.istio.io"

// TelemetryGroup is the API group of Istio's Telemetry kind.
const TelemetryGroup = "telemetry.istio.io"

// GroupOf returns the API group of an Istio kind ("" for core kinds).
func GroupOf(kind string) string {
	switch kind {
	case KindGateway, KindVirtualService, KindDestinationRule, KindServiceEntry:
		return IstioGroup
	case KindRequestAuthentication, KindAuthorizationPolicy:
		return SecurityGroup
	case KindTelemetry:
		return TelemetryGroup
	case KindEndpointSlice:
		return "discovery.k8s.io"
	case KindGatewayClass, KindHTTPRoute, KindGRPCRoute, KindTLSRoute, KindTCPRoute, KindUDPRoute,
		KindReferenceGrant, KindBackendTLSPolicy:
		return GatewayAPIGroup
	}
	return ""
}

// Object is what every stored resource implements.
type Object interface {
	metav1.Object
	runtime.Object
}

// Key identifies one resource.
type Key struct {
	// Group is set only where the kind alone is ambiguous: the Gateway
	// API's Gateway (GatewayAPIGroup) against Istio's. Every other kind
	// names its group by itself (GroupOf).
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

func (k Key) String() string {
	kind := k.Kind
	if k.Group != "" {
		kind += "." + k.Group // kubectl's spelling: gateway.gateway.networking.k8s.io
	}
	if k.Namespace == "" {
		return kind + " " + k.Name
	}
	return kind + " " + k.Namespace + "/" + k.Name
}

// IsGatewayAPI reports whether the key names a Gateway API object.
func (k Key) IsGatewayAPI() bool {
	return k.Group == GatewayAPIGroup || GroupOf(k.Kind) == GatewayAPIGroup
}

// NamespacedName returns "namespace/name".
func (k Key) NamespacedName() string { return k.Namespace + "/" + k.Name }

// KeyOf returns the key of obj, whose kind must be one Portico knows.
func KeyOf(obj Object) Key {
	k := Key{Kind: KindOf(obj), Namespace: obj.GetNamespace(), Name: obj.GetName()}
	if _, ok := obj.(*gwv1.Gateway); ok {
		k.Group = GatewayAPIGroup
	}
	return k
}

// KindOf reports the kind of a typed object from its Go type, so callers never
// depend on TypeMeta being filled in (client-go clears it on typed reads).
func KindOf(obj runtime.Object) string {
	switch obj.(type) {
	case *networking.Gateway:
		return KindGateway
	case *networking.VirtualService:
		return KindVirtualService
	case *networking.DestinationRule:
		return KindDestinationRule
	case *networking.ServiceEntry:
		return KindServiceEntry
	case *corev1.Service:
		return KindService
	case *discoveryv1.EndpointSlice:
		return KindEndpointSlice
	case *metav1.PartialObjectMetadata, *corev1.Pod:
		return KindPod
	case *corev1.Secret:
		return KindSecret
	case *security.RequestAuthentication:
		return KindRequestAuthentication
	case *security.AuthorizationPolicy:
		return KindAuthorizationPolicy
	case *telemetry.Telemetry:
		return KindTelemetry
	case *gwv1.GatewayClass:
		return KindGatewayClass
	case *gwv1.Gateway:
		return KindGateway
	case *gwv1.HTTPRoute:
		return KindHTTPRoute
	case *gwv1.GRPCRoute:
		return KindGRPCRoute
	case *gwv1.TLSRoute:
		return KindTLSRoute
	case *gwv1.TCPRoute:
		return KindTCPRoute
	case *gwv1.UDPRoute:
		return KindUDPRoute
	case *gwv1.ReferenceGrant:
		return KindReferenceGrant
	case *gwv1.BackendTLSPolicy:
		return KindBackendTLSPolicy
	case *corev1.Namespace:
		return KindNamespace
	case *corev1.ConfigMap:
		return KindConfigMap
	}
	return fmt.Sprintf("%T", obj)
}

// Resources is one immutable snapshot of everything the controller reads.
// Providers build a new value for every change; nothing mutates a published
// one, so stages may share it across goroutines without locks.
type Resources struct {
	Gateways         []*networking.Gateway         `json:"gateways,omitempty"`
	VirtualServices  []*networking.VirtualService  `json:"virtualServices,omitempty"`
	DestinationRules []*networking.DestinationRule `json:"destinationRules,omitempty"`
	ServiceEntries   []*networking.ServiceEntry    `json:"serviceEntries,omitempty"`
	Services         []*corev1.Service             `json:"services,omitempty"`
	EndpointSlices   []*discoveryv1.EndpointSlice  `json:"endpointSlices,omitempty"`
	// Pods carries only metadata: labels are all subsets need.
	Pods    []*metav1.PartialObjectMetadata `json:"pods,omitempty"`
	Secrets []*corev1.Secret                `json:"secrets,omitempty"`

	RequestAuthentications []*security.RequestAuthentication `json:"requestAuthentications,omitempty"`
	AuthorizationPolicies  []*security.AuthorizationPolicy   `json:"authorizationPolicies,omitempty"`
	Telemetries            []*telemetry.Telemetry            `json:"telemetries,omitempty"`

	// Kubernetes Gateway API (gateway.networking.k8s.io), all as v1.
	GatewayClasses     []*gwv1.GatewayClass     `json:"gatewayClasses,omitempty"`
	KubeGateways       []*gwv1.Gateway          `json:"kubeGateways,omitempty"`
	HTTPRoutes         []*gwv1.HTTPRoute        `json:"httpRoutes,omitempty"`
	GRPCRoutes         []*gwv1.GRPCRoute        `json:"grpcRoutes,omitempty"`
	TLSRoutes          []*gwv1.TLSRoute         `json:"tlsRoutes,omitempty"`
	TCPRoutes          []*gwv1.TCPRoute         `json:"tcpRoutes,omitempty"`
	UDPRoutes          []*gwv1.UDPRoute         `json:"udpRoutes,omitempty"`
	ReferenceGrants    []*gwv1.ReferenceGrant   `json:"referenceGrants,omitempty"`
	BackendTLSPolicies []*gwv1.BackendTLSPolicy `json:"backendTLSPolicies,omitempty"`
	// Namespaces carry only metadata (labels, for allowedRoutes
	// selectors). Providers fill them only when Gateway API objects exist.
	Namespaces []*corev1.Namespace `json:"namespaces,omitempty"`
	// ConfigMaps are the CA bundles BackendTLSPolicies name (only those).
	ConfigMaps []*corev1.ConfigMap `json:"configMaps,omitempty"`

	// Invalid lists resources whose latest version could not be read. The
	// previous good version (if any) is still in the lists above; the binder
	// reports the error on the resource's status.
	Invalid []InvalidResource `json:"invalid,omitempty"`
}

// InvalidResource is a document a provider could not decode.
type InvalidResource struct {
	// Key is set when the document got far enough to name itself.
	Key    Key    `json:"key"`
	Source string `json:"source"`
	Error  string `json:"error"`
}

// All returns every object of the snapshot, kind by kind.
func (r *Resources) All() []Object {
	out := make([]Object, 0, r.Len())
	for _, o := range r.Gateways {
		out = append(out, o)
	}
	for _, o := range r.VirtualServices {
		out = append(out, o)
	}
	for _, o := range r.DestinationRules {
		out = append(out, o)
	}
	for _, o := range r.ServiceEntries {
		out = append(out, o)
	}
	for _, o := range r.Services {
		out = append(out, o)
	}
	for _, o := range r.EndpointSlices {
		out = append(out, o)
	}
	for _, o := range r.Pods {
		out = append(out, o)
	}
	for _, o := range r.Secrets {
		out = append(out, o)
	}
	for _, o := range r.RequestAuthentications {
		out = append(out, o)
	}
	for _, o := range r.AuthorizationPolicies {
		out = append(out, o)
	}
	for _, o := range r.Telemetries {
		out = append(out, o)
	}
	out = appendAll(out, r.GatewayClasses)
	out = appendAll(out, r.KubeGateways)
	out = appendAll(out, r.HTTPRoutes)
	out = appendAll(out, r.GRPCRoutes)
	out = appendAll(out, r.TLSRoutes)
	out = appendAll(out, r.TCPRoutes)
	out = appendAll(out, r.UDPRoutes)
	out = appendAll(out, r.ReferenceGrants)
	out = appendAll(out, r.BackendTLSPolicies)
	out = appendAll(out, r.Namespaces)
	out = appendAll(out, r.ConfigMaps)
	return out
}

// Add appends obj to the list for its kind. Unknown kinds return an error.
func (r *Resources) Add(obj Object) error {
	switch o := obj.(type) {
	case *networking.Gateway:
		r.Gateways = append(r.Gateways, o)
	case *networking.VirtualService:
		r.VirtualServices = append(r.VirtualServices, o)
	case *networking.DestinationRule:
		r.DestinationRules = append(r.DestinationRules, o)
	case *networking.ServiceEntry:
		r.ServiceEntries = append(r.ServiceEntries, o)
	case *corev1.Service:
		r.Services = append(r.Services, o)
	case *discoveryv1.EndpointSlice:
		r.EndpointSlices = append(r.EndpointSlices, o)
	case *metav1.PartialObjectMetadata:
		r.Pods = append(r.Pods, o)
	case *corev1.Secret:
		r.Secrets = append(r.Secrets, o)
	case *security.RequestAuthentication:
		r.RequestAuthentications = append(r.RequestAuthentications, o)
	case *security.AuthorizationPolicy:
		r.AuthorizationPolicies = append(r.AuthorizationPolicies, o)
	case *telemetry.Telemetry:
		r.Telemetries = append(r.Telemetries, o)
	case *gwv1.GatewayClass:
		r.GatewayClasses = append(r.GatewayClasses, o)
	case *gwv1.Gateway:
		r.KubeGateways = append(r.KubeGateways, o)
	case *gwv1.HTTPRoute:
		r.HTTPRoutes = append(r.HTTPRoutes, o)
	case *gwv1.GRPCRoute:
		r.GRPCRoutes = append(r.GRPCRoutes, o)
	case *gwv1.TLSRoute:
		r.TLSRoutes = append(r.TLSRoutes, o)
	case *gwv1.TCPRoute:
		r.TCPRoutes = append(r.TCPRoutes, o)
	case *gwv1.UDPRoute:
		r.UDPRoutes = append(r.UDPRoutes, o)
	case *gwv1.ReferenceGrant:
		r.ReferenceGrants = append(r.ReferenceGrants, o)
	case *gwv1.BackendTLSPolicy:
		r.BackendTLSPolicies = append(r.BackendTLSPolicies, o)
	case *corev1.Namespace:
		r.Namespaces = append(r.Namespaces, o)
	case *corev1.ConfigMap:
		r.ConfigMaps = append(r.ConfigMaps, o)
	default:
		return fmt.Errorf("unsupported object type %T", obj)
	}
	return nil
}

// FromObjects returns the sorted snapshot of objs: each added with Add,
// then Sort. It fails on the first object Add rejects, naming it.
func FromObjects(objs []Object) (*Resources, error) {
	res := &Resources{}
	for _, o := range objs {
		if err := res.Add(o); err != nil {
			return nil, fmt.Errorf("%s: %w", KeyOf(o), err)
		}
	}
	res.Sort()
	return res, nil
}

// Sort orders every list oldest first (creationTimestamp, then
// namespace/name; for Istio's kinds name/namespace). Every later stage relies on this order to resolve
// conflicts deterministically: the oldest resource wins.
func (r *Resources) Sort() {
	// Istio's kinds tie-break equal creation times by name, then
	// namespace (pilot's configCompareByCreationTime); the Gateway API's
	// by namespace/name, as its spec says.
	sortIstioObjects(r.Gateways)
	sortIstioObjects(r.VirtualServices)
	sortIstioObjects(r.DestinationRules)
	sortIstioObjects(r.ServiceEntries)
	sortObjects(r.Services)
	sortObjects(r.EndpointSlices)
	sortObjects(r.Pods)
	sortObjects(r.Secrets)
	sortObjects(r.RequestAuthentications)
	sortObjects(r.AuthorizationPolicies)
	sortObjects(r.Telemetries)
	sortObjects(r.GatewayClasses)
	sortObjects(r.KubeGateways)
	sortObjects(r.HTTPRoutes)
	sortObjects(r.GRPCRoutes)
	sortObjects(r.TLSRoutes)
	sortObjects(r.TCPRoutes)
	sortObjects(r.UDPRoutes)
	sortObjects(r.ReferenceGrants)
	sortObjects(r.BackendTLSPolicies)
	sortObjects(r.Namespaces)
	sortObjects(r.ConfigMaps)
	sortInvalid(r.Invalid)
}

// sortInvalid orders unreadable resources by source, then key.
func sortInvalid(list []InvalidResource) {
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].Source != list[j].Source {
			return list[i].Source < list[j].Source
		}
		return list[i].Key.String() < list[j].Key.String()
	})
}

// Older reports whether a sorts before b: earlier creationTimestamp, then
// namespace, then name.
func Older(a, b metav1.Object) bool { return compareAge(a, b) < 0 }

func compareAge(a, b metav1.Object) int {
	if c := a.GetCreationTimestamp().Time.Compare(b.GetCreationTimestamp().Time); c != 0 {
		return c
	}
	if c := strings.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
		return c
	}
	return strings.Compare(a.GetName(), b.GetName())
}

// OlderIstio is Older for Istio's kinds (Gateway, VirtualService,
// DestinationRule, ServiceEntry): earlier creationTimestamp, then name,
// then namespace, as istiod orders them.
func OlderIstio(a, b metav1.Object) bool { return compareAgeIstio(a, b) < 0 }

func compareAgeIstio(a, b metav1.Object) int {
	if c := a.GetCreationTimestamp().Time.Compare(b.GetCreationTimestamp().Time); c != 0 {
		return c
	}
	if c := strings.Compare(a.GetName(), b.GetName()); c != 0 {
		return c
	}
	return strings.Compare(a.GetNamespace(), b.GetNamespace())
}

func sortIstioObjects[T metav1.Object](list []T) {
	cmp := func(a, b T) int { return compareAgeIstio(a, b) }
	if slices.IsSortedFunc(list, cmp) {
		return
	}
	slices.SortFunc(list, cmp)
}

func sortObjects[T metav1.Object](list []T) {
	cmp := func(a, b T) int { return compareAge(a, b) }
	// Providers hand over sorted lists and every build sorts its copy:
	// checking is linear, sorting is not. Namespace/name is unique within
	// a kind, so the order is total and an unstable sort is enough (the
	// stable one is O(n log² n), felt at thousands of objects per change
	// in Kubernetes mode, where the cache lists in no particular order).
	if slices.IsSortedFunc(list, cmp) {
		return
	}
	slices.SortFunc(list, cmp)
}

// Len is the number of objects in the snapshot.
func (r *Resources) Len() int {
	return len(r.Gateways) + len(r.VirtualServices) + len(r.DestinationRules) +
		len(r.ServiceEntries) + len(r.Services) + len(r.EndpointSlices) +
		len(r.Pods) + len(r.Secrets) + len(r.RequestAuthentications) + len(r.AuthorizationPolicies) + len(r.Telemetries) +
		len(r.GatewayClasses) + len(r.KubeGateways) + len(r.HTTPRoutes) + len(r.GRPCRoutes) +
		len(r.TLSRoutes) + len(r.TCPRoutes) + len(r.UDPRoutes) + len(r.ReferenceGrants) +
		len(r.BackendTLSPolicies) + len(r.Namespaces) + len(r.ConfigMaps)
}

// HasGatewayAPI reports whether the snapshot holds any Gateway API object.
func (r *Resources) HasGatewayAPI() bool {
	return len(r.GatewayClasses)+len(r.KubeGateways)+len(r.HTTPRoutes)+len(r.GRPCRoutes)+
		len(r.TLSRoutes)+len(r.TCPRoutes)+len(r.UDPRoutes)+len(r.ReferenceGrants)+len(r.BackendTLSPolicies) > 0
}

func appendAll[T Object](out []Object, list []T) []Object {
	for _, o := range list {
		out = append(out, o)
	}
	return out
}

// Age formats a creation time for status messages.
func Age(t time.Time) string {
	if t.IsZero() {
		return "no creationTimestamp"
	}
	return t.UTC().Format(time.RFC3339)
}
