// Package file provides resources from a directory tree of YAML files,
// watched with fsnotify. It is how standalone mode is configured.
//
// Files change in many ways: editors write a temporary file and rename it
// over the original, tools truncate and rewrite in several writes, and
// Kubernetes swaps a "..data" symlink when a ConfigMap is mounted. The
// provider watches directories, not files, so it sees all of these; it
// batches events (a holdoff after the last event, bounded by a maximum
// delay) and keeps the last good version of any file that fails to parse,
// so a half-written file never takes routes away.
package file

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/pkg/resource"
)

// Options tune the provider.
type Options struct {
	// Holdoff is how long to wait after the last event before reloading.
	Holdoff time.Duration
	// MaxDelay bounds how long a burst of events can postpone a reload.
	MaxDelay time.Duration
}

// Provider reads and watches a directory.
type Provider struct {
	dir  string
	log  logr.Logger
	opts Options

	mu    sync.Mutex
	files map[string]*fileState
	gens  map[resource.Key]generation
}

type fileState struct {
	// objs is the last good version of the file's objects.
	objs []resource.Object
	// errs are the problems of the current version, if it failed.
	errs []*resource.DecodeError
}

type generation struct {
	hash [32]byte
	gen  int64
}

// New returns a provider for dir.
func New(dir string, log logr.Logger, opts Options) *Provider {
	if opts.Holdoff == 0 {
		opts.Holdoff = 100 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = 500 * time.Millisecond
	}
	return &Provider{dir: dir, log: log, opts: opts, files: map[string]*fileState{}, gens: map[resource.Key]generation{}}
}

// Run loads the directory, publishes it, and publishes again after every
// batch of changes until ctx ends.
func (p *Provider) Run(ctx context.Context, publish func(*resource.Resources)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("creating file watcher: %w", err)
	}
	defer w.Close()
	if err := p.watchTree(w, p.dir); err != nil {
		return err
	}
	p.reload(nil)
	publish(p.Snapshot())

	var timer *time.Timer
	var timerC <-chan time.Time
	var first time.Time
	dirty := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) {
				continue
			}
			p.noteEvent(w, ev, dirty)
			now := time.Now()
			if timer == nil {
				first = now
				timer = time.NewTimer(p.opts.Holdoff)
				timerC = timer.C
				continue
			}
			// Push the reload back, but never past MaxDelay from the
			// first event of the batch.
			wait := min(p.opts.Holdoff, p.opts.MaxDelay-now.Sub(first))
			if wait < 0 {
				wait = 0
			}
			timer.Reset(wait)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			p.log.Error(err, "file watcher error; rescanning", "dir", p.dir)
			dirty[p.dir] = true
		case <-timerC:
			timer, timerC = nil, nil
			paths := make([]string, 0, len(dirty))
			for d := range dirty {
				paths = append(paths, d)
			}
			clear(dirty)
			p.reload(paths)
			publish(p.Snapshot())
		}
	}
}

// noteEvent records what to reload. Events on Kubernetes' "..data" names
// (or any hidden name) mean "everything in this directory may have
// changed"; new directories start being watched.
func (p *Provider) noteEvent(w *fsnotify.Watcher, ev fsnotify.Event, dirty map[string]bool) {
	name := ev.Name
	base := filepath.Base(name)
	if strings.HasPrefix(base, ".") {
		dirty[filepath.Dir(name)] = true
		return
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Stat(name); err == nil && fi.IsDir() {
			if err := p.watchTree(w, name); err != nil {
				p.log.Error(err, "watching new directory", "dir", name)
			}
		}
	}
	dirty[name] = true
}

func (p *Provider) watchTree(w *fsnotify.Watcher, root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return fmt.Errorf("reading config directory %s: %w", root, err)
			}
			return nil
		}
		if d.IsDir() {
			if path != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			if err := w.Add(path); err != nil {
				return fmt.Errorf("watching %s: %w", path, err)
			}
		}
		return nil
	})
}

func isConfigFile(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return (ext == ".yaml" || ext == ".yml" || ext == ".json") && !strings.HasPrefix(filepath.Base(name), ".")
}

// reload re-reads the given paths (files or directories); nil means all.
func (p *Provider) reload(paths []string) {
	if paths == nil {
		paths = []string{p.dir}
	}
	found := map[string]bool{}
	scanned := map[string]bool{} // directories rescanned: files under them that vanished are gone
	for _, path := range paths {
		fi, err := os.Stat(path)
		switch {
		case err != nil:
			scanned[path] = true // removed: forget it and everything below
		case fi.IsDir():
			scanned[path] = true
			_ = filepath.WalkDir(path, func(f string, d fs.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				if d.IsDir() && f != path && strings.HasPrefix(d.Name(), ".") {
					return filepath.SkipDir
				}
				if !d.IsDir() && isConfigFile(f) {
					found[f] = true
				}
				return nil
			})
		case isConfigFile(path):
			found[path] = true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for f := range p.files {
		if found[f] {
			continue
		}
		for dir := range scanned {
			if f == dir || strings.HasPrefix(f, dir+string(filepath.Separator)) {
				delete(p.files, f)
				p.log.Info("config file removed", "file", f)
				break
			}
		}
	}
	names := make([]string, 0, len(found))
	for f := range found {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		p.loadFile(f)
	}
}

func (p *Provider) loadFile(path string) {
	rel, err := filepath.Rel(p.dir, path)
	if err != nil {
		rel = path
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			delete(p.files, path)
			return
		}
		st := p.files[path]
		if st == nil {
			st = &fileState{}
			p.files[path] = st
		}
		st.errs = []*resource.DecodeError{{Source: rel, Err: err}}
		p.log.Error(err, "reading config file; keeping its last good version", "file", rel)
		return
	}
	objs, errs := resource.Decode(data, rel)
	st := p.files[path]
	if st == nil {
		st = &fileState{}
		p.files[path] = st
	}
	st.errs = errs
	if len(errs) > 0 {
		for _, e := range errs {
			p.log.Error(e, "invalid document; the file's last good version keeps serving", "file", rel, "document", e.Document, "field", e.Field)
		}
		return
	}
	for _, o := range objs {
		p.stamp(resource.KeyOf(o), o)
	}
	st.objs = objs
	p.log.V(1).Info("loaded config file", "file", rel, "objects", len(objs))
}

// Snapshot merges every file's last good objects into a Resources value.
// An object defined in two files is used from the first (by path) and the
// second is reported invalid.
func (p *Provider) Snapshot() *resource.Resources {
	p.mu.Lock()
	defer p.mu.Unlock()
	paths := make([]string, 0, len(p.files))
	for f := range p.files {
		paths = append(paths, f)
	}
	sort.Strings(paths)
	res := &resource.Resources{}
	seen := map[resource.Key]string{}
	live := map[resource.Key]bool{}
	for _, f := range paths {
		st := p.files[f]
		rel, _ := filepath.Rel(p.dir, f)
		for _, o := range st.objs {
			key := resource.KeyOf(o)
			if prev, dup := seen[key]; dup {
				res.Invalid = append(res.Invalid, resource.InvalidResource{Key: key, Source: rel,
					Error: fmt.Sprintf("%s is also defined in %s, which is used", key, prev)})
				continue
			}
			seen[key] = rel
			live[key] = true
			if err := res.Add(o); err != nil {
				p.log.Error(err, "unexpected object", "file", rel)
			}
		}
		for _, e := range st.errs {
			res.Invalid = append(res.Invalid, resource.InvalidResource{Key: e.Key, Source: e.Source, Error: e.Error()})
		}
	}
	for k := range p.gens {
		if !live[k] {
			delete(p.gens, k)
		}
	}
	res.Sort()
	return res
}

// stamp gives a freshly decoded object a generation that grows when its
// content changes, as the API server would, so status can report
// observedGeneration. Objects are stamped before they are ever published
// and never modified afterwards.
func (p *Provider) stamp(key resource.Key, o resource.Object) {
	b, _ := json.Marshal(o)
	h := sha256.Sum256(b)
	g, ok := p.gens[key]
	switch {
	case !ok:
		g = generation{hash: h, gen: 1}
	case g.hash != h:
		g = generation{hash: h, gen: g.gen + 1}
	}
	p.gens[key] = g
	o.SetGeneration(g.gen)
}
