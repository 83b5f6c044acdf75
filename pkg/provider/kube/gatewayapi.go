package kube

import (
	"context"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/resource"
)

// gatewayAPIKinds are the Gateway API kinds Portico reads, watched when
// the cluster serves them: a cluster without the Gateway API CRDs keeps
// working with the Istio kinds.
var gatewayAPIKinds = []string{resource.KindGatewayClass, resource.KindGateway, resource.KindHTTPRoute, resource.KindGRPCRoute,
	resource.KindTLSRoute, resource.KindTCPRoute, resource.KindUDPRoute, resource.KindReferenceGrant, resource.KindBackendTLSPolicy}

// gatewayAPIVersions in the order Portico prefers them: v1.6 serves v1
// for every kind; older bundles serve some only as v1beta1/v1alpha2/3,
// which decode into the same v1 types.
var gatewayAPIVersions = []string{"v1", "v1beta1", "v1alpha3", "v1alpha2"}

// DefaultGatewayAPIRecheck is how often the provider looks for Gateway
// API kinds the cluster did not serve yet (CRDs installed after start).
const DefaultGatewayAPIRecheck = 30 * time.Second

// discoverGatewayAPI finds the served versions of Gateway API kinds not
// known yet and returns them (not yet recorded: the caller watches them
// first). It logs, once, which kinds are missing.
func (p *Provider) discoverGatewayAPI() map[string]schema.GroupVersionKind {
	found := map[string]schema.GroupVersionKind{}
	var missing []string
	p.apiMu.RLock()
	known := len(p.apiGVKs)
	for _, kind := range gatewayAPIKinds {
		if _, ok := p.apiGVKs[kind]; ok {
			continue
		}
		m, err := p.mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: resource.GatewayAPIGroup, Kind: kind}, gatewayAPIVersions...)
		if err != nil {
			missing = append(missing, kind)
			continue
		}
		found[kind] = m.GroupVersionKind
	}
	p.apiMu.RUnlock()
	if len(missing) > 0 && !p.apiMissingLogged {
		p.apiMissingLogged = true
		if known+len(found) == 0 {
			p.log.Info("the Gateway API CRDs are not installed: Gateway API resources are not read until they are (kubectl apply --server-side -k config/crd/gateway-api/standard); Istio resources work as before")
		} else {
			p.log.Info("some Gateway API kinds are not served: they are not read until their CRDs are installed", "missing", missing)
		}
	}
	return found
}

// gatewayAPIGVKs returns the served Gateway API kinds, in a fixed order.
func (p *Provider) gatewayAPIGVKs() []schema.GroupVersionKind {
	p.apiMu.RLock()
	defer p.apiMu.RUnlock()
	var out []schema.GroupVersionKind
	for _, kind := range gatewayAPIKinds {
		if gvk, ok := p.apiGVKs[kind]; ok {
			out = append(out, gvk)
		}
	}
	return out
}

// APIGVK returns the served version of a Gateway API kind (false when
// the cluster does not serve it).
func (p *Provider) APIGVK(kind string) (schema.GroupVersionKind, bool) {
	p.apiMu.RLock()
	defer p.apiMu.RUnlock()
	gvk, ok := p.apiGVKs[kind]
	return gvk, ok
}

func namespaceMeta() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}

// gatewayAPIExtras are watched with the Gateway API kinds: Namespaces
// (labels), and the Deployments, ServiceAccounts, Roles and RoleBindings
// the controller provisions (only those: the cache selects them by
// label), so one deleted by hand is put back.
func gatewayAPIExtras() []client.Object {
	return []client.Object{namespaceMeta(), &appsv1.Deployment{}, &corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}}
}

// watchGatewayAPI starts informers for newly served Gateway API kinds
// (and Namespaces, for allowedRoutes selectors, with the first of them),
// then records them so snapshots include them.
func (p *Provider) watchGatewayAPI(ctx context.Context, found map[string]schema.GroupVersionKind, handler toolscache.ResourceEventHandler) error {
	if len(found) == 0 {
		return nil
	}
	objs := []client.Object{}
	if len(p.gatewayAPIGVKs()) == 0 {
		objs = append(objs, gatewayAPIExtras()...)
	}
	kinds := make([]string, 0, len(found))
	for kind, gvk := range found {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		objs = append(objs, u)
		kinds = append(kinds, kind)
	}
	slices.Sort(kinds)
	for _, obj := range objs {
		inf, err := p.mgr.GetCache().GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching %s: %w", obj.GetObjectKind().GroupVersionKind(), err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	p.apiMu.Lock()
	for kind, gvk := range found {
		p.apiGVKs[kind] = gvk
	}
	p.apiMu.Unlock()
	p.log.Info("watching Gateway API kinds", "kinds", kinds)
	return nil
}

// recheckGatewayAPI looks for Gateway API kinds installed after start,
// until ctx ends or every kind is watched.
func (p *Provider) recheckGatewayAPI(ctx context.Context, handler toolscache.ResourceEventHandler) {
	every := p.opts.GatewayAPIRecheck
	if every < 0 {
		return
	}
	if every == 0 {
		every = DefaultGatewayAPIRecheck
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for len(p.gatewayAPIGVKs()) < len(gatewayAPIKinds) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		found := p.discoverGatewayAPI()
		if err := p.watchGatewayAPI(ctx, found, handler); err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Error(err, "watching newly installed Gateway API kinds")
			continue
		}
		if len(found) > 0 {
			p.kick()
		}
	}
}

// namespaces returns the Namespaces (metadata only: labels matter, for
// allowedRoutes selectors), reusing the object of an unchanged one.
func (p *Provider) namespaces(ctx context.Context) ([]*corev1.Namespace, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := p.cached.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing Namespaces: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	out := make([]*corev1.Namespace, 0, len(list.Items))
	for i := range list.Items {
		m := &list.Items[i]
		uid := string(m.UID)
		seen[uid] = true
		if c, ok := p.nsCache[uid]; ok && c.ResourceVersion == m.ResourceVersion {
			out = append(out, c)
			continue
		}
		ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: *m.ObjectMeta.DeepCopy()}
		p.nsCache[uid] = ns
		out = append(out, ns)
	}
	for uid := range p.nsCache {
		if !seen[uid] {
			delete(p.nsCache, uid)
		}
	}
	return out, nil
}

// isCore reports whether a Gateway API reference names a core kind
// (group "" or "core"), defaulting the kind as the CRDs do.
func isCore(group *gwv1.Group, kind *gwv1.Kind, defaultKind, want string) bool {
	g, k := "", defaultKind
	if group != nil {
		g = string(*group)
	}
	if kind != nil {
		k = string(*kind)
	}
	return (g == "" || g == "core") && k == want
}

func nsOr(ns *gwv1.Namespace, def string) string {
	if ns != nil && *ns != "" {
		return string(*ns)
	}
	return def
}

// gatewayAPISecrets adds the Secrets Gateway API objects name: listener
// certificates (possibly in another namespace, allowed by a
// ReferenceGrant the binder checks), the Gateway's client certificate
// for backends, and BackendTLSPolicy CA bundles kept in Secrets.
func gatewayAPISecrets(res *resource.Resources, out map[secretKey]bool) {
	for _, gw := range res.KubeGateways {
		for _, l := range gw.Spec.Listeners {
			if l.TLS == nil {
				continue
			}
			for _, ref := range l.TLS.CertificateRefs {
				if isCore(ref.Group, ref.Kind, "Secret", "Secret") {
					out[secretKey{nsOr(ref.Namespace, gw.Namespace), string(ref.Name)}] = true
				}
			}
		}
		if t := gw.Spec.TLS; t != nil && t.Backend != nil && t.Backend.ClientCertificateRef != nil {
			ref := t.Backend.ClientCertificateRef
			if isCore(ref.Group, ref.Kind, "Secret", "Secret") {
				out[secretKey{nsOr(ref.Namespace, gw.Namespace), string(ref.Name)}] = true
			}
		}
		for _, ref := range frontendCARefs(gw) {
			if isCore(&ref.Group, &ref.Kind, "", "Secret") {
				out[secretKey{nsOr(ref.Namespace, gw.Namespace), string(ref.Name)}] = true
			}
		}
	}
	for _, pol := range res.BackendTLSPolicies {
		for _, ref := range pol.Spec.Validation.CACertificateRefs {
			if isCore(&ref.Group, &ref.Kind, "", "Secret") {
				out[secretKey{pol.Namespace, string(ref.Name)}] = true
			}
		}
	}
}

// frontendCARefs are the CA bundles a Gateway validates client
// certificates with.
func frontendCARefs(gw *gwv1.Gateway) []gwv1.ObjectReference {
	t := gw.Spec.TLS
	if t == nil || t.Frontend == nil {
		return nil
	}
	var out []gwv1.ObjectReference
	if v := t.Frontend.Default.Validation; v != nil {
		out = append(out, v.CACertificateRefs...)
	}
	for _, pp := range t.Frontend.PerPort {
		if v := pp.TLS.Validation; v != nil {
			out = append(out, v.CACertificateRefs...)
		}
	}
	return out
}

// referencedConfigMaps lists the ConfigMaps holding CA bundles that
// BackendTLSPolicies and Gateways' frontend validation name: only those
// are watched.
func referencedConfigMaps(res *resource.Resources) map[secretKey]bool {
	out := map[secretKey]bool{}
	for _, pol := range res.BackendTLSPolicies {
		for _, ref := range pol.Spec.Validation.CACertificateRefs {
			if isCore(&ref.Group, &ref.Kind, "", "ConfigMap") {
				out[secretKey{pol.Namespace, string(ref.Name)}] = true
			}
		}
	}
	for _, gw := range res.KubeGateways {
		for _, ref := range frontendCARefs(gw) {
			if isCore(&ref.Group, &ref.Kind, "", "ConfigMap") {
				out[secretKey{nsOr(ref.Namespace, gw.Namespace), string(ref.Name)}] = true
			}
		}
	}
	return out
}
