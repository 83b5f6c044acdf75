// Package jwks fetches the JSON Web Key Sets that RequestAuthentication
// jwtRules name by jwksUri, off the build path, as istiod does: proxies get
// the keys inline and need no egress. Each URI is fetched once when a build
// first asks for it, then refreshed periodically (istiod's
// PILOT_JWT_PUB_KEY_REFRESH_INTERVAL, 20 minutes); failures are retried
// with exponential backoff. A change of keys (or of fetch state) calls
// OnChange so the controller builds again. A URI no build asks for any
// more is forgotten at the next Prune.
//
// Fail-closed: until a URI has been fetched successfully, callers get an
// error and are expected to inline FailClosedJWKS, a public key whose
// private half does not exist, so every token fails verification (401)
// as with istiod. A refresh failure after a success keeps the last good
// keys.
package jwks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// Defaults, as istiod's.
const (
	DefaultTimeout  = 5 * time.Second
	DefaultMaxBytes = 1 << 20
	DefaultRefresh  = 20 * time.Minute
	DefaultRetryMin = time.Second
	DefaultRetryMax = time.Minute
)

// FailClosedJWKS is an RSA public key whose private key was discarded at
// generation (the same idea, and key, as istiod's PublicOnlyJwks): no
// token can verify against it.
const FailClosedJWKS = `{"keys":[{"kty":"RSA","e":"AQAB","n":"0xObjM0UvS_oaazjpEYlAbwctEJ4L8pH3OuTb7qth7gUwqet-EzQB4dgFdvSdMgrLnSncQGRjpEYz3F3viIbH-3EN3TxSlPNviHxeOdyiBVfumN8dMxbLvVJUpfNOnvmMxJcl-8NNjAwcOjk4otSALaYgYYyOPyvKtgVdrQr-FoubWX4yrjxW-MJ2-7OBeepUUNOsVwGV23YX03sVkkyvY3otRflkBcY3_HKpBxJl9wk2GyOShN4_PNUF9-vwfnvOXMbCDX-w4PTef4geeb_GiT40YCKHTKMSPVanGRn5GExIWmki-mmqh94-mPTJyBR74ShspL3BxPZitDL574T1w"}]}`

// ErrPending is returned for a URI whose first fetch has not finished.
var ErrPending = errors.New("the key set is being fetched")

// Source gives a build the key set of a URI without blocking.
type Source interface {
	// Lookup returns the last good key set of uri, or an error (ErrPending
	// before the first fetch ends, else why it failed). timeout bounds
	// each fetch (zero: DefaultTimeout).
	Lookup(uri string, timeout time.Duration) (string, error)
}

// Static is a Source with fixed answers (tests, goldens): URIs not in the
// map fail.
type Static map[string]string

// Lookup implements Source.
func (s Static) Lookup(uri string, _ time.Duration) (string, error) {
	if k, ok := s[uri]; ok {
		return k, nil
	}
	return "", fmt.Errorf("GET %s: no such key set", uri)
}

// Options tune a Fetcher.
type Options struct {
	// MaxBytes bounds a response body (default 1 MiB).
	MaxBytes int64
	// Refresh is how often a fetched key set is fetched again (default
	// 20 minutes).
	Refresh time.Duration
	// RetryMin and RetryMax bound the backoff after failures (1 s, 1 min).
	RetryMin, RetryMax time.Duration
	// Client, if set, replaces the default client (which refuses
	// link-local and cloud metadata addresses, as istiod does).
	Client *http.Client
	// OnChange is called (from a fetch goroutine) when a URI's key set or
	// its failure changes.
	OnChange func()
	Log      logr.Logger
}

// Fetcher fetches and caches key sets. Lookup may be called before Run;
// fetching starts with Run and stops when its context ends.
type Fetcher struct {
	opts Options

	mu      sync.Mutex
	ctx     context.Context // nil until Run
	entries map[string]*entry
	wg      sync.WaitGroup
}

type entry struct {
	uri     string
	timeout time.Duration
	keys    string // last good
	err     error  // last failure, nil after a success
	ok      bool   // fetched successfully at least once
	used    bool   // looked up since the last Prune
	cancel  context.CancelFunc
	wake    chan struct{} // a new timeout asks for a prompt retry
}

// New returns a fetcher; call Run to start fetching.
func New(opts Options) *Fetcher {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = DefaultRetryMin
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = DefaultRetryMax
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Transport: guardedTransport()}
	}
	return &Fetcher{opts: opts, entries: map[string]*entry{}}
}

// Run fetches until ctx ends, then waits for every fetch goroutine.
func (f *Fetcher) Run(ctx context.Context) {
	f.mu.Lock()
	f.ctx = ctx
	for _, e := range f.entries {
		f.start(e)
	}
	f.mu.Unlock()
	<-ctx.Done()
	f.wg.Wait()
}

// Lookup implements Source.
func (f *Fetcher) Lookup(uri string, timeout time.Duration) (string, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[uri]
	if !ok {
		e = &entry{uri: uri, timeout: timeout, err: ErrPending, wake: make(chan struct{}, 1)}
		f.entries[uri] = e
		if f.ctx != nil {
			f.start(e)
		}
	}
	e.used = true
	if e.timeout != timeout {
		e.timeout = timeout
		if !e.ok {
			// A longer timeout may be what the failing fetch needed.
			select {
			case e.wake <- struct{}{}:
			default:
			}
		}
	}
	if e.ok {
		return e.keys, nil
	}
	return "", e.err
}

// Prune forgets the URIs not looked up since the previous Prune, stopping
// their refreshes.
func (f *Fetcher) Prune() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for uri, e := range f.entries {
		if !e.used {
			if e.cancel != nil {
				e.cancel()
			}
			delete(f.entries, uri)
			continue
		}
		e.used = false
	}
}

// start runs e's fetch loop; f.mu is held.
func (f *Fetcher) start(e *entry) {
	if e.cancel != nil || f.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(f.ctx)
	e.cancel = cancel
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.loop(ctx, e)
	}()
}

func (f *Fetcher) loop(ctx context.Context, e *entry) {
	log := f.opts.Log.WithValues("jwksUri", e.uri)
	backoff := f.opts.RetryMin
	for {
		f.mu.Lock()
		timeout := e.timeout
		f.mu.Unlock()
		keys, err := f.fetch(ctx, e.uri, timeout)
		if ctx.Err() != nil {
			return
		}
		var wait time.Duration
		f.mu.Lock()
		changed := false
		if err != nil {
			wait = backoff
			backoff = min(backoff*2, f.opts.RetryMax)
			if e.ok {
				log.Error(err, "refreshing the key set failed; the last good keys stay in use", "retryIn", wait)
			} else {
				log.Error(err, "fetching the key set failed; tokens of this issuer are rejected (401) until it succeeds", "retryIn", wait)
				changed = e.err == ErrPending || e.err.Error() != err.Error()
				e.err = err
			}
		} else {
			wait, backoff = f.opts.Refresh, f.opts.RetryMin
			changed = !e.ok || e.keys != keys
			if changed {
				log.Info("key set fetched", "bytes", len(keys))
			}
			e.keys, e.ok, e.err = keys, true, nil
		}
		f.mu.Unlock()
		if changed && f.opts.OnChange != nil {
			f.opts.OnChange()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-e.wake:
			t.Stop()
		}
	}
}

// fetch GETs one key set, bounded in time and size, and checks that it is
// one (istiod refuses anything else, so that a jwksUri pointed at some
// internal endpoint does not copy that endpoint's answer into proxies'
// configuration).
func (f *Fetcher) fetch(ctx context.Context, uri string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return "", fmt.Errorf("invalid jwksUri: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.opts.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("GET %s: status %d", uri, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.opts.MaxBytes+1))
	if err != nil {
		return "", fmt.Errorf("GET %s: reading the body: %w", uri, err)
	}
	if int64(len(body)) > f.opts.MaxBytes {
		return "", fmt.Errorf("GET %s: body larger than %d bytes", uri, f.opts.MaxBytes)
	}
	if err := Validate([]byte(body)); err != nil {
		return "", fmt.Errorf("GET %s: not a JSON Web Key Set: %w", uri, err)
	}
	return string(bytes.TrimSpace(body)), nil
}

// Validate checks that b is a JSON Web Key Set: an object with a "keys"
// array of objects that each name their key type (RFC 7517).
func Validate(b []byte) error {
	var doc struct {
		Keys *[]map[string]json.RawMessage `json:"keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("not valid JSON: %w", err)
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	if doc.Keys == nil {
		return errors.New(`no "keys" array`)
	}
	for i, k := range *doc.Keys {
		var kty string
		if raw, ok := k["kty"]; !ok || json.Unmarshal(raw, &kty) != nil || kty == "" {
			return fmt.Errorf(`keys[%d]: "kty" is required`, i)
		}
	}
	return nil
}

// guardedTransport refuses to connect to link-local and cloud metadata
// addresses (istiod's default SSRF guard); loopback and private addresses
// stay allowed, as in-cluster identity providers live there.
func guardedTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: DefaultTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		ip := ap.Addr().Unmap()
		if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip == netip.MustParseAddr("fd00:ec2::254") || ip == netip.MustParseAddr("100.100.100.200") {
			return fmt.Errorf("connection to %s refused: link-local or cloud metadata address", ip)
		}
		return nil
	}}
	t.DialContext = d.DialContext
	t.Proxy = nil
	return t
}
