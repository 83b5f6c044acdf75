package jwks

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/poll"
)

// keyServer serves a mutable answer on loopback and counts requests.
type keyServer struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	body   string
	delay  time.Duration
	hits   atomic.Int64
}

func newKeyServer(t *testing.T, body string) *keyServer {
	ks := &keyServer{status: 200, body: body}
	ks.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.hits.Add(1)
		ks.mu.Lock()
		status, body, delay := ks.status, ks.body, ks.delay
		ks.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(ks.Close)
	return ks
}

func (ks *keyServer) set(status int, body string) {
	ks.mu.Lock()
	ks.status, ks.body = status, body
	ks.mu.Unlock()
}

func sampleJWKS(t *testing.T) string {
	b, err := os.ReadFile("testdata/istio-sample-jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// run starts f and stops it (waiting for its goroutines) at cleanup.
func run(t *testing.T, f *Fetcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

// A first lookup is pending (fail-closed) and starts a fetch; its result
// is served from the cache without asking again; OnChange announces it.
func TestFetchCachesAndAnnounces(t *testing.T) {
	jwks := sampleJWKS(t)
	ks := newKeyServer(t, jwks)
	var changes atomic.Int64
	f := New(Options{OnChange: func() { changes.Add(1) }})
	uri := ks.URL + "/jwks.json"
	if _, err := f.Lookup(uri, 0); !errors.Is(err, ErrPending) {
		t.Fatalf("first lookup: %v, want ErrPending", err)
	}
	run(t, f)
	poll.Until(t, "the key set", func() bool { k, err := f.Lookup(uri, 0); return err == nil && k == jwks })
	if changes.Load() != 1 {
		t.Errorf("OnChange called %d times, want 1", changes.Load())
	}
	for range 10 {
		f.Lookup(uri, 0)
	}
	if n := ks.hits.Load(); n != 1 {
		t.Errorf("%d requests, want 1 (cached)", n)
	}
}

// Keys are fetched again every Refresh: a rotation reaches the cache and
// is announced; a failed refresh keeps the last good keys.
func TestRefreshPicksUpRotationAndKeepsKeysOnFailure(t *testing.T) {
	jwks := sampleJWKS(t)
	ks := newKeyServer(t, jwks)
	var changes atomic.Int64
	f := New(Options{Refresh: 20 * time.Millisecond, RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, OnChange: func() { changes.Add(1) }})
	uri := ks.URL + "/jwks.json"
	f.Lookup(uri, 0)
	run(t, f)
	poll.Until(t, "first fetch", func() bool { _, err := f.Lookup(uri, 0); return err == nil })
	rotated := `{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b","kid":"new"}]}`
	ks.set(200, rotated)
	poll.Until(t, "the rotated key set", func() bool { k, _ := f.Lookup(uri, 0); return k == rotated })
	if changes.Load() != 2 {
		t.Errorf("OnChange called %d times, want 2", changes.Load())
	}
	ks.set(500, "down")
	before := ks.hits.Load()
	poll.Until(t, "refreshes to fail", func() bool { return ks.hits.Load() > before+2 })
	if k, err := f.Lookup(uri, 0); err != nil || k != rotated {
		t.Errorf("after failed refreshes: %q, %v; want the last good keys", k, err)
	}
	if changes.Load() != 2 {
		t.Errorf("a failed refresh was announced as a change (%d)", changes.Load())
	}
}

// Hostile or broken servers: every failure is an error naming the cause,
// retried with backoff, and a recovery is picked up.
func TestFetchFailures(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		delay  time.Duration
		says   string
	}{
		{"server error", 503, "", 0, "status 503"},
		{"not JSON", 200, "<html>login</html>", 0, "not valid JSON"},
		{"JSON but not a key set", 200, `{"issuer":"x"}`, 0, `no "keys" array`},
		{"key without type", 200, `{"keys":[{"n":"x"}]}`, 0, `keys[0]: "kty" is required`},
		{"trailing data", 200, `{"keys":[]} {}`, 0, "trailing data"},
		{"oversized", 200, `{"keys":[],"pad":"` + strings.Repeat("x", 2048) + `"}`, 0, "larger than 1024 bytes"},
		{"slow", 200, `{"keys":[]}`, 2 * time.Second, "deadline exceeded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ks := newKeyServer(t, c.body)
			ks.status, ks.delay = c.status, c.delay
			var changes atomic.Int64
			f := New(Options{MaxBytes: 1024, RetryMin: 5 * time.Millisecond, RetryMax: 10 * time.Millisecond, OnChange: func() { changes.Add(1) }})
			uri := ks.URL + "/keys"
			f.Lookup(uri, 100*time.Millisecond)
			run(t, f)
			var last error
			poll.Until(t, "a failure", func() bool {
				_, last = f.Lookup(uri, 100*time.Millisecond)
				return last != nil && !errors.Is(last, ErrPending)
			})
			if !strings.Contains(last.Error(), c.says) || !strings.Contains(last.Error(), uri) {
				t.Errorf("error %q, want it to name %s and say %q", last, uri, c.says)
			}
			if changes.Load() != 1 {
				t.Errorf("OnChange called %d times, want 1 (pending → failed)", changes.Load())
			}
			before := ks.hits.Load()
			poll.Until(t, "retries", func() bool { return ks.hits.Load() >= before+2 })
			ks.mu.Lock()
			ks.status, ks.body, ks.delay = 200, `{"keys":[]}`, 0
			ks.mu.Unlock()
			poll.Until(t, "recovery", func() bool { k, err := f.Lookup(uri, 100*time.Millisecond); return err == nil && k == `{"keys":[]}` })
		})
	}
}

// A URI no build asks for any more stops being fetched.
func TestPruneStopsRefreshing(t *testing.T) {
	ks := newKeyServer(t, `{"keys":[]}`)
	f := New(Options{Refresh: 5 * time.Millisecond})
	uri := ks.URL + "/k"
	f.Lookup(uri, 0)
	run(t, f)
	poll.Until(t, "refreshes", func() bool { return ks.hits.Load() >= 3 })
	f.Prune() // used since the last prune: kept
	f.Prune() // not used since: forgotten
	f.mu.Lock()
	n := len(f.entries)
	f.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d entries after pruning", n)
	}
	time.Sleep(20 * time.Millisecond) // let a fetch in flight land
	after := ks.hits.Load()
	time.Sleep(50 * time.Millisecond) // ten refresh intervals: none may happen
	if got := ks.hits.Load(); got != after {
		t.Errorf("%d fetches after pruning", got-after)
	}
}

// The default client refuses link-local (cloud metadata) addresses and
// allows loopback.
func TestDefaultClientRefusesLinkLocal(t *testing.T) {
	f := New(Options{})
	_, err := f.fetch(context.Background(), "http://169.254.169.254/latest/meta-data", time.Second)
	if err == nil || !strings.Contains(err.Error(), "link-local or cloud metadata") {
		t.Errorf("metadata address: %v", err)
	}
	ks := newKeyServer(t, `{"keys":[]}`)
	if _, err := f.fetch(context.Background(), ks.URL, time.Second); err != nil {
		t.Errorf("loopback: %v", err)
	}
}

func TestValidate(t *testing.T) {
	if err := Validate([]byte(FailClosedJWKS)); err != nil {
		t.Errorf("FailClosedJWKS: %v", err)
	}
	if err := Validate([]byte(sampleJWKS(t))); err != nil {
		t.Errorf("Istio's sample: %v", err)
	}
	for _, bad := range []string{"", "null", "[]", `{"keys":{}}`, `{"keys":[1]}`, `{"keys":[{"kty":1}]}`} {
		if Validate([]byte(bad)) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
