package resource

import (
	"slices"

	networking "istio.io/client-go/pkg/apis/networking/v1"
	security "istio.io/client-go/pkg/apis/security/v1"
	telemetry "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Sorter sorts snapshot after snapshot as Sort does, remembering each
// list's last order. Builds run on every change, and at 10,000
// VirtualServices sorting, or only checking that a list is sorted, cost
// a builder 9 ms a change: every comparison reads two objects' creation
// times and names, scattered over the heap. When every object of a list
// is the one at the same index last time, or replaces it with the same
// creation time, namespace and name, the list sorts as it did then: keys
// are unique within a kind. Comparing pointers is enough to know that.
// Not safe for concurrent use.
type Sorter struct {
	lists map[string]any // kind → *listMemo[T]
}

// listMemo is one list's last input (copied: a provider may reuse its
// array) and the order it sorted into.
type listMemo[T metav1.Object] struct {
	in    []T
	perm  []int32 // perm[j] is the index in in of the j-th oldest; nil: in was sorted
	valid bool
}

func memoOf[T metav1.Object](s *Sorter, kind string) *listMemo[T] {
	if s.lists == nil {
		s.lists = map[string]any{}
	}
	m, ok := s.lists[kind].(*listMemo[T])
	if !ok {
		m = &listMemo[T]{}
		s.lists[kind] = m
	}
	return m
}

// SortedCopy returns r with every list sorted as Sort sorts it. The
// Istio kinds (Gateways, VirtualServices, DestinationRules,
// ServiceEntries, RequestAuthentications, AuthorizationPolicies), which
// providers list by name rather than by age, are sorted copies; the
// others, which providers hand over sorted, are sorted in place (a check,
// unless a provider did not).
func (s *Sorter) SortedCopy(r *Resources) *Resources {
	out := *r
	out.Gateways = sortedCopy(memoOf[*networking.Gateway](s, "Gateways"), r.Gateways, compareAgeIstio)
	out.VirtualServices = sortedCopy(memoOf[*networking.VirtualService](s, "VirtualServices"), r.VirtualServices, compareAgeIstio)
	out.DestinationRules = sortedCopy(memoOf[*networking.DestinationRule](s, "DestinationRules"), r.DestinationRules, compareAgeIstio)
	out.ServiceEntries = sortedCopy(memoOf[*networking.ServiceEntry](s, "ServiceEntries"), r.ServiceEntries, compareAgeIstio)
	out.RequestAuthentications = sortedCopy(memoOf[*security.RequestAuthentication](s, "RequestAuthentications"), r.RequestAuthentications, compareAge)
	out.AuthorizationPolicies = sortedCopy(memoOf[*security.AuthorizationPolicy](s, "AuthorizationPolicies"), r.AuthorizationPolicies, compareAge)
	sortInPlace(memoOf[*corev1.Service](s, "Services"), out.Services)
	sortInPlace(memoOf[*discoveryv1.EndpointSlice](s, "EndpointSlices"), out.EndpointSlices)
	sortInPlace(memoOf[*metav1.PartialObjectMetadata](s, "Pods"), out.Pods)
	sortInPlace(memoOf[*corev1.Secret](s, "Secrets"), out.Secrets)
	sortInPlace(memoOf[*telemetry.Telemetry](s, "Telemetries"), out.Telemetries)
	sortInPlace(memoOf[*gwv1.GatewayClass](s, "GatewayClasses"), out.GatewayClasses)
	sortInPlace(memoOf[*gwv1.Gateway](s, "KubeGateways"), out.KubeGateways)
	sortInPlace(memoOf[*gwv1.HTTPRoute](s, "HTTPRoutes"), out.HTTPRoutes)
	sortInPlace(memoOf[*gwv1.GRPCRoute](s, "GRPCRoutes"), out.GRPCRoutes)
	sortInPlace(memoOf[*gwv1.TLSRoute](s, "TLSRoutes"), out.TLSRoutes)
	sortInPlace(memoOf[*gwv1.TCPRoute](s, "TCPRoutes"), out.TCPRoutes)
	sortInPlace(memoOf[*gwv1.UDPRoute](s, "UDPRoutes"), out.UDPRoutes)
	sortInPlace(memoOf[*gwv1.ReferenceGrant](s, "ReferenceGrants"), out.ReferenceGrants)
	sortInPlace(memoOf[*gwv1.BackendTLSPolicy](s, "BackendTLSPolicies"), out.BackendTLSPolicies)
	sortInPlace(memoOf[*corev1.Namespace](s, "Namespaces"), out.Namespaces)
	sortInPlace(memoOf[*corev1.ConfigMap](s, "ConfigMaps"), out.ConfigMaps)
	sortInvalid(out.Invalid)
	return &out
}

// sameOrder reports whether list sorts as the memo's last input did.
func (m *listMemo[T]) sameOrder(list []T, cmp func(a, b metav1.Object) int) bool {
	if !m.valid || len(list) != len(m.in) {
		return false
	}
	for i, o := range list {
		if p := m.in[i]; metav1.Object(o) != metav1.Object(p) && cmp(o, p) != 0 {
			return false
		}
	}
	return true
}

// sortedCopy returns a sorted copy of list.
func sortedCopy[T metav1.Object](m *listMemo[T], list []T, cmp func(a, b metav1.Object) int) []T {
	if len(list) == 0 {
		m.in, m.perm, m.valid = m.in[:0], m.perm[:0], true
		return nil
	}
	out := make([]T, len(list))
	if !m.sameOrder(list, cmp) {
		perm := make([]int32, len(list))
		for i := range perm {
			perm[i] = int32(i)
		}
		slices.SortFunc(perm, func(a, b int32) int { return cmp(list[a], list[b]) })
		m.perm = perm
	}
	for j, i := range m.perm {
		out[j] = list[i]
	}
	m.in, m.valid = append(m.in[:0], list...), true
	return out
}

// sortInPlace sorts list in place, as Sort does.
func sortInPlace[T metav1.Object](m *listMemo[T], list []T) {
	if m.sameOrder(list, compareAge) {
		return
	}
	sortObjects(list)
	m.in, m.perm, m.valid = append(m.in[:0], list...), nil, true
}
