// Package kube provides resources from a Kubernetes API server with
// controller-runtime: the Istio networking kinds (in whichever version the
// cluster serves: Portico's CRDs or Istio's own), Services,
// EndpointSlices, pod labels (metadata-only) and only the Secrets that
// Gateways and DestinationRules reference. Events are batched into
// snapshots; statuses and gateway Service ports are written back by the
// elected leader, while every replica serves xDS.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/portico-gateway/portico/pkg/provider/debounce"
	"github.com/portico-gateway/portico/pkg/resource"
)

// Options configure the provider.
type Options struct {
	Config *rest.Config
	// LeaderElection elects the replica that writes statuses and Service
	// ports; the rest only serve xDS.
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	// MetricsAddress and HealthAddress serve /metrics and /healthz, /readyz.
	MetricsAddress string
	HealthAddress  string
	// Holdoff and MaxDelay batch events into snapshots.
	Holdoff  time.Duration
	MaxDelay time.Duration
	// GatewayAPIRecheck is how often to look for Gateway API CRDs
	// installed after start (default DefaultGatewayAPIRecheck; negative:
	// never).
	GatewayAPIRecheck time.Duration
}

// Istio kinds Portico requires (networking.istio.io).
var istioKinds = []string{resource.KindGateway, resource.KindVirtualService, resource.KindDestinationRule, resource.KindServiceEntry}

// securityKinds (security.istio.io) are watched when the cluster serves
// them: a cluster installed before Portico read them keeps working, with
// a log line saying policies are not read until the CRDs are installed.
var securityKinds = []string{resource.KindRequestAuthentication, resource.KindAuthorizationPolicy, resource.KindTelemetry}

// preferredVersions, in the order Portico prefers them (the security kinds
// have no v1alpha3; the REST mapper skips what a group does not serve).
var preferredVersions = []string{"v1", "v1beta1", "v1alpha3"}

// Provider watches the API server.
type Provider struct {
	opts Options
	log  logr.Logger
	mgr  manager.Manager
	// cached reads from the manager's informer cache and api writes to
	// the API server (the manager's; tests substitute fakes).
	cached client.Reader
	api    client.Client
	// gvks are the served versions chosen for the Istio kinds.
	gvks map[string]schema.GroupVersionKind

	trigger    chan struct{}
	secrets    *secretWatcher
	configMaps *namedWatcher[*corev1.ConfigMap]

	// apiGVKs are the served versions of the Gateway API kinds watched
	// (by kind; all in resource.GatewayAPIGroup). Kinds whose CRDs are
	// installed later are added while running.
	apiMu            sync.RWMutex
	apiGVKs          map[string]schema.GroupVersionKind
	apiMissingLogged bool // guarded by being used from one goroutine at a time (New, then the recheck loop)

	// stores are the informers' own stores of the kinds watched from the
	// start (Istio kinds by served version; Services, EndpointSlices and
	// Pods by kind), set by Run before the first snapshot. A snapshot
	// reads them instead of listing through the cache, which copied every
	// Service, EndpointSlice and Pod (typed lists hold values) and every
	// object's envelope on each event, and gave unchanged objects a new
	// identity in every snapshot. Kinds without one (Gateway API kinds
	// found later; tests' fake readers) are listed.
	stores map[schema.GroupVersionKind]toolscache.Store

	// parts are the last snapshot's objects of each kind read from a
	// store, sorted, reused until an event on that kind marks it dirty:
	// a change costs reading, decoding and sorting its own kind, not
	// every kind (Services, EndpointSlices and Pods are most objects).
	// Used by the snapshotting goroutine only.
	parts map[schema.GroupVersionKind]*kindPart

	mu sync.Mutex
	// dirty are the kinds with events since their part was read.
	dirty   map[schema.GroupVersionKind]bool
	decoded map[string]decodedObject // uid → last decode, reused while resourceVersion is unchanged
	nsCache map[string]*corev1.Namespace
	// synced is set once the first snapshot is published: until then the
	// replica would serve an empty configuration, so it is not ready.
	synced atomic.Bool
}

// kindPart is one kind's share of a snapshot, read from its store.
type kindPart struct {
	objs    []resource.Object // in the order Resources.Sort gives them
	invalid []resource.InvalidResource
	uids    []string // of the objects decoded (or not decodable); none for typed kinds
}

// markDirty records an event on a kind: its store changed, so its part
// must be read again. Informers update their store before they call
// handlers, so a snapshot that starts after this call sees the change.
func (p *Provider) markDirty(gvk schema.GroupVersionKind) {
	p.mu.Lock()
	if p.dirty == nil {
		p.dirty = map[schema.GroupVersionKind]bool{}
	}
	p.dirty[gvk] = true
	p.mu.Unlock()
}

// statusOnly reports whether an update changed no more than a custom
// resource's status: the same generation (which the API server raises on
// every change to anything but metadata and status), labels,
// annotations and deletion. Portico's own status writes are such
// updates: each used to cost another snapshot, decode and build, on the
// same cores as the change that caused it.
func statusOnly(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*unstructured.Unstructured)
	n, ok2 := newObj.(*unstructured.Unstructured)
	if !ok1 || !ok2 || o.GetGeneration() == 0 || o.GetGeneration() != n.GetGeneration() {
		return false
	}
	return maps.Equal(o.GetLabels(), n.GetLabels()) && maps.Equal(o.GetAnnotations(), n.GetAnnotations()) &&
		o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp()) && o.GetUID() == n.GetUID()
}

type decodedObject struct {
	rv  string
	obj resource.Object
	err *resource.DecodeError
}

// New connects to the API server and prepares the watches.
func New(opts Options, log logr.Logger) (*Provider, error) {
	if opts.Holdoff == 0 {
		opts.Holdoff = 10 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = time.Second
	}
	if opts.LeaderElectionID == "" {
		opts.LeaderElectionID = "portico-controller-leader"
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(opts.Config, ctrl.Options{
		Scheme:                        scheme,
		Logger:                        log.WithName("manager"),
		Metrics:                       metricsserver.Options{BindAddress: orDisabled(opts.MetricsAddress)},
		HealthProbeBindAddress:        orDisabled(opts.HealthAddress),
		LeaderElection:                opts.LeaderElection,
		LeaderElectionID:              opts.LeaderElectionID,
		LeaderElectionNamespace:       opts.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		// Of Deployments, ServiceAccounts, Roles and RoleBindings only
		// the provisioned ones are read: the cache holds nothing else.
		//
		// Managed fields (server-side apply's bookkeeping, often half of
		// an object's size) are never read: they are dropped before an
		// object enters the cache, as Istio does.
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}:     {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})},
			&corev1.ServiceAccount{}: {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})},
			&rbacv1.Role{}:           {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})},
			&rbacv1.RoleBinding{}:    {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue})},
		}},
		// Secrets are never read through the cache (which would cache all
		// of them): only referenced ones are watched, by name.
	})
	if err != nil {
		return nil, fmt.Errorf("creating controller manager: %w", err)
	}
	p := &Provider{opts: opts, log: log, mgr: mgr, cached: mgr.GetCache(), api: mgr.GetClient(), gvks: map[string]schema.GroupVersionKind{},
		trigger: make(chan struct{}, 1), decoded: map[string]decodedObject{}, dirty: map[schema.GroupVersionKind]bool{},
		parts: map[schema.GroupVersionKind]*kindPart{}, nsCache: map[string]*corev1.Namespace{},
		apiGVKs: map[string]schema.GroupVersionKind{}}
	for _, kind := range istioKinds {
		gvk, err := p.servedVersion(kind)
		if err != nil {
			return nil, err
		}
		p.gvks[kind] = gvk
	}
	for _, kind := range securityKinds {
		gvk, err := p.servedVersion(kind)
		if err != nil {
			log.Error(err, "not watching this kind: RequestAuthentication/AuthorizationPolicy are NOT enforced (Telemetry not applied) until the CRDs are installed and the controller restarted", "kind", kind)
			continue
		}
		p.gvks[kind] = gvk
	}
	// Recorded at once: Run watches them before the manager starts.
	maps.Copy(p.apiGVKs, p.discoverGatewayAPI())
	p.secrets, err = newSecretWatcher(opts.Config, log.WithName("secrets"), p.kick)
	if err != nil {
		return nil, err
	}
	p.configMaps, err = newConfigMapWatcher(opts.Config, log.WithName("configmaps"), p.kick)
	if err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("snapshot", func(*http.Request) error {
		if !p.synced.Load() {
			return errors.New("caches not synced yet")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return p, nil
}

func orDisabled(addr string) string {
	if addr == "" {
		return "0"
	}
	return addr
}

// servedVersion picks the version of an Istio kind the cluster serves,
// preferring v1: Portico works unchanged against Istio's own CRDs.
func (p *Provider) servedVersion(kind string) (schema.GroupVersionKind, error) {
	group := resource.GroupOf(kind)
	m, err := p.mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: group, Kind: kind}, preferredVersions...)
	if err != nil {
		return schema.GroupVersionKind{}, fmt.Errorf("%s.%s is not served by the API server; install the CRDs (kubectl apply -k config/crd): %w", kind, group, err)
	}
	return m.GroupVersionKind, nil
}

// Manager exposes the controller-runtime manager (to add runnables).
func (p *Provider) Manager() manager.Manager { return p.mgr }

// Client is a client reading from the cache and writing to the API server.
func (p *Provider) Client() client.Client { return p.api }

// GVK returns the served version used for an Istio kind.
func (p *Provider) GVK(kind string) schema.GroupVersionKind { return p.gvks[kind] }

// Elected is closed when this replica leads.
func (p *Provider) Elected() <-chan struct{} { return p.mgr.Elected() }

func (p *Provider) kick() {
	select {
	case p.trigger <- struct{}{}:
	default:
	}
}

// watchedKinds are the Istio kinds served by the cluster, in a fixed order.
func (p *Provider) watchedKinds() []string {
	var out []string
	for _, kind := range append(append([]string(nil), istioKinds...), securityKinds...) {
		if _, ok := p.gvks[kind]; ok {
			out = append(out, kind)
		}
	}
	return out
}

// watchedGVKs are the served versions of every kind read as unstructured
// and decoded by Portico: the Istio kinds, then the Gateway API kinds.
func (p *Provider) watchedGVKs() []schema.GroupVersionKind {
	var out []schema.GroupVersionKind
	for _, kind := range p.watchedKinds() {
		out = append(out, p.gvks[kind])
	}
	return append(out, p.gatewayAPIGVKs()...)
}

func (p *Provider) watched() []client.Object {
	var objs []client.Object
	for _, gvk := range p.watchedGVKs() {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		objs = append(objs, u)
	}
	if len(p.gatewayAPIGVKs()) > 0 {
		objs = append(objs, gatewayAPIExtras()...)
	}
	pods := &metav1.PartialObjectMetadata{}
	pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Pod"))
	return append(objs, &corev1.Service{}, &discoveryv1.EndpointSlice{}, pods)
}

// Run starts the manager and publishes a snapshot after every batch of
// changes until ctx ends.
func (p *Provider) Run(ctx context.Context, publish func(*resource.Resources)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.kick() },
		UpdateFunc: func(any, any) { p.kick() },
		DeleteFunc: func(any) { p.kick() },
	}
	stores := map[schema.GroupVersionKind]toolscache.Store{}
	for _, obj := range p.watched() {
		inf, err := p.mgr.GetCache().GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
		h := toolscache.ResourceEventHandler(handler)
		gvk, keyed := storeKey(obj)
		if keyed {
			h = toolscache.ResourceEventHandlerFuncs{
				AddFunc: func(any) { p.markDirty(gvk); p.kick() },
				UpdateFunc: func(oldObj, newObj any) {
					if statusOnly(oldObj, newObj) {
						return
					}
					p.markDirty(gvk)
					p.kick()
				},
				DeleteFunc: func(any) { p.markDirty(gvk); p.kick() },
			}
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
		if s, ok := inf.(interface{ GetStore() toolscache.Store }); ok && keyed {
			stores[gvk] = s.GetStore()
		}
	}
	p.stores = stores
	errc := make(chan error, 1)
	go func() { errc <- p.mgr.Start(ctx) }()
	if !p.mgr.GetCache().WaitForCacheSync(ctx) {
		if err := <-errc; err != nil {
			return err
		}
		return ctx.Err()
	}
	p.log.Info("caches synced", "versions", p.gvks, "gatewayAPI", p.gatewayAPIGVKs())
	go p.secrets.run(ctx)
	go p.configMaps.run(ctx)
	go p.recheckGatewayAPI(ctx, handler)
	// A lone change is read at once (an informer's event is a complete
	// object, already in the store); a burst waits for the holdoff.
	batch := debounce.Batcher{Holdoff: p.opts.Holdoff, MaxDelay: p.opts.MaxDelay, Leading: true}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	take := func() {
		batch.Taken(time.Now())
		res, err := p.snapshot(ctx)
		if err != nil {
			p.log.Error(err, "reading the cache")
			return
		}
		p.secrets.want(referencedSecrets(res))
		p.configMaps.want(referencedConfigMaps(res))
		publish(res)
		p.synced.Store(true)
	}
	p.kick()
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case err := <-errc:
			return err
		case <-p.trigger:
			if now, wait := batch.Event(time.Now()); now {
				take()
			} else {
				timer.Reset(wait)
			}
		case <-timer.C:
			take()
		}
	}
}

// snapshot lists every watched object from the cache: kinds with a store
// from their part (read again only when dirty), the others listed.
func (p *Provider) snapshot(ctx context.Context) (snap *resource.Resources, err error) {
	p.mu.Lock()
	dirty := p.dirty
	p.dirty = map[schema.GroupVersionKind]bool{}
	p.mu.Unlock()
	defer func() {
		if err != nil { // read them again next time
			p.mu.Lock()
			if p.dirty == nil {
				p.dirty = map[schema.GroupVersionKind]bool{}
			}
			for gvk := range dirty {
				p.dirty[gvk] = true
			}
			p.mu.Unlock()
		}
	}()
	if p.parts == nil {
		p.parts = map[schema.GroupVersionKind]*kindPart{}
	}
	// decodedAny: some kind was decoded afresh, so decodes of objects
	// gone since may be forgotten (a delete marks its kind dirty).
	decodedAny := false
	part := func(gvk schema.GroupVersionKind, s toolscache.Store) *kindPart {
		kp := p.parts[gvk]
		if kp == nil || dirty[gvk] {
			kp = p.readPart(gvk, s)
			p.parts[gvk] = kp
			decodedAny = true
		}
		return kp
	}
	res := &resource.Resources{}
	c := p.cached
	var parts []*kindPart
	add := func(kp *kindPart) {
		for _, o := range kp.objs {
			res.Add(o)
		}
		res.Invalid = append(res.Invalid, kp.invalid...)
		parts = append(parts, kp)
	}
	for _, gvk := range p.watchedGVKs() {
		if s := p.stores[gvk]; s != nil {
			add(part(gvk, s))
			continue
		}
		items, err := p.unstructuredItems(ctx, gvk)
		if err != nil {
			return nil, err
		}
		add(p.decodePart(gvk, items))
		decodedAny = true
	}
	if decodedAny {
		seen := map[string]bool{}
		for _, kp := range parts {
			for _, uid := range kp.uids {
				seen[uid] = true
			}
		}
		p.mu.Lock()
		for uid := range p.decoded {
			if !seen[uid] {
				delete(p.decoded, uid)
			}
		}
		p.mu.Unlock()
	}
	// The cache's own objects, not copies: snapshots are never modified,
	// and unchanged objects keep their identity from one snapshot to the
	// next (which the binder uses to reuse work).
	if s := p.stores[serviceGVK]; s != nil {
		add(part(serviceGVK, s))
	} else {
		var svcs corev1.ServiceList
		if err := c.List(ctx, &svcs, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for i := range svcs.Items {
			res.Services = append(res.Services, &svcs.Items[i])
		}
	}
	if s := p.stores[endpointSliceGVK]; s != nil {
		add(part(endpointSliceGVK, s))
	} else {
		var slices discoveryv1.EndpointSliceList
		if err := c.List(ctx, &slices, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for i := range slices.Items {
			res.EndpointSlices = append(res.EndpointSlices, &slices.Items[i])
		}
	}
	if s := p.stores[podGVK]; s != nil {
		add(part(podGVK, s))
	} else {
		pods := &metav1.PartialObjectMetadataList{}
		pods.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("PodList"))
		if err := c.List(ctx, pods, client.UnsafeDisableDeepCopy); err != nil {
			return nil, err
		}
		for i := range pods.Items {
			res.Pods = append(res.Pods, &pods.Items[i])
		}
	}
	if p.secrets != nil {
		res.Secrets = p.secrets.snapshot()
	}
	// Namespace labels and CA bundles matter only to Gateway API objects
	// (allowedRoutes selectors, BackendTLSPolicy): an Istio-only
	// snapshot stays as it was.
	if res.HasGatewayAPI() {
		ns, err := p.namespaces(ctx)
		if err != nil {
			return nil, err
		}
		res.Namespaces = ns
		if p.configMaps != nil {
			res.ConfigMaps = p.configMaps.snapshot()
		}
	}
	// Parts are sorted already: checking costs a pass, sorting happens
	// only for what was listed.
	res.Sort()
	return res, nil
}

// readPart reads a kind's store: Services, EndpointSlices and Pods as
// the store holds them, other kinds decoded.
func (p *Provider) readPart(gvk schema.GroupVersionKind, s toolscache.Store) *kindPart {
	switch gvk {
	case serviceGVK:
		return sortedPart(typedItems[*corev1.Service](s.List()))
	case endpointSliceGVK:
		return sortedPart(typedItems[*discoveryv1.EndpointSlice](s.List()))
	case podGVK:
		return sortedPart(typedItems[*metav1.PartialObjectMetadata](s.List()))
	}
	return p.decodePart(gvk, typedItems[*unstructured.Unstructured](s.List()))
}

// sortedPart is a part of typed objects, sorted.
func sortedPart[T resource.Object](objs []T) *kindPart {
	mini := &resource.Resources{}
	kp := &kindPart{}
	for _, o := range objs {
		mini.Add(o)
	}
	mini.Sort()
	kp.objs = mini.All()
	return kp
}

// decodePart decodes a kind's objects with Portico's decoder, sorted;
// what does not decode is reported as invalid.
func (p *Provider) decodePart(gvk schema.GroupVersionKind, items []*unstructured.Unstructured) *kindPart {
	key := resource.Key{Kind: gvk.Kind}
	if gvk.Group == resource.GatewayAPIGroup && gvk.Kind == resource.KindGateway {
		key.Group = resource.GatewayAPIGroup
	}
	mini := &resource.Resources{}
	kp := &kindPart{}
	for _, u := range items {
		kp.uids = append(kp.uids, string(u.GetUID()))
		obj, derr := p.decode(u)
		if derr != nil {
			key.Namespace, key.Name = u.GetNamespace(), u.GetName()
			kp.invalid = append(kp.invalid, resource.InvalidResource{Key: key,
				Source: fmt.Sprintf("%s %s/%s", gvk.GroupVersion(), u.GetNamespace(), u.GetName()), Error: derr.Error()})
			continue
		}
		mini.Add(obj)
	}
	mini.Sort()
	kp.objs = mini.All()
	return kp
}

var (
	serviceGVK       = corev1.SchemeGroupVersion.WithKind("Service")
	endpointSliceGVK = discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice")
	podGVK           = corev1.SchemeGroupVersion.WithKind("Pod")
)

// storeKey is the key of a watched object's informer store in stores.
func storeKey(obj client.Object) (schema.GroupVersionKind, bool) {
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		return o.GroupVersionKind(), true
	case *metav1.PartialObjectMetadata:
		return o.GroupVersionKind(), true
	case *corev1.Service:
		return serviceGVK, true
	case *discoveryv1.EndpointSlice:
		return endpointSliceGVK, true
	}
	return schema.GroupVersionKind{}, false
}

// typedItems are a store's objects of type T (the cache's own: never to be
// modified); anything else in it is skipped.
func typedItems[T any](objs []any) []T {
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// unstructuredItems are the cached objects of a kind read as unstructured:
// from its informer's store when there is one, listed otherwise.
func (p *Provider) unstructuredItems(ctx context.Context, gvk schema.GroupVersionKind) ([]*unstructured.Unstructured, error) {
	if s := p.stores[gvk]; s != nil {
		return typedItems[*unstructured.Unstructured](s.List()), nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := p.cached.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing %s: %w", gvk.GroupKind(), err)
	}
	out := make([]*unstructured.Unstructured, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// decode reads an Istio object with Portico's strict decoder, so a
// resource the API server accepted but Portico cannot use (an invalid
// regex, a wrong type under Istio's permissive CRDs) gets a status rather
// than being dropped. Results are reused while resourceVersion is the same.
func (p *Provider) decode(u *unstructured.Unstructured) (resource.Object, error) {
	uid, rv := string(u.GetUID()), u.GetResourceVersion()
	p.mu.Lock()
	if d, ok := p.decoded[uid]; ok && d.rv == rv {
		p.mu.Unlock()
		if d.err != nil {
			return nil, d.err
		}
		return d.obj, nil
	}
	p.mu.Unlock()
	js, err := json.Marshal(u.Object)
	if err != nil {
		return nil, err
	}
	objs, err := resource.DecodeJSON(js)
	var de *resource.DecodeError
	switch {
	case err != nil:
		de, _ = err.(*resource.DecodeError)
		if de == nil {
			de = &resource.DecodeError{Err: err}
		}
	case len(objs) != 1:
		de = &resource.DecodeError{Err: fmt.Errorf("decoded %d objects", len(objs))}
	}
	p.mu.Lock()
	if de != nil {
		p.decoded[uid] = decodedObject{rv: rv, err: de}
		p.mu.Unlock()
		return nil, de
	}
	p.decoded[uid] = decodedObject{rv: rv, obj: objs[0]}
	p.mu.Unlock()
	return objs[0], nil
}

// referencedSecrets lists the Secrets Gateways and DestinationRules name,
// with Istio's "<name>-cacert" companions.
func referencedSecrets(res *resource.Resources) map[secretKey]bool {
	out := map[secretKey]bool{}
	for _, gw := range res.Gateways {
		for _, s := range gw.Spec.Servers {
			t := s.GetTls()
			if t == nil {
				continue
			}
			names := append([]string{}, t.CredentialNames...)
			if t.CredentialName != "" {
				names = append(names, t.CredentialName)
			}
			if t.CaCertCredentialName != "" {
				names = append(names, t.CaCertCredentialName)
			}
			for _, n := range names {
				out[secretKey{gw.Namespace, n}] = true
				out[secretKey{gw.Namespace, n + "-cacert"}] = true
			}
		}
	}
	gatewayAPISecrets(res, out)
	for _, dr := range res.DestinationRules {
		collect := func(name string) {
			if name != "" {
				out[secretKey{dr.Namespace, name}] = true
			}
		}
		tp := dr.Spec.TrafficPolicy
		if tp != nil {
			collect(tp.GetTls().GetCredentialName())
			for _, pl := range tp.PortLevelSettings {
				collect(pl.GetTls().GetCredentialName())
			}
		}
		for _, s := range dr.Spec.Subsets {
			collect(s.GetTrafficPolicy().GetTls().GetCredentialName())
		}
	}
	return out
}

// sortedKeys is for logs.
func sortedKeys(m map[secretKey]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k.namespace+"/"+k.name)
	}
	sort.Strings(out)
	return out
}
