package kube

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
)

type secretKey struct{ namespace, name string }

// secretWatcher watches exactly the Secrets configuration references, each
// with its own name-selected watch: the controller never lists or caches
// the cluster's other Secrets.
type secretWatcher struct {
	log     logr.Logger
	client  kubernetes.Interface
	changed func()

	mu      sync.Mutex
	ctx     context.Context
	watches map[secretKey]*secretWatch
	pending map[secretKey]bool
}

type secretWatch struct {
	store  toolscache.Store
	cancel context.CancelFunc
}

func newSecretWatcher(cfg *rest.Config, log logr.Logger, changed func()) (*secretWatcher, error) {
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &secretWatcher{log: log, client: c, changed: changed, watches: map[secretKey]*secretWatch{}}, nil
}

// run records the context watches live in; desired watches requested
// before start up now.
func (w *secretWatcher) run(ctx context.Context) {
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

// want makes the set of watched Secrets exactly keys.
func (w *secretWatcher) want(keys map[secretKey]bool) {
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
		lw := toolscache.NewListWatchFromClient(w.client.CoreV1().RESTClient(), "secrets", k.namespace,
			fields.OneTermEqualSelector("metadata.name", k.name))
		store, ctrl := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
			ListerWatcher: lw, ObjectType: &corev1.Secret{}, ResyncPeriod: 10 * time.Minute,
			Handler: toolscache.ResourceEventHandlerFuncs{
				AddFunc: func(any) { w.changed() }, UpdateFunc: func(any, any) { w.changed() }, DeleteFunc: func(any) { w.changed() },
			},
		})
		w.watches[k] = &secretWatch{store: store, cancel: cancel}
		go ctrl.RunWithContext(ctx)
		changed = true
	}
	if changed {
		w.log.V(1).Info("watching referenced secrets", "secrets", sortedKeys(keys))
	}
}

// snapshot returns the watched Secrets that exist.
func (w *secretWatcher) snapshot() []*corev1.Secret {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*corev1.Secret
	for _, sw := range w.watches {
		for _, o := range sw.store.List() {
			if s, ok := o.(*corev1.Secret); ok {
				out = append(out, s)
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
