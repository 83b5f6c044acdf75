package tls

import (
	"bytes"
	"context"
	"crypto/sha256"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/internal/fsread"
)

// MaxFileSize bounds a certificate, key or CA file: a CA bundle of every
// public root is a few hundred KiB.
const MaxFileSize = 16 << 20

// Spec describes where an SDS secret's material comes from: inline PEM (a
// Kubernetes Secret read by the controller) or files on this machine
// (mounted secrets), reloaded when WatchDir changes.
type Spec struct {
	CertPEM, KeyPEM, CAPEM    []byte
	CertFile, KeyFile, CAFile string
	WatchDir                  string
}

func (s Spec) files() bool { return s.CertFile != "" || s.KeyFile != "" || s.CAFile != "" }

// Material is validated certificate material.
type Material struct {
	Pair    *Pair
	CA      *x509.CertPool
	CACerts []*x509.Certificate
	// Version is a hash of the PEM bytes.
	Version  string
	LoadedAt time.Time
}

// Info describes one secret for /certs and config dumps.
type Info struct {
	Name      string     `json:"name"`
	Source    string     `json:"source"`
	Version   string     `json:"version"`
	LoadedAt  time.Time  `json:"loaded_at"`
	Cert      *CertInfo  `json:"certificate,omitempty"`
	CA        []CertInfo `json:"ca_certificates,omitempty"`
	LastError string     `json:"last_error,omitempty"`
}

// Event reports a load: ok, or rejected with why (the old material stays).
type Event struct {
	Name string
	OK   bool
	Err  error
}

type entry struct {
	name    string
	spec    Spec
	mat     *Material
	lastErr string
}

// Store holds certificate material by SDS name. Readers (TLS handshakes)
// take the current material under a read lock; updates swap it whole.
type Store struct {
	log   logr.Logger
	now   func() time.Time
	onEvt func(Event)

	mu      sync.RWMutex
	entries map[string]*entry

	watchMu sync.Mutex
	watcher *fsnotify.Watcher
	stopped bool           // Run has returned: no new watcher
	dirs    map[string]int // watched directory → reference count
	dirty   chan string
}

// NewStore returns an empty store. onEvent (optional) observes loads.
func NewStore(log logr.Logger, onEvent func(Event)) *Store {
	if onEvent == nil {
		onEvent = func(Event) {}
	}
	return &Store{log: log, now: time.Now, onEvt: onEvent, entries: map[string]*entry{}, dirs: map[string]int{}, dirty: make(chan string, 64)}
}

// Set adds or replaces a secret. Invalid material is an error and leaves
// any previous material of that name in place; the error says whether
// there is such material (a failed first load serves nothing). A secret
// whose files cannot be read yet stays in the store and is watched, so it
// loads as soon as its files appear.
func (s *Store) Set(name string, spec Spec) error {
	mat, err := s.load(spec)
	s.mu.Lock()
	e, ok := s.entries[name]
	if !ok {
		e = &entry{name: name}
		s.entries[name] = e
	}
	oldSpec := e.spec
	e.spec = spec
	hadMaterial := e.mat != nil
	if err != nil {
		e.lastErr = Consequence(err, spec, hadMaterial)
	} else {
		e.mat, e.lastErr = mat, ""
	}
	s.mu.Unlock()
	if oldSpec.WatchDir != spec.WatchDir || oldSpec.files() != spec.files() {
		s.unwatch(oldSpec)
		s.watch(spec)
	}
	s.onEvt(Event{Name: name, OK: err == nil, Err: err})
	if err != nil {
		return fmt.Errorf("secret %s: %w%s", name, err, consequence(spec, hadMaterial))
	}
	return nil
}

// Consequence completes a load error with what it means for serving: a
// secret that never loaded serves nothing, while a failed update or
// reload leaves the previous material in use. Saying "the previous
// certificate keeps serving" when there never was one sends users looking
// for a certificate that does not exist.
func Consequence(err error, spec Spec, hadMaterial bool) string {
	return err.Error() + consequence(spec, hadMaterial)
}

func consequence(spec Spec, hadMaterial bool) string {
	caOnly := (spec.CAFile != "" || len(spec.CAPEM) > 0) && spec.CertFile == "" && len(spec.CertPEM) == 0
	switch {
	case hadMaterial && caOnly:
		return "; the previous CA bundle keeps serving"
	case hadMaterial:
		return "; the previous certificate keeps serving"
	case caOnly:
		return "; no CA bundle loaded yet, so client certificates cannot be verified with it"
	}
	return "; no certificate loaded yet, so the server is not serving TLS with it"
}

// Problem returns why a secret is not (or no longer) loaded as specified:
// the last load error, with its consequence; "" when its material is
// current. Unknown names have no problem: they were never asked for.
func (s *Store) Problem(name string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if e, ok := s.entries[name]; ok {
		return e.lastErr
	}
	return ""
}

// Remove forgets a secret.
func (s *Store) Remove(name string) {
	s.mu.Lock()
	e, ok := s.entries[name]
	delete(s.entries, name)
	s.mu.Unlock()
	if ok {
		s.unwatch(e.spec)
	}
}

// Names lists stored secrets.
func (s *Store) Names() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.entries))
	for n := range s.entries {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Has reports whether a secret has usable material.
func (s *Store) Has(name string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.entries[name]
	return ok && e.mat != nil
}

// ErrNotFound is returned for secrets that are missing or never loaded.
var ErrNotFound = errors.New("secret not available")

func (s *Store) material(name string) (*Material, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.entries[name]
	if !ok || e.mat == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return e.mat, nil
}

// Certificate returns the current certificate of a secret.
func (s *Store) Certificate(name string) (*cryptotls.Certificate, error) {
	m, err := s.material(name)
	if err != nil {
		return nil, err
	}
	if m.Pair == nil {
		return nil, fmt.Errorf("secret %s has no certificate", name)
	}
	return &m.Pair.Certificate, nil
}

// CAPool returns the current CA pool of a secret.
func (s *Store) CAPool(name string) (*x509.CertPool, error) {
	m, err := s.material(name)
	if err != nil {
		return nil, err
	}
	if m.CA == nil {
		return nil, fmt.Errorf("secret %s has no CA certificates", name)
	}
	return m.CA, nil
}

// Infos describes every secret.
func (s *Store) Infos() []Info {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Info, 0, len(s.entries))
	for _, e := range s.entries {
		in := Info{Name: e.name, Source: source(e.spec), LastError: e.lastErr}
		if m := e.mat; m != nil {
			in.Version, in.LoadedAt = m.Version, m.LoadedAt
			if m.Pair != nil {
				ci := m.Pair.Info
				in.Cert = &ci
			}
			for _, c := range m.CACerts {
				in.CA = append(in.CA, Describe(c))
			}
		}
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func source(s Spec) string {
	if !s.files() {
		return "inline"
	}
	var parts []string
	for _, f := range []string{s.CertFile, s.KeyFile, s.CAFile} {
		if f != "" {
			parts = append(parts, f)
		}
	}
	return fmt.Sprint(parts)
}

func (s *Store) load(spec Spec) (*Material, error) {
	certPEM, keyPEM, caPEM := spec.CertPEM, spec.KeyPEM, spec.CAPEM
	var err error
	read := func(path string) []byte {
		if path == "" || err != nil {
			return nil
		}
		var b []byte
		// Never a FIFO or a device (a read that blocks or never ends),
		// never an unbounded file.
		b, err = fsread.Regular(path, MaxFileSize)
		if err != nil {
			err = fmt.Errorf("reading %s: %w", path, err)
		}
		return b
	}
	if spec.files() {
		certPEM, keyPEM, caPEM = read(spec.CertFile), read(spec.KeyFile), read(spec.CAFile)
		if err != nil {
			return nil, err
		}
	}
	h := sha256.New()
	mat := &Material{LoadedAt: s.now()}
	if len(certPEM) > 0 || len(keyPEM) > 0 {
		pair, err := ParsePair(certPEM, keyPEM, s.now())
		if err != nil {
			return nil, err
		}
		mat.Pair = pair
		h.Write(certPEM)
		h.Write(keyPEM)
	}
	if len(caPEM) > 0 {
		pool, certs, err := ParseCABundle(caPEM)
		if err != nil {
			return nil, err
		}
		mat.CA, mat.CACerts = pool, certs
		h.Write(caPEM)
	}
	if mat.Pair == nil && mat.CA == nil {
		return nil, errors.New("no certificate, key or CA")
	}
	mat.Version = hex.EncodeToString(h.Sum(nil))[:16]
	return mat, nil
}

// watchDir is the directory whose changes reload a spec.
func watchDir(s Spec) string {
	if !s.files() {
		return ""
	}
	if s.WatchDir != "" {
		return s.WatchDir
	}
	for _, f := range []string{s.CertFile, s.CAFile, s.KeyFile} {
		if f != "" {
			return filepath.Dir(f)
		}
	}
	return ""
}

func (s *Store) watch(spec Spec) {
	dir := watchDir(spec)
	if dir == "" {
		return
	}
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	s.dirs[dir]++
	// The watch is in place when Set returns, Run or not: a file replaced
	// right after is not missed (its event waits for Run).
	if w := s.ensureWatcher(); s.dirs[dir] == 1 && w != nil {
		if err := w.Add(dir); err != nil {
			s.log.Error(err, "watching certificate directory", "dir", dir)
		}
	}
}

// ensureWatcher creates the file watcher on first use (watchMu held). If
// it cannot be created, the periodic rescan still catches changes.
func (s *Store) ensureWatcher() *fsnotify.Watcher {
	if s.watcher == nil && !s.stopped {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			s.log.Error(err, "creating certificate watcher; changes are seen by the periodic rescan only")
			return nil
		}
		s.watcher = w
	}
	return s.watcher
}

func (s *Store) unwatch(spec Spec) {
	dir := watchDir(spec)
	if dir == "" {
		return
	}
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.dirs[dir]--; s.dirs[dir] <= 0 {
		delete(s.dirs, dir)
		if s.watcher != nil {
			s.watcher.Remove(dir)
		}
	}
}

// Run watches the directories of file-backed secrets and reloads them on
// change, until ctx ends. Changes are batched for a short holdoff so a
// kubelet "..data" swap or an editor's rename is seen as one update.
func (s *Store) Run(ctx context.Context) error {
	s.watchMu.Lock()
	w := s.ensureWatcher()
	s.watchMu.Unlock()
	defer func() {
		s.watchMu.Lock()
		if s.watcher != nil {
			s.watcher.Close()
			s.watcher = nil
		}
		s.stopped = true
		s.watchMu.Unlock()
	}()
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	const holdoff = 50 * time.Millisecond
	pending := map[string]bool{}
	var timer *time.Timer
	var timerC <-chan time.Time
	// A periodic rescan also catches changes fsnotify cannot see (a
	// directory created after the watch, network filesystems).
	rescan := time.NewTicker(5 * time.Second)
	defer rescan.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			pending[filepath.Dir(ev.Name)] = true
			if timer == nil {
				timer = time.NewTimer(holdoff)
				timerC = timer.C
			}
		case err, ok := <-errs:
			if ok {
				s.log.Error(err, "certificate watcher")
			}
		case <-rescan.C:
			s.reloadChanged(nil)
		case <-timerC:
			timer, timerC = nil, nil
			dirs := pending
			pending = map[string]bool{}
			s.reloadChanged(dirs)
		}
	}
}

// reloadChanged reloads file secrets in dirs (all when nil) whose content
// changed, keeping the old material when the new one is invalid.
func (s *Store) reloadChanged(dirs map[string]bool) {
	s.mu.RLock()
	var todo []*entry
	for _, e := range s.entries {
		d := watchDir(e.spec)
		if d == "" {
			continue
		}
		if dirs == nil || dirs[d] || dirs[filepath.Clean(d)] {
			todo = append(todo, e)
		}
	}
	s.mu.RUnlock()
	for _, e := range todo {
		s.mu.RLock()
		spec, old, oldErr := e.spec, e.mat, e.lastErr
		s.mu.RUnlock()
		mat, err := s.load(spec)
		var msg string
		if err != nil {
			msg = Consequence(err, spec, old != nil)
		}
		if err == nil && old != nil && mat.Version == old.Version && oldErr == "" || err != nil && msg == oldErr {
			continue // nothing changed; a failure is reported once, not at every rescan
		}
		s.mu.Lock()
		current := false
		if cur, ok := s.entries[e.name]; ok && cur == e && equalSpec(cur.spec, spec) {
			current = true
			if err != nil {
				e.lastErr = msg
			} else {
				e.mat, e.lastErr = mat, ""
			}
		}
		s.mu.Unlock()
		if !current {
			continue // replaced meanwhile: Set reported the new one
		}
		switch {
		case err != nil && old != nil:
			s.log.Error(err, "certificate reload rejected; the previous certificate keeps serving", "secret", e.name)
		case err != nil:
			s.log.Error(err, "certificate cannot be loaded; no certificate loaded yet, so the server is not serving TLS with it", "secret", e.name)
		case old == nil:
			s.log.Info("certificate loaded", "secret", e.name, "version", mat.Version)
		case mat.Version == old.Version:
			s.log.Info("certificate files readable again; the certificate in use is unchanged", "secret", e.name, "version", mat.Version)
		default:
			s.log.Info("certificate reloaded", "secret", e.name, "version", mat.Version)
		}
		s.onEvt(Event{Name: e.name, OK: err == nil, Err: err})
	}
}

func equalSpec(a, b Spec) bool {
	return a.CertFile == b.CertFile && a.KeyFile == b.KeyFile && a.CAFile == b.CAFile && a.WatchDir == b.WatchDir &&
		bytes.Equal(a.CertPEM, b.CertPEM) && bytes.Equal(a.KeyPEM, b.KeyPEM) && bytes.Equal(a.CAPEM, b.CAPEM)
}

// LoadedPEM returns the PEM of what a secret has loaded: its certificate
// chain and its CA certificates (never a private key), so that config
// dumps can show file-based certificates inline, as Envoy's do.
func (s *Store) LoadedPEM(name string) (chain, ca []byte) {
	m, err := s.material(name)
	if err != nil {
		return nil, nil
	}
	if m.Pair != nil {
		for _, der := range m.Pair.Certificate.Certificate {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
	}
	for _, c := range m.CACerts {
		ca = append(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return chain, ca
}
