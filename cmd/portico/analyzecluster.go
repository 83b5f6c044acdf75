package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/portico-gateway/portico/pkg/resource"
)

// analyzedKinds are the configuration kinds analyze reads from a cluster,
// by API group: what the controller watches.
var analyzedKinds = map[string][]string{
	"networking.istio.io":    {resource.KindGateway, resource.KindVirtualService, resource.KindDestinationRule, resource.KindServiceEntry},
	"security.istio.io":      {resource.KindRequestAuthentication, resource.KindAuthorizationPolicy},
	resource.GatewayAPIGroup: {resource.KindGatewayClass, resource.KindGateway, resource.KindHTTPRoute, resource.KindGRPCRoute, resource.KindTLSRoute, resource.KindTCPRoute, resource.KindUDPRoute, resource.KindReferenceGrant, resource.KindBackendTLSPolicy},
}

// servedKinds finds, per kind, the version the API server serves it in
// (the group's preferred version first, as the controller picks it).
// Groups the cluster does not serve are skipped.
func (c *cluster) servedKinds() (map[schema.GroupVersionKind]string, error) {
	groups, err := c.client.Discovery().ServerGroups()
	if err != nil {
		return nil, fmt.Errorf("discovering the API groups: %w", err)
	}
	out := map[schema.GroupVersionKind]string{} // → plural resource name
	for _, g := range groups.Groups {
		kinds, ok := analyzedKinds[g.Name]
		if !ok {
			continue
		}
		versions := []string{g.PreferredVersion.Version}
		for _, v := range g.Versions {
			if v.Version != g.PreferredVersion.Version {
				versions = append(versions, v.Version)
			}
		}
		found := map[string]bool{}
		for _, v := range versions {
			list, err := c.client.Discovery().ServerResourcesForGroupVersion(g.Name + "/" + v)
			if err != nil {
				return nil, fmt.Errorf("discovering %s/%s: %w", g.Name, v, err)
			}
			for _, r := range list.APIResources {
				if found[r.Kind] || !contains(kinds, r.Kind) || !contains(r.Verbs, "list") || containsRune(r.Name, '/') {
					continue
				}
				found[r.Kind] = true
				out[schema.GroupVersionKind{Group: g.Name, Version: v, Kind: r.Kind}] = r.Name
			}
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func containsRune(s string, r rune) bool {
	for _, c := range s {
		if c == r {
			return true
		}
	}
	return false
}

// clusterResources reads what the controller would read: the Istio and
// Gateway API objects of every namespace (a Gateway in one namespace
// binds VirtualServices of others, so the whole cluster is always
// loaded; -n only narrows what is reported), Services, EndpointSlices,
// Pods (labels), Secrets (for credentialName checks) and Namespaces.
// Objects Portico cannot decode are kept as invalid, so analysis reports
// them as the controller's status would.
func (c *cluster) clusterResources(ctx context.Context) (*resource.Resources, []map[string]string, error) {
	kinds, err := c.servedKinds()
	if err != nil {
		return nil, nil, err
	}
	dyn, err := dynamic.NewForConfig(c.cfg)
	if err != nil {
		return nil, nil, err
	}
	res := &resource.Resources{}
	gvks := make([]schema.GroupVersionKind, 0, len(kinds))
	for gvk := range kinds {
		gvks = append(gvks, gvk)
	}
	sort.Slice(gvks, func(i, j int) bool { return gvks[i].String() < gvks[j].String() })
	for _, gvk := range gvks {
		gvr := gvk.GroupVersion().WithResource(kinds[gvk])
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("listing %s: %w", gvr.GroupResource(), err)
		}
		for i := range list.Items {
			addUnstructured(res, gvk, &list.Items[i])
		}
	}
	core := c.client.CoreV1()
	svcs, err := core.Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("listing Services: %w", err)
	}
	for i := range svcs.Items {
		res.Services = append(res.Services, &svcs.Items[i])
	}
	slices, err := c.client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("listing EndpointSlices: %w", err)
	}
	for i := range slices.Items {
		res.EndpointSlices = append(res.EndpointSlices, &slices.Items[i])
	}
	pods, err := core.Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("listing Pods: %w", err)
	}
	for i := range pods.Items {
		res.Pods = append(res.Pods, resource.PodMetadata(&pods.Items[i]))
	}
	secrets, err := core.Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("listing Secrets (credentialName and DestinationRule certificates are checked against them): %w", err)
	}
	for i := range secrets.Items {
		res.Secrets = append(res.Secrets, &secrets.Items[i])
	}
	if res.HasGatewayAPI() {
		nss, err := core.Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil && !apierrors.IsForbidden(err) {
			return nil, nil, fmt.Errorf("listing Namespaces: %w", err)
		}
		if nss != nil {
			for i := range nss.Items {
				res.Namespaces = append(res.Namespaces, &nss.Items[i])
			}
		}
	}
	res.Sort()
	return res, gatewayProxies(res, pods.Items), nil
}

func addUnstructured(res *resource.Resources, gvk schema.GroupVersionKind, u *unstructured.Unstructured) {
	key := resource.Key{Kind: gvk.Kind, Namespace: u.GetNamespace(), Name: u.GetName()}
	if gvk.Group == resource.GatewayAPIGroup && gvk.Kind == resource.KindGateway {
		key.Group = resource.GatewayAPIGroup
	}
	invalid := func(err error) {
		res.Invalid = append(res.Invalid, resource.InvalidResource{Key: key,
			Source: fmt.Sprintf("%s %s/%s", gvk.GroupVersion(), u.GetNamespace(), u.GetName()), Error: err.Error()})
	}
	js, err := json.Marshal(u.Object)
	if err != nil {
		invalid(err)
		return
	}
	objs, err := resource.DecodeJSON(js)
	if err != nil {
		invalid(err)
		return
	}
	for _, o := range objs {
		if err := res.Add(o); err != nil {
			invalid(err)
		}
	}
}

// gatewayProxies are the label sets of the running pods some Istio
// Gateway selects: the proxies that exist, for IST0101 on a selector
// that matches none (as istioctl analyze checks selectors against pods).
func gatewayProxies(res *resource.Resources, pods []corev1.Pod) []map[string]string {
	seen := map[string]bool{}
	var out []map[string]string
	for _, gw := range res.Gateways {
		if len(gw.Spec.GetSelector()) == 0 {
			continue // every proxy's: no class of its own
		}
		sel := labels.SelectorFromSet(gw.Spec.GetSelector())
		for _, p := range pods {
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !sel.Matches(labels.Set(p.Labels)) {
				continue
			}
			k := labels.Set(p.Labels).String()
			if !seen[k] {
				seen[k] = true
				out = append(out, p.Labels)
			}
		}
	}
	return out
}
