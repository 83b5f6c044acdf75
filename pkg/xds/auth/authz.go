package auth

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Claim is what a proxy's node says about itself.
type Claim struct {
	NodeID    string
	Namespace string
	// Labels are the node's LABELS; HasLabels is false when it sent none.
	Labels    map[string]string
	HasLabels bool
}

// Grant is what an authorized proxy is served.
type Grant struct {
	// Key names the proxy in the xDS cache: it includes the identity, so a
	// proxy cannot take over another's configuration by claiming its node
	// id.
	Key string
	// Labels decide the proxy's class (which Gateways select it).
	Labels map[string]string
	// Namespace is the proxy's verified namespace ("" for trusted
	// identities without one).
	Namespace string
	// AllSecrets lets a trusted identity receive every Secret its class
	// uses.
	AllSecrets bool
	// ReadSecrets: the proxy's service account may read Secrets in its
	// namespace (Istio's SubjectAccessReview), so it may receive the
	// private keys of credentialName Secrets there; without it, only CA
	// certificates.
	ReadSecrets bool
}

// Authorizer decides what an authenticated proxy is served. An error
// refuses the stream (PermissionDenied).
type Authorizer interface {
	Authorize(ctx context.Context, id Identity, claim Claim) (Grant, error)
}

// TrustedGrant is what a trusted identity gets: exactly what it claims.
func TrustedGrant(claim Claim) Grant {
	return Grant{Key: claim.NodeID, Labels: claim.Labels, Namespace: claim.Namespace, AllSecrets: true}
}

// ErrDenied wraps every authorization refusal.
var ErrDenied = errors.New("permission denied")

func deny(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDenied, fmt.Sprintf(format, args...))
}

// KubeAuthorizer authorizes proxies authenticated by their service-account
// tokens:
//
//   - the node's NAMESPACE, if sent, must be the token's namespace;
//   - the token must be bound to a pod (projected tokens are), which must
//     exist with the token's pod UID and service account;
//   - the node's LABELS must all be labels of that pod (without LABELS,
//     the pod's labels are used): a proxy is served only the Gateways that
//     select it;
//   - it may receive private keys only if its service account may list
//     Secrets in its namespace (a SubjectAccessReview, as istiod does).
type KubeAuthorizer struct {
	client kubernetes.Interface
	// SAR results by service account, cached briefly.
	mu  sync.Mutex
	sar map[string]sarResult
	now func() time.Time
}

type sarResult struct {
	allowed bool
	expires time.Time
}

// sarTTL is how long a SubjectAccessReview answer is reused (Istio: a few
// minutes). sarMax bounds the cache.
const (
	sarTTL = time.Minute
	sarMax = 10000
)

// NewKubeAuthorizer returns an authorizer reading Pods and asking
// SubjectAccessReviews through client.
func NewKubeAuthorizer(client kubernetes.Interface) *KubeAuthorizer {
	return &KubeAuthorizer{client: client, sar: map[string]sarResult{}, now: time.Now}
}

// Authorize implements Authorizer.
func (a *KubeAuthorizer) Authorize(ctx context.Context, id Identity, claim Claim) (Grant, error) {
	if id.Trusted {
		return TrustedGrant(claim), nil
	}
	if id.Namespace == "" || id.ServiceAccount == "" {
		return Grant{}, deny("the identity names no service account")
	}
	if claim.Namespace != "" && claim.Namespace != id.Namespace {
		return Grant{}, deny("the node claims namespace %q, its token is for %s", claim.Namespace, id)
	}
	if id.PodName == "" {
		return Grant{}, deny("the token of %s is not bound to a pod: use a projected service-account token (or kubectl create token --bound-object-kind Pod)", id)
	}
	pod, err := a.client.CoreV1().Pods(id.Namespace).Get(ctx, id.PodName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return Grant{}, deny("pod %s/%s of the token does not exist", id.Namespace, id.PodName)
	case err != nil:
		return Grant{}, fmt.Errorf("reading pod %s/%s: %w", id.Namespace, id.PodName, err)
	}
	if id.PodUID != "" && string(pod.UID) != id.PodUID {
		return Grant{}, deny("pod %s/%s was replaced since the token was issued", id.Namespace, id.PodName)
	}
	if sa := pod.Spec.ServiceAccountName; sa != "" && sa != id.ServiceAccount {
		return Grant{}, deny("pod %s/%s runs as %s, not %s", id.Namespace, id.PodName, sa, id.ServiceAccount)
	}
	labels := maps.Clone(pod.Labels)
	if claim.HasLabels {
		var wrong []string
		for k, v := range claim.Labels {
			if have, ok := pod.Labels[k]; !ok || have != v {
				wrong = append(wrong, k+"="+v)
			}
		}
		if len(wrong) > 0 {
			sort.Strings(wrong)
			return Grant{}, deny("the node claims labels %s that pod %s/%s does not have (its labels: %s)",
				strings.Join(wrong, ","), id.Namespace, id.PodName, labelString(pod.Labels))
		}
		labels = maps.Clone(claim.Labels)
	}
	read, err := a.mayReadSecrets(ctx, id)
	if err != nil {
		return Grant{}, err
	}
	return Grant{Key: id.Namespace + "/" + id.PodName + "/" + claim.NodeID, Labels: labels, Namespace: id.Namespace, ReadSecrets: read}, nil
}

func labelString(l map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		out = append(out, k+"="+l[k])
	}
	return strings.Join(out, ",")
}

// mayReadSecrets asks whether the service account may list Secrets in its
// own namespace: Istio's rule for serving credentialName private keys to a
// gateway (pilot/pkg/credentials/kube: Authorize).
func (a *KubeAuthorizer) mayReadSecrets(ctx context.Context, id Identity) (bool, error) {
	user := "system:serviceaccount:" + id.Namespace + ":" + id.ServiceAccount
	a.mu.Lock()
	if r, ok := a.sar[user]; ok && a.now().Before(r.expires) {
		a.mu.Unlock()
		return r.allowed, nil
	}
	a.mu.Unlock()
	resp, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + id.Namespace, "system:authenticated"},
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: id.Namespace, Verb: "list", Resource: "secrets",
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("asking whether %s may read secrets: %w", user, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.sar) >= sarMax {
		clear(a.sar)
	}
	a.sar[user] = sarResult{allowed: resp.Status.Allowed, expires: a.now().Add(sarTTL)}
	return resp.Status.Allowed, nil
}
