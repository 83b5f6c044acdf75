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
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
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
)

// IstioGroup is the API group of the Istio networking kinds.
const IstioGroup = "networking.istio.io"

// SecurityGroup is the API group of the Istio security kinds.
const SecurityGroup = "security.istio.io"

// GroupOf returns the API group of an Istio kind ("" for core kinds).
func GroupOf(kind string) string {
	switch kind {
	case KindGateway, KindVirtualService, KindDestinationRule, KindServiceEntry:
		return IstioGroup
	case KindRequestAuthentication, KindAuthorizationPolicy:
		return SecurityGroup
	case KindEndpointSlice:
		return "discovery.k8s.io"
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
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

func (k Key) String() string {
	if k.Namespace == "" {
		return k.Kind + " " + k.Name
	}
	return k.Kind + " " + k.Namespace + "/" + k.Name
}

// NamespacedName returns "namespace/name".
func (k Key) NamespacedName() string { return k.Namespace + "/" + k.Name }

// KeyOf returns the key of obj, whose kind must be one Portico knows.
func KeyOf(obj Object) Key {
	return Key{Kind: KindOf(obj), Namespace: obj.GetNamespace(), Name: obj.GetName()}
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
	default:
		return fmt.Errorf("unsupported object type %T", obj)
	}
	return nil
}

// Sort orders every list oldest first (creationTimestamp, then
// namespace/name). Every later stage relies on this order to resolve
// conflicts deterministically: the oldest resource wins.
func (r *Resources) Sort() {
	sortObjects(r.Gateways)
	sortObjects(r.VirtualServices)
	sortObjects(r.DestinationRules)
	sortObjects(r.ServiceEntries)
	sortObjects(r.Services)
	sortObjects(r.EndpointSlices)
	sortObjects(r.Pods)
	sortObjects(r.Secrets)
	sortObjects(r.RequestAuthentications)
	sortObjects(r.AuthorizationPolicies)
	sort.SliceStable(r.Invalid, func(i, j int) bool {
		if r.Invalid[i].Source != r.Invalid[j].Source {
			return r.Invalid[i].Source < r.Invalid[j].Source
		}
		return r.Invalid[i].Key.String() < r.Invalid[j].Key.String()
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
		len(r.Pods) + len(r.Secrets) + len(r.RequestAuthentications) + len(r.AuthorizationPolicies)
}

// Age formats a creation time for status messages.
func Age(t time.Time) string {
	if t.IsZero() {
		return "no creationTimestamp"
	}
	return t.UTC().Format(time.RFC3339)
}
