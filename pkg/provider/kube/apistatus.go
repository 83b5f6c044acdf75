package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/gatewayapi"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// DefaultControllerName is the GatewayClass controllerName Portico
// implements unless told otherwise.
const DefaultControllerName = "portico.io/gateway-controller"

// routeKinds have a RouteStatus: a list of parents, one per parentRef and
// controller, shared with other controllers.
var routeKinds = []string{resource.KindHTTPRoute, resource.KindGRPCRoute, resource.KindTLSRoute, resource.KindTCPRoute, resource.KindUDPRoute}

// parentsField is the list of a status shared between controllers.
func parentsField(kind string) string {
	switch {
	case slices.Contains(routeKinds, kind):
		return "parents"
	case kind == resource.KindBackendTLSPolicy:
		return "ancestors"
	}
	return ""
}

// writeAPIStatuses writes every Gateway API status of a build, then
// removes this controller's entries from routes and policies the build
// no longer gave a status (their parentRef to our Gateway went). It
// reports whether anything failed, so the caller tries again.
func (w *StatusWriter) writeAPIStatuses(ctx context.Context, statuses []*status.APIStatus) (failed bool) {
	written := map[resource.Key]bool{}
	for _, st := range statuses {
		written[st.Key] = true
		if err := w.writeAPI(ctx, st.Key, st.Status); err != nil {
			if ctx.Err() != nil {
				return true
			}
			w.log.Error(err, "writing Gateway API status", "resource", st.Key.String())
			failed = true
		}
	}
	for _, kind := range append(append([]string(nil), routeKinds...), resource.KindBackendTLSPolicy) {
		gvk, ok := w.p.APIGVK(kind)
		if !ok {
			continue
		}
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		// The cache's own objects, read only: a copy of every route per
		// status pass cost more than the pass.
		if err := w.p.cached.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			w.log.Error(err, "listing for stale statuses", "kind", kind)
			failed = true
			continue
		}
		for i := range list.Items {
			u := &list.Items[i]
			key := resource.Key{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}
			if written[key] || !hasEntryOf(u, parentsField(kind), w.controllerName) {
				continue
			}
			// Only other controllers' entries remain.
			if err := w.writeAPI(ctx, key, map[string]any{parentsField(kind): []any{}}); err != nil && ctx.Err() == nil {
				w.log.Error(err, "removing a stale Gateway API status", "resource", key.String())
				failed = true
			}
		}
	}
	return failed
}

func hasEntryOf(u *unstructured.Unstructured, field, controller string) bool {
	list, _, _ := unstructured.NestedSlice(u.Object, "status", field)
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["controllerName"] == controller {
			return true
		}
	}
	return false
}

// writeAPI writes one object's .status through the status subresource,
// when it differs from what the object carries.
func (w *StatusWriter) writeAPI(ctx context.Context, key resource.Key, st any) error {
	gvk, ok := w.p.APIGVK(key.Kind)
	if !ok || (key.Kind == resource.KindGateway && key.Group != resource.GatewayAPIGroup) {
		return nil // not served, or not a Gateway API object
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if err := w.p.cached.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.Name}, u); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile
		}
		return err
	}
	desired, err := toMap(st)
	if err != nil {
		return fmt.Errorf("encoding the status of %s: %w", key, err)
	}
	current, _ := u.Object["status"].(map[string]any)
	switch key.Kind {
	case resource.KindGatewayClass:
		if ctrl, _, _ := unstructured.NestedString(u.Object, "spec", "controllerName"); ctrl != w.controllerName {
			return nil // another controller's class
		}
	case resource.KindGateway:
		if addrs, _ := desired["addresses"].([]any); len(addrs) == 0 {
			if a := w.gatewayAddresses(ctx, u); len(a) > 0 {
				desired["addresses"] = a
			} else {
				addressNotAssigned(desired)
			}
		}
	}
	if field := parentsField(key.Kind); field != "" {
		desired[field] = w.mergeParents(current[field], desired[field])
	}
	applyStatusDefaults(desired)
	if g := maxObservedGeneration(desired); g > 0 && g < u.GetGeneration() {
		return nil // a newer generation is being built; its status follows
	}
	keepTransitionTimes(desired, current, time.Now())
	if reflect.DeepEqual(normalise(current), normalise(desired)) {
		return nil
	}
	patchStatus := map[string]any{}
	for k := range current {
		patchStatus[k] = nil // a merge patch keeps what it does not name
	}
	for k, v := range desired {
		patchStatus[k] = v
	}
	// With the resourceVersion read: another controller's concurrent
	// write to a shared parents list is a conflict, not lost.
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": u.GetResourceVersion()}, "status": patchStatus})
	if err != nil {
		return err
	}
	if err := w.limiter.Wait(ctx); err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gvk)
	obj.SetNamespace(key.Namespace)
	obj.SetName(key.Name)
	err = w.p.api.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("portico"))
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		// The object changed since the cache saw it; its update event
		// brings a new build and another try.
		w.log.V(1).Info("status write conflicted; retrying with the next build", "resource", key.String())
		return nil
	}
	return err
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// mergeParents keeps other controllers' entries (in their order) and
// puts ours, as computed, after them.
func (w *StatusWriter) mergeParents(current, ours any) []any {
	out := []any{}
	cur, _ := current.([]any)
	for _, e := range cur {
		if m, ok := e.(map[string]any); ok && m["controllerName"] != w.controllerName {
			out = append(out, e)
		}
	}
	mine, _ := ours.([]any)
	for _, e := range mine {
		if m, ok := e.(map[string]any); ok {
			if c, _ := m["controllerName"].(string); c == "" {
				m["controllerName"] = w.controllerName
			}
		}
		out = append(out, e)
	}
	return out
}

// applyStatusDefaults fills what the CRD schemas default in a status, so
// a status read back equals the one written (else every build would
// write again): parentRef/ancestorRef group and kind, listener
// supportedKinds group, address type.
func applyStatusDefaults(st map[string]any) {
	for _, field := range []string{"parents", "ancestors"} {
		list, _ := st[field].([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			for _, refField := range []string{"parentRef", "ancestorRef"} {
				ref, ok := m[refField].(map[string]any)
				if !ok {
					continue
				}
				if _, ok := ref["group"]; !ok {
					ref["group"] = gwv1.GroupName
				}
				if _, ok := ref["kind"]; !ok {
					ref["kind"] = "Gateway"
				}
			}
		}
	}
	listeners, _ := st["listeners"].([]any)
	for _, l := range listeners {
		m, _ := l.(map[string]any)
		kinds, _ := m["supportedKinds"].([]any)
		for _, k := range kinds {
			if km, ok := k.(map[string]any); ok {
				if _, ok := km["group"]; !ok {
					km["group"] = gwv1.GroupName
				}
			}
		}
	}
	addrs, _ := st["addresses"].([]any)
	for _, a := range addrs {
		if am, ok := a.(map[string]any); ok {
			if _, ok := am["type"]; !ok {
				am["type"] = string(gwv1.IPAddressType)
			}
		}
	}
}

// maxObservedGeneration is the newest generation any condition of the
// status was computed for.
func maxObservedGeneration(v any) int64 {
	var out int64
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if k == "observedGeneration" {
				if f, ok := e.(float64); ok && int64(f) > out {
					out = int64(f)
				}
				continue
			}
			out = max(out, maxObservedGeneration(e))
		}
	case []any:
		for _, e := range t {
			out = max(out, maxObservedGeneration(e))
		}
	}
	return out
}

// keepTransitionTimes gives every condition of desired whose type and
// status are unchanged the lastTransitionTime current has, and a
// condition without one the time now: a transition time moves only
// when the status does (metav1.Condition's rule). Conditions are found
// at any depth, lists of listeners/parents/ancestors matched by name or
// reference.
func keepTransitionTimes(desired, current any, now time.Time) {
	dm, ok := desired.(map[string]any)
	if !ok {
		return
	}
	cm, _ := current.(map[string]any)
	for k, dv := range dm {
		cv := cm[k]
		if k == "conditions" {
			dl, _ := dv.([]any)
			cl, _ := cv.([]any)
			prev := map[string]any{}
			for _, c := range cl {
				if m, ok := c.(map[string]any); ok {
					prev[fmt.Sprint(m["type"], "/", m["status"])] = m["lastTransitionTime"]
				}
			}
			for _, d := range dl {
				m, ok := d.(map[string]any)
				if !ok {
					continue
				}
				if t, ok := prev[fmt.Sprint(m["type"], "/", m["status"])]; ok && t != nil {
					m["lastTransitionTime"] = t
				} else if s, _ := m["lastTransitionTime"].(string); s == "" || s == "0001-01-01T00:00:00Z" {
					m["lastTransitionTime"] = now.UTC().Format(time.RFC3339)
				}
			}
			continue
		}
		switch d := dv.(type) {
		case map[string]any:
			keepTransitionTimes(d, cv, now)
		case []any:
			cl, _ := cv.([]any)
			for _, e := range d {
				keepTransitionTimes(e, matching(e, cl), now)
			}
		}
	}
}

// matching finds the element of list that is the same listener, parent
// or ancestor as e.
func matching(e any, list []any) any {
	m, ok := e.(map[string]any)
	if !ok {
		return nil
	}
	id := func(x map[string]any) string {
		b, _ := json.Marshal([]any{x["name"], x["parentRef"], x["ancestorRef"], x["controllerName"]})
		return string(b)
	}
	for _, c := range list {
		if cm, ok := c.(map[string]any); ok && id(cm) == id(m) {
			return cm
		}
	}
	return nil
}

// addressNotAssigned turns a Gateway's Programmed condition False with
// the spec's AddressNotAssigned while no Service in front of its proxies
// has an address yet (the provisioned Service not created, or without a
// cluster IP): clients cannot reach it, whatever the proxies hold.
func addressNotAssigned(status map[string]any) {
	conds, _ := status["conditions"].([]any)
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != string(gwv1.GatewayConditionProgrammed) || m["status"] != string(metav1.ConditionTrue) {
			continue
		}
		m["status"] = string(metav1.ConditionFalse)
		m["reason"] = string(gwv1.GatewayReasonAddressNotAssigned)
		m["message"] = "no address yet: the Service in front of the Gateway's proxies does not exist or has no address"
	}
}

// gatewayAddresses are where a Gateway is reachable, from the Service
// in front of its proxies: the provisioned one, or the Services selecting
// the attached proxies' pods. LoadBalancer ingress addresses when
// assigned, else the cluster IPs.
func (w *StatusWriter) gatewayAddresses(ctx context.Context, u *unstructured.Unstructured) []any {
	gw := &gwv1.Gateway{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, gw); err != nil {
		return nil
	}
	var class *gwv1.GatewayClass
	if cgvk, ok := w.p.APIGVK(resource.KindGatewayClass); ok {
		cu := &unstructured.Unstructured{}
		cu.SetGroupVersionKind(cgvk)
		if err := w.p.cached.Get(ctx, types.NamespacedName{Name: string(gw.Spec.GatewayClassName)}, cu); err == nil {
			class = &gwv1.GatewayClass{}
			if runtime.DefaultUnstructuredConverter.FromUnstructured(cu.Object, class) != nil {
				class = nil
			}
		}
	}
	selector, provisioned := gatewayapi.ProxySelector(gw, class, nil)
	var svcs []*corev1.Service
	if provisioned {
		svc := &corev1.Service{}
		if err := w.p.cached.Get(ctx, types.NamespacedName{Namespace: gw.Namespace, Name: ProvisionedName(gw)}, svc); err == nil {
			svcs = append(svcs, svc)
		}
	} else {
		svcs = w.servicesOf(ctx, selector)
	}
	var out []any
	seen := map[string]bool{}
	add := func(typ gwv1.AddressType, v string) {
		if v == "" || v == corev1.ClusterIPNone || seen[v] {
			return
		}
		seen[v] = true
		out = append(out, map[string]any{"type": string(typ), "value": v})
	}
	for _, svc := range svcs {
		ingress := svc.Status.LoadBalancer.Ingress
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && len(ingress) > 0 {
			for _, in := range ingress {
				add(gwv1.IPAddressType, in.IP)
				add(gwv1.HostnameAddressType, in.Hostname)
			}
			continue
		}
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			add(gwv1.IPAddressType, ip)
		}
	}
	return out
}

// servicesOf returns the Services in front of the pods selector matches
// (a Service selecting any of them), sorted by namespace and name.
func (w *StatusWriter) servicesOf(ctx context.Context, selector map[string]string) []*corev1.Service {
	if len(selector) == 0 {
		return nil
	}
	pods := &metav1.PartialObjectMetadataList{}
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
	if err := w.p.cached.List(ctx, pods, client.MatchingLabels(selector)); err != nil {
		return nil
	}
	var list corev1.ServiceList
	if err := w.p.cached.List(ctx, &list); err != nil {
		return nil
	}
	var out []*corev1.Service
	for i := range list.Items {
		svc := &list.Items[i]
		for _, pod := range pods.Items {
			if pod.Namespace == svc.Namespace && selects(svc.Spec.Selector, pod.Labels) {
				out = append(out, svc)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}
