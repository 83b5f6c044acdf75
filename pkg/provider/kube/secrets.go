package kube

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
)

type secretKey struct{ namespace, name string }

// namedObject is what namedWatcher watches: a core/v1 kind.
type namedObject interface {
	runtime.Object
	metav1.Object
}

// namedWatcher watches exactly the objects configuration references
// (Secrets; ConfigMaps holding CA bundles), each with its own
// name-selected watch: the controller never lists or caches the
// cluster's other Secrets or ConfigMaps.
type namedWatcher[T namedObject] struct {
	log      logr.Logger
	client   kubernetes.Interface
	resource string // "secrets", "configmaps"
	newObj   func() T
	changed  func()

	mu      sync.Mutex
	ctx     context.Context
	watches map[secretKey]*namedWatch
	pending map[secretKey]bool
}

type secretWatcher = namedWatcher[*corev1.Secret]

type namedWatch struct {
	store  toolscache.Store
	cancel context.CancelFunc
}

func newSecretWatcher(cfg *rest.Config, log logr.Logger, changed func()) (*secretWatcher, error) {
	return newNamedWatcher(cfg, log, "secrets", func() *corev1.Secret { return &corev1.Secret{} }, changed)
}

func newConfigMapWatcher(cfg *rest.Config, log logr.Logger, changed func()) (*namedWatcher[*corev1.ConfigMap], error) {
	return newNamedWatcher(cfg, log, "configmaps", func() *corev1.ConfigMap { return &corev1.ConfigMap{} }, changed)
}

func newNamedWatcher[T namedObject](cfg *rest.Config, log logr.Logger, resource string, newObj func() T, changed func()) (*namedWatcher[T], error) {
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &namedWatcher[T]{log: log, client: c, resource: resource, newObj: newObj, changed: changed, watches: map[secretKey]*namedWatch{}}, nil
}

// run records the context watches live in; desired watches requested
// before start up now.
func (w *namedWatcher[T]) run(ctx context.Context) {
	w.mu.Lock()
	w.ctx = ctx
	pending := w.pending
	w.pending = nil
	w.mu.Unlock()
	if pending != nil {
		w.want(pending)
	}
	<-ctx.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, sw := range w.watches {
		sw.cancel()
		delete(w.watches, k)
	}
}

// want makes the set of watched objects exactly keys.
func (w *namedWatcher[T]) want(keys map[secretKey]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil {
		w.pending = keys
		return
	}
	changed := false
	for k, sw := range w.watches {
		if !keys[k] {
			sw.cancel()
			delete(w.watches, k)
			changed = true
		}
	}
	for k := range keys {
		if _, ok := w.watches[k]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(w.ctx)
		lw := toolscache.NewListWatchFromClient(w.client.CoreV1().RESTClient(), w.resource, k.namespace,
			fields.OneTermEqualSelector("metadata.name", k.name))
		store, ctrl := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
			ListerWatcher: lw, ObjectType: w.newObj(), ResyncPeriod: 10 * time.Minute,
			Handler: toolscache.ResourceEventHandlerFuncs{
				AddFunc: func(any) { w.changed() }, UpdateFunc: func(any, any) { w.changed() }, DeleteFunc: func(any) { w.changed() },
			},
		})
		w.watches[k] = &namedWatch{store: store, cancel: cancel}
		go ctrl.RunWithContext(ctx)
		changed = true
	}
	if changed {
		w.log.V(1).Info("watching referenced "+w.resource, w.resource, sortedKeys(keys))
	}
}

// snapshot returns the watched objects that exist.
func (w *namedWatcher[T]) snapshot() []T {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []T
	for _, sw := range w.watches {
		for _, o := range sw.store.List() {
			if s, ok := o.(T); ok {
				out = append(out, s)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].GetNamespace() != out[j].GetNamespace() {
			return out[i].GetNamespace() < out[j].GetNamespace()
		}
		return out[i].GetName() < out[j].GetName()
	})
	return out
}
