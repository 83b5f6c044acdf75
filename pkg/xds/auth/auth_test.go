package auth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"google.golang.org/grpc/metadata"

	"github.com/portico-gateway/portico/pkg/xds/auth"
)

func withToken(tok string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
}

// jwt builds a token with an exp claim (unsigned: the fake API server
// below decides validity; exp only bounds caching).
func jwt(name string, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(fmt.Sprintf(`{"sub":%q,"exp":%d}`, name, exp.Unix()))) + ".sig"
}

type fakeAPI struct {
	calls atomic.Int64
	fail  atomic.Bool
}

// reviewer answers TokenReviews: tokens whose claims mention "good" are a
// bound service-account token of istio-system/gw for pod gw-1; "human" is
// a user; "wrongaud" is for another audience; the rest are rejected.
func reviewer(api *fakeAPI, opts auth.TokenReviewOptions) *auth.TokenReviewer {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		api.calls.Add(1)
		if api.fail.Load() {
			return true, nil, errors.New("connection refused")
		}
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		claims, _ := base64.RawURLEncoding.DecodeString(strings.Split(tr.Spec.Token+"..", ".")[1])
		switch {
		case strings.Contains(string(claims), "good"):
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences, User: authnv1.UserInfo{
				Username: "system:serviceaccount:istio-system:gw", Groups: []string{"system:serviceaccounts"},
				Extra: map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"gw-1"}, "authentication.kubernetes.io/pod-uid": {"uid-1"}}}}
		case strings.Contains(string(claims), "human"):
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences, User: authnv1.UserInfo{Username: "alice"}}
		case strings.Contains(string(claims), "wrongaud"):
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"istio-ca"}, User: authnv1.UserInfo{Username: "system:serviceaccount:a:b"}}
		default:
			tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
		}
		return true, tr, nil
	})
	return auth.NewTokenReviewer(cs.AuthenticationV1().TokenReviews(), opts)
}

func TestTokenReviewer(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	api := &fakeAPI{}
	r := reviewer(api, auth.TokenReviewOptions{TTL: time.Minute, NegativeTTL: 5 * time.Second, MaxEntries: 3, Now: clock})

	good := jwt("good-1", now.Add(time.Hour))
	id, err := r.Authenticate(withToken(good))
	if err != nil {
		t.Fatal(err)
	}
	if want := (auth.Identity{Namespace: "istio-system", ServiceAccount: "gw", PodName: "gw-1", PodUID: "uid-1", Method: "kubernetes"}); id != want {
		t.Fatalf("identity %+v, want %+v", id, want)
	}
	r.Authenticate(withToken(good))
	if api.calls.Load() != 1 {
		t.Fatalf("a cached token was reviewed again: %d reviews", api.calls.Load())
	}
	now = now.Add(61 * time.Second)
	r.Authenticate(withToken(good))
	if api.calls.Load() != 2 {
		t.Fatalf("after the TTL the token must be reviewed again: %d reviews", api.calls.Load())
	}

	// A token expiring sooner than the TTL is not trusted past its expiry.
	short := jwt("good-short", now.Add(10*time.Second))
	r.Authenticate(withToken(short))
	now = now.Add(11 * time.Second)
	r.Authenticate(withToken(short))
	if api.calls.Load() != 4 {
		t.Fatalf("a token must not be trusted beyond its exp: %d reviews", api.calls.Load())
	}

	for name, tok := range map[string]string{"rejected": jwt("bad", now.Add(time.Hour)), "a user, not a service account": jwt("human", now.Add(time.Hour)),
		"another audience": jwt("wrongaud", now.Add(time.Hour)), "not even a JWT": "garbage"} {
		if _, err := r.Authenticate(withToken(tok)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Refusals are remembered briefly: a client looping on a bad token
	// costs one review per NegativeTTL.
	r.Authenticate(withToken("garbage"))
	before := api.calls.Load()
	for range 10 {
		r.Authenticate(withToken("garbage"))
	}
	if api.calls.Load() != before {
		t.Errorf("a refused token was reviewed again at once: %d more reviews", api.calls.Load()-before)
	}
	if r.Len() > 3 {
		t.Errorf("the cache holds %d entries, bound is 3", r.Len())
	}

	// An unreachable API server is not a verdict: nothing is cached.
	api.fail.Store(true)
	other := jwt("good-2", now.Add(time.Hour))
	if _, err := r.Authenticate(withToken(other)); err == nil {
		t.Fatal("accepted without a review")
	}
	api.fail.Store(false)
	if _, err := r.Authenticate(withToken(other)); err != nil {
		t.Fatalf("after the API server is back: %v", err)
	}

	// Hostile input: oversized tokens are refused without asking.
	before = api.calls.Load()
	if _, err := r.Authenticate(withToken(strings.Repeat("a", 1<<20))); err == nil || api.calls.Load() != before {
		t.Errorf("an oversized token: %v, %d reviews", err, api.calls.Load()-before)
	}
	for _, md := range []metadata.MD{nil, metadata.Pairs("authorization", "Basic abc"), metadata.Pairs("authorization", "Bearer "),
		metadata.Pairs("authorization", "Bearer a", "authorization", "Bearer b")} {
		if _, err := r.Authenticate(metadata.NewIncomingContext(context.Background(), md)); err == nil {
			t.Errorf("metadata %v accepted", md)
		}
	}
}

func TestStaticTokenRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("first-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.StaticToken(path)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := a.Authenticate(withToken("first-token-0123456789")); err != nil || !id.Trusted {
		t.Fatalf("the right token: %+v %v", id, err)
	}
	for _, wrong := range []string{"first-token-012345678", "first-token-0123456789x", "", "second-token-0123456789"} {
		if _, err := a.Authenticate(withToken(wrong)); err == nil {
			t.Errorf("%q accepted", wrong)
		}
	}
	if err := os.WriteFile(path, []byte("second-token-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	os.Chtimes(path, future, future)
	if _, err := a.Authenticate(withToken("second-token-0123456789")); err != nil {
		t.Errorf("after rotation: %v", err)
	}
	if _, err := a.Authenticate(withToken("first-token-0123456789")); err == nil {
		t.Error("the old token still works after rotation")
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("abc"), 0o600)
	if _, err := auth.StaticToken(short); err == nil {
		t.Error("a 3-byte token was accepted as a secret")
	}
}
