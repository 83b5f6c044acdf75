package auth

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
)

// The extra fields a bound service-account token carries in a TokenReview
// (k8s.io/apiserver/pkg/authentication/serviceaccount).
const (
	podNameExtra = "authentication.kubernetes.io/pod-name"
	podUIDExtra  = "authentication.kubernetes.io/pod-uid"
)

// DefaultAudience is the audience proxies' projected tokens are issued for
// (Istio's is "istio-ca").
const DefaultAudience = "portico"

// TokenReviewOptions tune a TokenReviewer.
type TokenReviewOptions struct {
	// Audiences the token must be issued for (default: DefaultAudience).
	Audiences []string
	// TTL bounds how long a review is trusted (default 1 minute; never
	// beyond the token's own expiry). Failures are remembered for
	// NegativeTTL (default 5 seconds) so a client retrying a bad token in
	// a loop costs the API server one review per interval.
	TTL, NegativeTTL time.Duration
	// MaxEntries bounds the cache (default 10,000).
	MaxEntries int
	// Timeout bounds one review (default 10 seconds).
	Timeout time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

// TokenReviewer authenticates Kubernetes service-account tokens with the
// TokenReview API, as istiod does: the token must be valid for the
// configured audience and belong to a service account; the review's user
// names the namespace and service account, and, for a token bound to a
// pod (every projected token the kubelet mounts), the pod's name and UID.
// Results are cached by a hash of the token.
type TokenReviewer struct {
	client authnclient.TokenReviewInterface
	opts   TokenReviewOptions
	flight singleflight.Group

	mu      sync.Mutex
	entries map[[32]byte]*list.Element
	order   *list.List // of *reviewEntry, oldest first
}

type reviewEntry struct {
	key     [32]byte
	id      Identity
	err     error
	expires time.Time
}

// NewTokenReviewer returns an authenticator using client.
func NewTokenReviewer(client authnclient.TokenReviewInterface, opts TokenReviewOptions) *TokenReviewer {
	if len(opts.Audiences) == 0 {
		opts.Audiences = []string{DefaultAudience}
	}
	if opts.TTL == 0 {
		opts.TTL = time.Minute
	}
	if opts.NegativeTTL == 0 {
		opts.NegativeTTL = 5 * time.Second
	}
	if opts.MaxEntries == 0 {
		opts.MaxEntries = 10000
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &TokenReviewer{client: client, opts: opts, entries: map[[32]byte]*list.Element{}, order: list.New()}
}

// maxTokenLength bounds a token before anything is done with it: projected
// tokens are around a kilobyte.
const maxTokenLength = 16 << 10

// Authenticate implements Authenticator.
func (r *TokenReviewer) Authenticate(ctx context.Context) (Identity, error) {
	token, err := BearerToken(ctx)
	if err != nil {
		return Identity{}, err
	}
	return r.Review(ctx, token)
}

// Review authenticates one token.
func (r *TokenReviewer) Review(ctx context.Context, token string) (Identity, error) {
	if len(token) > maxTokenLength {
		return Identity{}, fmt.Errorf("token of %d bytes is too long", len(token))
	}
	key := sha256.Sum256([]byte(token))
	if id, err, ok := r.cached(key); ok {
		return id, err
	}
	v, _, _ := r.flight.Do(string(key[:]), func() (any, error) {
		if id, err, ok := r.cached(key); ok {
			return reviewEntry{id: id, err: err}, nil
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.Timeout)
		defer cancel()
		id, err := r.review(rctx, token)
		var apiErr *reviewError
		if errors.As(err, &apiErr) {
			return reviewEntry{id: id, err: err}, nil // the API server is unavailable: do not remember
		}
		ttl := r.opts.TTL
		if err != nil {
			ttl = r.opts.NegativeTTL
		} else if exp, ok := tokenExpiry(token); ok {
			ttl = min(ttl, exp.Sub(r.opts.Now()))
		}
		r.store(key, id, err, ttl)
		return reviewEntry{id: id, err: err}, nil
	})
	e := v.(reviewEntry)
	return e.id, e.err
}

// reviewError is a failure to ask, not a verdict.
type reviewError struct{ err error }

func (e *reviewError) Error() string {
	return "reviewing the token with the API server: " + e.err.Error()
}
func (e *reviewError) Unwrap() error { return e.err }

func (r *TokenReviewer) review(ctx context.Context, token string) (Identity, error) {
	tr, err := r.client.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: r.opts.Audiences}}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, &reviewError{err}
	}
	st := tr.Status
	if st.Error != "" {
		return Identity{}, fmt.Errorf("the token was rejected: %s", st.Error)
	}
	if !st.Authenticated {
		return Identity{}, errors.New("the token was not authenticated")
	}
	if len(r.opts.Audiences) > 0 && !intersects(st.Audiences, r.opts.Audiences) {
		return Identity{}, fmt.Errorf("the token is not for audience %s", strings.Join(r.opts.Audiences, ","))
	}
	parts := strings.Split(st.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
		return Identity{}, fmt.Errorf("%q is not a service account", st.User.Username)
	}
	id := Identity{Namespace: parts[2], ServiceAccount: parts[3], Method: "kubernetes"}
	if v := st.User.Extra[podNameExtra]; len(v) == 1 {
		id.PodName = v[0]
	}
	if v := st.User.Extra[podUIDExtra]; len(v) == 1 {
		id.PodUID = v[0]
	}
	return id, nil
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// tokenExpiry reads a JWT's exp claim. The token is not verified here (the
// API server did that); exp only shortens how long the review is cached.
func tokenExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Exp == 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}

func (r *TokenReviewer) cached(key [32]byte) (Identity, error, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	el, ok := r.entries[key]
	if !ok {
		return Identity{}, nil, false
	}
	e := el.Value.(*reviewEntry)
	if !r.opts.Now().Before(e.expires) {
		r.order.Remove(el)
		delete(r.entries, key)
		return Identity{}, nil, false
	}
	return e.id, e.err, true
}

func (r *TokenReviewer) store(key [32]byte, id Identity, err error, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.entries[key]; ok {
		r.order.Remove(el)
	}
	for r.order.Len() >= r.opts.MaxEntries {
		oldest := r.order.Front()
		r.order.Remove(oldest)
		delete(r.entries, oldest.Value.(*reviewEntry).key)
	}
	r.entries[key] = r.order.PushBack(&reviewEntry{key: key, id: id, err: err, expires: r.opts.Now().Add(ttl)})
}

// Len is the number of cached reviews (tests, metrics).
func (r *TokenReviewer) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.order.Len()
}
