package ca

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
)

// Keys of the CA Secret and of the published ConfigMap (Istio's names for
// the root certificate).
const (
	SecretCertKey = "ca.crt"
	SecretKeyKey  = "ca.key"
	RootCertKey   = "root-cert.pem"
)

// Validity of a CA created by EnsureSecret (Istio's self-signed root: 10
// years).
const Validity = 10 * 365 * 24 * time.Hour

// SecretStore keeps the CA in a Secret.
type SecretStore struct {
	Client          kubernetes.Interface
	Namespace, Name string
	Log             logr.Logger
}

// Load reads the CA from its Secret, creating it if absent. Replicas
// starting together race to create it; the loser reads the winner's.
func (s *SecretStore) Load(ctx context.Context) (*Authority, error) {
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	sec, err := secrets.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		a, genErr := New("portico-ca."+s.Namespace, Validity, time.Now())
		if genErr != nil {
			return nil, genErr
		}
		sec, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: map[string]string{"app.kubernetes.io/managed-by": "portico"}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{SecretCertKey: a.CertPEM, SecretKeyKey: a.KeyPEM},
		}, metav1.CreateOptions{})
		switch {
		case err == nil:
			s.Log.Info("created the xDS certificate authority", "secret", s.Namespace+"/"+s.Name, "expires", a.Cert.NotAfter)
		case apierrors.IsAlreadyExists(err):
			sec, err = secrets.Get(ctx, s.Name, metav1.GetOptions{})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading the CA Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	a, err := Parse(sec.Data[SecretCertKey], sec.Data[SecretKeyKey])
	if err != nil {
		return nil, fmt.Errorf("the CA Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return a, nil
}

// skippedNamespaces get no root certificate (Istio skips them too).
var skippedNamespaces = map[string]bool{"kube-system": true, "kube-public": true, "kube-node-lease": true, "local-path-storage": true}

// RootPublisher writes the CA certificate into a ConfigMap (Name, key
// root-cert.pem) in every namespace and puts it back if it is changed or
// deleted, as istiod's namespace controller does with istio-ca-root-cert.
// Run it on the elected replica only.
type RootPublisher struct {
	Client kubernetes.Interface
	Name   string
	// CA returns the certificate to publish.
	CA  func(ctx context.Context) (*Authority, error)
	Log logr.Logger
	// Resync re-reads the CA this often (default 1 minute).
	Resync time.Duration
}

// Run publishes until ctx ends.
func (p *RootPublisher) Run(ctx context.Context) error {
	if p.Resync == 0 {
		p.Resync = time.Minute
	}
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{AddFunc: func(any) { poke() }, UpdateFunc: func(any, any) { poke() }, DeleteFunc: func(any) { poke() }}
	nsStore, nsCtrl := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: toolscache.NewListWatchFromClient(p.Client.CoreV1().RESTClient(), "namespaces", "", fields.Everything()),
		ObjectType:    &corev1.Namespace{}, Handler: handler,
	})
	cmStore, cmCtrl := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: toolscache.NewListWatchFromClient(p.Client.CoreV1().RESTClient(), "configmaps", "", fields.OneTermEqualSelector("metadata.name", p.Name)),
		ObjectType:    &corev1.ConfigMap{}, Handler: handler,
	})
	go nsCtrl.RunWithContext(ctx)
	go cmCtrl.RunWithContext(ctx)
	if !toolscache.WaitForCacheSync(ctx.Done(), nsCtrl.HasSynced, cmCtrl.HasSynced) {
		return nil
	}
	t := time.NewTicker(p.Resync)
	defer t.Stop()
	poke()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-kick:
		}
		if err := p.reconcile(ctx, nsStore, cmStore); err != nil {
			p.Log.Error(err, "publishing the xDS CA certificate; retrying")
		}
	}
}

func (p *RootPublisher) reconcile(ctx context.Context, nsStore, cmStore toolscache.Store) error {
	a, err := p.CA(ctx)
	if err != nil {
		return err
	}
	want := string(a.CertPEM) + "\n"
	var firstErr error
	for _, o := range nsStore.List() {
		ns := o.(*corev1.Namespace)
		if skippedNamespaces[ns.Name] || ns.Status.Phase == corev1.NamespaceTerminating {
			continue
		}
		var have *corev1.ConfigMap
		if o, ok, _ := cmStore.GetByKey(ns.Name + "/" + p.Name); ok {
			have = o.(*corev1.ConfigMap)
		}
		if have != nil && bytes.Equal([]byte(have.Data[RootCertKey]), []byte(want)) {
			continue
		}
		cms := p.Client.CoreV1().ConfigMaps(ns.Name)
		if have == nil {
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns.Name, Labels: map[string]string{"app.kubernetes.io/managed-by": "portico"}},
				Data:       map[string]string{RootCertKey: want},
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				err = nil // the watch will show it
			}
		} else {
			cp := have.DeepCopy()
			if cp.Data == nil {
				cp.Data = map[string]string{}
			}
			cp.Data[RootCertKey] = want
			_, err = cms.Update(ctx, cp, metav1.UpdateOptions{})
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				err = nil
			}
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("writing ConfigMap %s/%s: %w", ns.Name, p.Name, err)
		}
	}
	return firstErr
}
