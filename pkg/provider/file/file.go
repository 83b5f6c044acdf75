// Package file provides resources from a directory tree of YAML files,
// watched with fsnotify. It is how standalone mode is configured.
//
// Files change in many ways: editors write a temporary file and rename it
// over the original, tools truncate and rewrite in several writes, and
// Kubernetes swaps a "..data" symlink when a ConfigMap is mounted. The
// provider watches directories, not files, so it sees all of these; it
// batches events (a holdoff after the last event, bounded by a maximum
// delay; a lone atomic rename, complete when its event comes, is read at
// once) and keeps the last good version of any file that fails to parse,
// so a half-written file never takes routes away.
package file

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	security "istio.io/client-go/pkg/apis/security/v1"
	telemetry "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/internal/fsread"
	"github.com/portico-gateway/portico/pkg/provider/debounce"
	"github.com/portico-gateway/portico/pkg/resource"
)

// Options tune the provider.
type Options struct {
	// Holdoff is how long to wait after the last event before reloading.
	Holdoff time.Duration
	// MaxDelay bounds how long a burst of events can postpone a reload.
	MaxDelay time.Duration
	// MaxFileSize bounds a config file (default DefaultMaxFileSize): a
	// larger one is reported and its last good version keeps serving.
	MaxFileSize int64
}

// DefaultMaxFileSize is far beyond any hand-written configuration (5,000
// VirtualServices take about 2 MiB) and keeps a runaway file, or a
// symlink to something endless, from exhausting memory.
const DefaultMaxFileSize = 16 << 20

// Provider reads and watches a directory.
type Provider struct {
	dir  string
	log  logr.Logger
	opts Options

	mu    sync.Mutex
	files map[string]*fileState
	// removed remembers, until the next snapshot, the generation of each
	// object that left its file, so that an object moved to another file
	// keeps counting; one gone at a snapshot starts again at 1 if it comes
	// back, as a re-created object does.
	removed map[resource.Key]generation

	// last is the last snapshot (each file's state says which of its
	// objects are in it, and where), so that a change to a few files
	// patches it instead of merging and sorting thousands of objects again.
	// dirty lists the files loaded since; structural is set when files
	// appeared or went, which needs a full merge.
	last       *resource.Resources
	lastDups   []resource.InvalidResource
	dirty      map[string]bool
	structural bool
	merges     int // full merges, for tests
	// linked marks the directories that hold a config file which is a
	// symlink (a ConfigMap volume's keys point through ..data): there, an
	// event on a hidden name may change what a visible file reads.
	linked map[string]bool
	// hiddenRescans counts, per directory, the rescans an event on a
	// hidden name asked for (for tests).
	hiddenRescans map[string]int
	decodes       atomic.Int64 // files decoded, for tests
	reads         atomic.Int64 // files read, for tests
}

type fileState struct {
	// objs is the last good version of the file's objects, and contents
	// their content hashes (contentHash), by which a new version's
	// generation is told.
	objs     []resource.Object
	contents [][32]byte
	// errs are the problems of the current version, if it failed.
	errs []*resource.DecodeError
	// sum is the SHA-256 of the bytes objs and errs were decoded from
	// (zero after a read error). Reading is cheap, decoding is not: a
	// rescan re-reads a directory but decodes only files whose bytes
	// changed.
	sum [32]byte
	// stat identifies the file as it was when last read (zero: unknown).
	// A rescan does not even read a file whose stat is unchanged, unless
	// an event named the file itself.
	stat statKey
	// published are the file's objects in the last snapshot (those not
	// shadowed by another file's), in file order, and pos where each sits
	// in its kind's list there. Kept per file, not in maps keyed by
	// resource.Key: at 30,000 objects those maps were 7 MB of the
	// provider's heap.
	published []resource.Object
	pos       []int32
}

// statKey is what changes when a file is replaced (inode), rewritten
// (size, mtime, ctime) or re-linked (ctime), as os.Stat sees it through
// symlinks (the kubelet's ..data swap points them at new inodes).
type statKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

func statOf(path string) statKey {
	fi, err := os.Stat(path)
	if err != nil {
		return statKey{}
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return statKey{}
	}
	return statKey{dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Sec*1e9 + st.Mtim.Nsec, ctime: st.Ctim.Sec*1e9 + st.Ctim.Nsec}
}

type generation struct {
	hash [32]byte
	gen  int64
}

// New returns a provider for dir.
func New(dir string, log logr.Logger, opts Options) *Provider {
	if opts.Holdoff == 0 {
		opts.Holdoff = 10 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = time.Second
	}
	if opts.MaxFileSize == 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	return &Provider{dir: dir, log: log, opts: opts, files: map[string]*fileState{}, removed: map[resource.Key]generation{}, dirty: map[string]bool{},
		linked: map[string]bool{}, hiddenRescans: map[string]int{}}
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

	// Trailing, except for the target of an atomic rename: an in-place
	// write's first event (the truncation) comes before its content.
	batch := debounce.Batcher{Holdoff: p.opts.Holdoff, MaxDelay: p.opts.MaxDelay}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	dirty := map[string]bool{}
	take := func() {
		batch.Taken(time.Now())
		paths := make([]string, 0, len(dirty))
		for d := range dirty {
			paths = append(paths, d)
		}
		clear(dirty)
		if p.reload(paths) {
			publish(p.Snapshot())
		} else {
			p.log.V(1).Info("config files rescanned; none changed", "paths", len(paths))
		}
	}
	var prev fsnotify.Event
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
			complete := renamedInto(prev, ev)
			prev = ev
			if !p.noteEvent(w, ev, dirty) {
				continue
			}
			// Push the reload back, but never past MaxDelay from the
			// first event of the batch. A lone rename's target is
			// complete when its event comes: take it at once.
			batch.Leading = complete
			now, wait := batch.Event(time.Now())
			if now {
				timer.Stop()
				take()
				continue
			}
			timer.Reset(wait)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			p.log.Error(err, "file watcher error; rescanning", "dir", p.dir)
			dirty[p.dir] = true
			batch.Leading = false
			_, wait := batch.Event(time.Now())
			timer.Reset(wait)
		case <-timer.C:
			take()
		}
	}
}

// renamedInto reports whether ev is the arrival of a file renamed from a
// name in the same directory, as an atomic write renames its temporary
// file (inotify reports the move's two halves back to back: a Rename of
// the old name, a Create of the new). Such a file is complete when its
// event comes, unlike one being created or written in place.
func renamedInto(prev, ev fsnotify.Event) bool {
	return ev.Op == fsnotify.Create && prev.Op == fsnotify.Rename &&
		filepath.Dir(prev.Name) == filepath.Dir(ev.Name) && prev.Name != ev.Name &&
		!strings.HasPrefix(filepath.Base(ev.Name), ".")
}

// noteEvent records what to reload; new directories start being
// watched. An event on a hidden name rescans its directory when it can
// change what a visible file reads: Kubernetes' "..data" swap (any ".."
// name), a hidden directory or symlink, or any hidden name in a directory
// whose config files are symlinks. A hidden regular file elsewhere (the
// temporary file of an atomic write) cannot: renamed onto a visible name,
// that name gets its own event. Rescanning for it stats every file of
// the directory, 100 ms at 10,000 files. It reports whether the event
// left anything to reload.
func (p *Provider) noteEvent(w *fsnotify.Watcher, ev fsnotify.Event, dirty map[string]bool) bool {
	name := ev.Name
	base := filepath.Base(name)
	if strings.HasPrefix(base, ".") {
		dir := filepath.Dir(name)
		if !p.hiddenMatters(dir, name, base) {
			return false
		}
		dirty[dir] = true
		p.mu.Lock()
		p.hiddenRescans[dir]++
		p.mu.Unlock()
		return true
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Stat(name); err == nil && fi.IsDir() {
			if err := p.watchTree(w, name); err != nil {
				p.log.Error(err, "watching new directory", "dir", name)
			}
		}
	}
	dirty[name] = true
	return true
}

// hiddenMatters reports whether an event on the hidden name in dir can
// change a visible config file.
func (p *Provider) hiddenMatters(dir, name, base string) bool {
	if strings.HasPrefix(base, "..") {
		return true
	}
	p.mu.Lock()
	linked := p.linked[dir]
	p.mu.Unlock()
	if linked {
		return true
	}
	fi, err := os.Lstat(name)
	return err == nil && (fi.IsDir() || fi.Mode()&fs.ModeSymlink != 0)
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
// Files whose bytes did not change since they were last decoded are not
// decoded again, so an event on a hidden name (an editor's or kubectl
// cp's temporary file, the kubelet's ..data swap), which rescans the
// whole directory, costs a read of each file, not a decode. It reports
// whether anything changed.
func (p *Provider) reload(paths []string) bool {
	if paths == nil {
		paths = []string{p.dir}
	}
	found := map[string]bool{}
	linked := map[string]bool{}  // directories found holding symlinked config files
	named := map[string]bool{}   // files an event named themselves
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
					if d.Type()&fs.ModeSymlink != 0 {
						linked[filepath.Dir(f)] = true
					}
				}
				return nil
			})
		case isConfigFile(path):
			found[path] = true
			named[path] = true
			if li, err := os.Lstat(path); err == nil && li.Mode()&fs.ModeSymlink != 0 {
				linked[filepath.Dir(path)] = true
			}
		}
	}
	names := make([]string, 0, len(found))
	for f := range found {
		names = append(names, f)
	}
	sort.Strings(names)
	sums := make([][32]byte, len(names))
	stats := make([]statKey, len(names))
	p.mu.Lock()
	for i, f := range names {
		if st := p.files[f]; st != nil {
			sums[i] = st.sum
			if !named[f] {
				stats[i] = st.stat
			}
		}
	}
	p.mu.Unlock()
	// Reading and decoding touch no state: done in parallel, they make a
	// cold start of thousands of files as many times faster as there are
	// CPUs. The results are applied in path order, as before.
	reads := make([]fileRead, len(names))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(names)) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(names); i = int(next.Add(1)) - 1 {
				reads[i] = p.readFile(names[i], sums[i], stats[i])
			}
		})
	}
	wg.Wait()

	p.mu.Lock()
	defer p.mu.Unlock()
	// A rescanned directory's flag is what the scan found; a named file
	// can only add one.
	for d := range p.linked {
		for dir := range scanned {
			if d == dir || strings.HasPrefix(d, dir+string(filepath.Separator)) {
				delete(p.linked, d)
				break
			}
		}
	}
	for d := range linked {
		p.linked[d] = true
	}
	changed := false
	for f := range p.files {
		if found[f] {
			continue
		}
		for dir := range scanned {
			if f == dir || strings.HasPrefix(f, dir+string(filepath.Separator)) {
				p.remove(f)
				changed = true
				p.log.Info("config file removed", "file", f)
				break
			}
		}
	}
	// Objects leaving their files first, so that one moved to a file
	// applied before the one it left keeps its generation.
	for i, f := range names {
		if st, r := p.files[f], reads[i]; st != nil && !r.unchanged && r.readErr == nil && len(r.errs) == 0 {
			p.release(st, r.objs)
		}
	}
	for i, f := range names {
		if st := p.files[f]; reads[i].unchanged && st != nil && st.sum == sums[i] {
			st.stat = reads[i].stat
			continue
		}
		p.applyFile(f, reads[i])
		changed = true
	}
	return changed
}

// ignoredHint says what an ignored kind means for traffic, where that is
// not obvious.
func ignoredHint(apiVersion string) string {
	if strings.HasPrefix(apiVersion, "security.istio.io/") {
		// RequestAuthentication and AuthorizationPolicy are read; what
		// is left (PeerAuthentication) is mTLS between mesh workloads.
		return ": a gateway's client certificates are configured on its Gateway servers (tls.mode MUTUAL)"
	}
	return ""
}

// fileRead is one file read and decoded.
type fileRead struct {
	rel     string
	readErr error
	// unchanged: the bytes hash to the sum the file was last decoded
	// from, so nothing was decoded.
	unchanged bool
	sum       [32]byte
	stat      statKey
	objs      []resource.Object
	// contents are the objects' content hashes (see stamp), worked out
	// here, in parallel, rather than under the lock; nil for a file read
	// for the first time, which has no earlier version to compare with
	// (hashAt works them out when first needed: a cold start of 30,000
	// objects needs none).
	contents [][32]byte
	errs     []*resource.DecodeError
	ignored  []resource.Ignored
}

// readFile reads a file and decodes it, unless its bytes hash to prev.
// With prevStat set, a file whose stat is still prevStat is not read at
// all (a directory rescan after an event on another file). A write of
// the same size within the filesystem's timestamp granularity keeps the
// stat, but then an event names the file, and named files are always read.
func (p *Provider) readFile(path string, prev [32]byte, prevStat statKey) fileRead {
	rel, err := filepath.Rel(p.dir, path)
	if err != nil {
		rel = path
	}
	// Only regular files, bounded, opened without blocking: a FIFO named
	// *.yaml must not wedge every later reload, nor a symlink to
	// /dev/zero fill memory.
	before := statOf(path)
	if prevStat != (statKey{}) && before == prevStat {
		return fileRead{rel: rel, unchanged: true, sum: prev, stat: before}
	}
	p.reads.Add(1)
	data, err := fsread.Regular(path, p.opts.MaxFileSize)
	if err != nil {
		return fileRead{rel: rel, readErr: err}
	}
	sum := sha256.Sum256(data)
	if sum == prev {
		return fileRead{rel: rel, unchanged: true, sum: sum, stat: before}
	}
	p.decodes.Add(1)
	objs, errs, ignored := resource.DecodeWithIgnored(data, rel)
	var contents [][32]byte
	if len(errs) == 0 && prev != ([32]byte{}) {
		contents = make([][32]byte, len(objs))
		for i, o := range objs {
			contents[i] = contentHash(o)
		}
	}
	return fileRead{rel: rel, sum: sum, stat: before, objs: objs, contents: contents, errs: errs, ignored: ignored}
}

// applyFile records what was read from path; p.mu is held.
func (p *Provider) applyFile(path string, r fileRead) {
	rel := r.rel
	p.dirty[path] = true
	if _, known := p.files[path]; !known {
		p.structural = true
	}
	if err := r.readErr; err != nil {
		if os.IsNotExist(err) {
			p.remove(path)
			return
		}
		st := p.files[path]
		if st == nil {
			st = &fileState{}
			p.files[path] = st
		}
		st.sum, st.stat = [32]byte{}, statKey{} // decode whatever is read next
		st.errs = []*resource.DecodeError{{Source: rel, Err: err}}
		switch {
		case errors.Is(err, fsread.ErrNotRegular) && len(st.objs) == 0:
			p.log.Error(err, "skipping a config file that is not a regular file", "file", rel)
		case errors.Is(err, fsread.ErrTooLarge):
			p.log.Error(err, "config file over the size limit; its last good version (if any) keeps serving", "file", rel, "limit", p.opts.MaxFileSize)
		default:
			p.log.Error(err, "reading config file; its last good version (if any) keeps serving", "file", rel)
		}
		return
	}
	for _, ig := range r.ignored {
		p.log.Info("ignoring a kind Portico does not implement"+ignoredHint(ig.APIVersion), "file", rel, "document", ig.Document, "line", ig.Line,
			"apiVersion", ig.APIVersion, "kind", ig.Kind, "namespace", ig.Namespace, "name", ig.Name)
	}
	objs, errs := r.objs, r.errs
	st := p.files[path]
	if st == nil {
		st = &fileState{}
		p.files[path] = st
	}
	st.errs = errs
	st.sum, st.stat = r.sum, r.stat
	if len(errs) > 0 {
		for _, e := range errs {
			p.log.Error(e, "invalid document; the file's last good version keeps serving", "file", rel, "document", e.Document, "field", e.Field)
		}
		return
	}
	p.stamp(st, objs, r.contents)
	st.objs, st.contents = objs, r.contents
	p.log.V(1).Info("loaded config file", "file", rel, "objects", len(objs))
}

// Snapshot merges every file's last good objects into a Resources value.
// An object defined in two files is used from the first (by path) and the
// second is reported invalid.
func (p *Provider) Snapshot() *resource.Resources {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.removed) // what left its file and came nowhere back is gone
	if p.last != nil && !p.structural {
		if res, ok := p.patch(); ok {
			clear(p.dirty)
			return res
		}
	}
	p.merges++
	paths := make([]string, 0, len(p.files))
	n := 0
	for f, st := range p.files {
		paths = append(paths, f)
		if st != nil {
			n += len(st.objs)
		}
	}
	sort.Strings(paths)
	res := &resource.Resources{}
	// Sized up front: grown from empty, it was 11 MB of garbage at 30,000
	// objects.
	seen := make(map[resource.Key]string, n)
	var dups []resource.InvalidResource
	for _, f := range paths {
		st := p.files[f]
		rel, _ := filepath.Rel(p.dir, f)
		st.published = nil
		for _, o := range st.objs {
			key := resource.KeyOf(o)
			if prev, dup := seen[key]; dup {
				dups = append(dups, resource.InvalidResource{Key: key, Source: rel,
					Error: fmt.Sprintf("%s is also defined in %s, which is used", key, prev)})
				continue
			}
			seen[key] = rel
			st.published = append(st.published, o)
			if err := res.Add(o); err != nil {
				p.log.Error(err, "unexpected object", "file", rel)
			}
		}
	}
	res.Invalid = append(dups, p.fileErrors(paths)...)
	res.Sort()
	p.last, p.lastDups = res, dups
	// Where each object sits in its list, by identity (objects are
	// distinct pointers).
	pos := make(map[resource.Object]int32, res.Len())
	index := func(objs []resource.Object) {
		for i, o := range objs {
			pos[o] = int32(i)
		}
	}
	index(asObjects(res.Gateways))
	index(asObjects(res.VirtualServices))
	index(asObjects(res.DestinationRules))
	index(asObjects(res.ServiceEntries))
	index(asObjects(res.Services))
	index(asObjects(res.EndpointSlices))
	index(asObjects(res.Pods))
	index(asObjects(res.Secrets))
	index(asObjects(res.RequestAuthentications))
	index(asObjects(res.AuthorizationPolicies))
	index(asObjects(res.Telemetries))
	index(asObjects(res.GatewayClasses))
	index(asObjects(res.KubeGateways))
	index(asObjects(res.HTTPRoutes))
	index(asObjects(res.GRPCRoutes))
	index(asObjects(res.TLSRoutes))
	index(asObjects(res.TCPRoutes))
	index(asObjects(res.UDPRoutes))
	index(asObjects(res.ReferenceGrants))
	index(asObjects(res.BackendTLSPolicies))
	index(asObjects(res.Namespaces))
	index(asObjects(res.ConfigMaps))
	for _, f := range paths {
		st := p.files[f]
		st.pos = make([]int32, 0, len(st.published))
		for _, o := range st.published {
			st.pos = append(st.pos, pos[o])
		}
	}
	clear(p.dirty)
	p.structural = false
	return res
}

func asObjects[T resource.Object](list []T) []resource.Object {
	out := make([]resource.Object, len(list))
	for i, o := range list {
		out[i] = o
	}
	return out
}

// fileErrors lists every file's current decode errors, in path order.
// While a file fails, none of its new version is used, so every object of
// its last good version is stale: those an error names get that error,
// the others (a YAML syntax error names no object) the file's first
// error. Their statuses then say so until the file is fixed, instead of
// reverting to Accepted.
func (p *Provider) fileErrors(paths []string) []resource.InvalidResource {
	var out []resource.InvalidResource
	for _, f := range paths {
		st := p.files[f]
		if len(st.errs) == 0 {
			continue
		}
		named := map[resource.Key]bool{}
		for _, e := range st.errs {
			out = append(out, resource.InvalidResource{Key: e.Key, Source: e.Source, Error: e.Error()})
			if e.Key.Name != "" {
				named[e.Key] = true
			}
		}
		first := st.errs[0]
		for _, o := range st.objs {
			if k := resource.KeyOf(o); !named[k] {
				out = append(out, resource.InvalidResource{Key: k, Source: first.Source, Error: first.Error()})
			}
		}
	}
	return out
}

// patch derives the next snapshot from the last when the dirty files
// define exactly the objects they did (new versions of them): the objects
// are replaced where they sit, in copies of the lists they are in. It
// reports false when a full merge is needed.
func (p *Provider) patch() (*resource.Resources, bool) {
	next := *p.last
	cloned := map[listID]bool{}
	for f := range p.dirty {
		st := p.files[f]
		if st == nil {
			return nil, false
		}
		if len(st.objs) != len(st.published) {
			return nil, false
		}
		for i, o := range st.objs {
			if resource.KeyOf(o) != resource.KeyOf(st.published[i]) {
				return nil, false
			}
			if !replaceAt(&next, o, int(st.pos[i]), cloned) {
				return nil, false
			}
		}
	}
	// Only now that the patch holds: a failed one is followed by a full
	// merge, which sets them all again.
	for f := range p.dirty {
		st := p.files[f]
		copy(st.published, st.objs)
	}
	if len(next.Invalid) > 0 || p.anyErrors() {
		paths := make([]string, 0, len(p.files))
		for f := range p.files {
			paths = append(paths, f)
		}
		sort.Strings(paths)
		next.Invalid = append(append([]resource.InvalidResource(nil), p.lastDups...), p.fileErrors(paths)...)
		next.Sort()
	}
	p.last = &next
	return &next, true
}

func (p *Provider) anyErrors() bool {
	for _, st := range p.files {
		if len(st.errs) > 0 {
			return true
		}
	}
	return false
}

// listID names one list of a Resources value: the group matters, since
// Istio's Gateway and the Gateway API's Gateway share the kind name but
// not the list.
type listID struct{ group, kind string }

// replaceAt puts o at index i of its kind's list, copying the list the
// first time it is touched (the previous snapshot must not change).
func replaceAt(r *resource.Resources, o resource.Object, i int, cloned map[listID]bool) bool {
	key := resource.KeyOf(o)
	id := listID{group: key.Group, kind: key.Kind}
	ok := false
	switch v := o.(type) {
	case *networking.Gateway:
		r.Gateways, ok = put(r.Gateways, v, i, id, cloned)
	case *networking.VirtualService:
		r.VirtualServices, ok = put(r.VirtualServices, v, i, id, cloned)
	case *networking.DestinationRule:
		r.DestinationRules, ok = put(r.DestinationRules, v, i, id, cloned)
	case *networking.ServiceEntry:
		r.ServiceEntries, ok = put(r.ServiceEntries, v, i, id, cloned)
	case *corev1.Service:
		r.Services, ok = put(r.Services, v, i, id, cloned)
	case *discoveryv1.EndpointSlice:
		r.EndpointSlices, ok = put(r.EndpointSlices, v, i, id, cloned)
	case *metav1.PartialObjectMetadata:
		r.Pods, ok = put(r.Pods, v, i, id, cloned)
	case *corev1.Secret:
		r.Secrets, ok = put(r.Secrets, v, i, id, cloned)
	case *security.RequestAuthentication:
		r.RequestAuthentications, ok = put(r.RequestAuthentications, v, i, id, cloned)
	case *security.AuthorizationPolicy:
		r.AuthorizationPolicies, ok = put(r.AuthorizationPolicies, v, i, id, cloned)
	case *telemetry.Telemetry:
		r.Telemetries, ok = put(r.Telemetries, v, i, id, cloned)
	case *gwv1.GatewayClass:
		r.GatewayClasses, ok = put(r.GatewayClasses, v, i, id, cloned)
	case *gwv1.Gateway:
		r.KubeGateways, ok = put(r.KubeGateways, v, i, id, cloned)
	case *gwv1.HTTPRoute:
		r.HTTPRoutes, ok = put(r.HTTPRoutes, v, i, id, cloned)
	case *gwv1.GRPCRoute:
		r.GRPCRoutes, ok = put(r.GRPCRoutes, v, i, id, cloned)
	case *gwv1.TLSRoute:
		r.TLSRoutes, ok = put(r.TLSRoutes, v, i, id, cloned)
	case *gwv1.TCPRoute:
		r.TCPRoutes, ok = put(r.TCPRoutes, v, i, id, cloned)
	case *gwv1.UDPRoute:
		r.UDPRoutes, ok = put(r.UDPRoutes, v, i, id, cloned)
	case *gwv1.ReferenceGrant:
		r.ReferenceGrants, ok = put(r.ReferenceGrants, v, i, id, cloned)
	case *gwv1.BackendTLSPolicy:
		r.BackendTLSPolicies, ok = put(r.BackendTLSPolicies, v, i, id, cloned)
	case *corev1.Namespace:
		r.Namespaces, ok = put(r.Namespaces, v, i, id, cloned)
	case *corev1.ConfigMap:
		r.ConfigMaps, ok = put(r.ConfigMaps, v, i, id, cloned)
	}
	return ok
}

func put[T resource.Object](list []T, v T, i int, id listID, cloned map[listID]bool) ([]T, bool) {
	if i >= len(list) || resource.KeyOf(list[i]) != resource.KeyOf(v) {
		return list, false
	}
	if !cloned[id] {
		list = append([]T(nil), list...)
		cloned[id] = true
	}
	list[i] = v
	return list, true
}

// stamp gives freshly decoded objects, the new version of st's, a
// generation that grows when their content changes, as the API server
// would, so status can report observedGeneration: an object continues
// its previous version in the same file, or one that left another file
// since the last snapshot (moved), and starts at 1 otherwise. Objects are
// stamped before they are ever published and never modified afterwards,
// so a published object's generation is its own.
func (p *Provider) stamp(st *fileState, objs []resource.Object, contents [][32]byte) {
	old := st.objs
	var byKey map[resource.Key]int
	if len(old) > 16 {
		byKey = make(map[resource.Key]int, len(old))
		for j, o := range old {
			byKey[resource.KeyOf(o)] = j
		}
	}
	find := func(i int, key resource.Key) int {
		if i < len(old) && resource.KeyOf(old[i]) == key {
			return i // the usual case: the same objects in the same order
		}
		if byKey != nil {
			if j, ok := byKey[key]; ok {
				return j
			}
			return -1
		}
		for j, o := range old {
			if resource.KeyOf(o) == key {
				return j
			}
		}
		return -1
	}
	for i, o := range objs {
		key := resource.KeyOf(o)
		prev, found := generation{}, false
		if j := find(i, key); j >= 0 {
			prev, found = generation{hash: hashAt(st.contents, old, j), gen: old[j].GetGeneration()}, true
		} else if g, ok := p.removed[key]; ok {
			prev, found = g, true
			delete(p.removed, key)
		}
		switch {
		case !found:
			o.SetGeneration(1)
		case prev.hash != hashAt(contents, objs, i):
			o.SetGeneration(prev.gen + 1)
		default:
			o.SetGeneration(prev.gen)
		}
	}
}

// release records the generations of st's objects that its new version
// objs no longer has (reload calls it for every file before stamping any).
func (p *Provider) release(st *fileState, objs []resource.Object) {
	keep := make(map[resource.Key]bool, len(objs))
	for _, o := range objs {
		keep[resource.KeyOf(o)] = true
	}
	for j, o := range st.objs {
		if key := resource.KeyOf(o); !keep[key] {
			p.removed[key] = generation{hash: hashAt(st.contents, st.objs, j), gen: o.GetGeneration()}
		}
	}
}

// hashAt is objs[i]'s content hash: from contents, parallel to objs, when
// they were worked out, else now.
func hashAt(contents [][32]byte, objs []resource.Object, i int) [32]byte {
	if contents != nil {
		return contents[i]
	}
	return contentHash(objs[i])
}

// remove forgets a file that is gone; its objects' generations are kept
// until the next snapshot, in case they moved.
func (p *Provider) remove(path string) {
	if st := p.files[path]; st != nil {
		for j, o := range st.objs {
			p.removed[resource.KeyOf(o)] = generation{hash: hashAt(st.contents, st.objs, j), gen: o.GetGeneration()}
		}
	}
	delete(p.files, path)
	p.structural = true
}

// contentHash identifies an object's content, for stamp. Istio objects
// are hashed as their metadata's and their spec's deterministic protobuf
// encodings: their JSON goes through jsonpb, which cost as much as
// decoding them. Kubernetes kinds have generated protobuf encoders too
// (maps in key order), several times faster than printing them as JSON.
func contentHash(o resource.Object) [32]byte {
	if o.GetGeneration() != 0 {
		// The generation is stamped on the object (or written by hand),
		// not content: hashed on a shallow copy without it, a published
		// object (which must not be modified) hashes as it decoded.
		v := reflect.ValueOf(o).Elem()
		c := reflect.New(v.Type())
		c.Elem().Set(v)
		o = c.Interface().(resource.Object)
		o.SetGeneration(0)
	}
	var spec proto.Message
	var meta *metav1.ObjectMeta
	switch v := o.(type) {
	case *networking.Gateway:
		spec, meta = &v.Spec, &v.ObjectMeta
	case *networking.VirtualService:
		spec, meta = &v.Spec, &v.ObjectMeta
	case *networking.DestinationRule:
		spec, meta = &v.Spec, &v.ObjectMeta
	case *networking.ServiceEntry:
		spec, meta = &v.Spec, &v.ObjectMeta
	case *security.RequestAuthentication:
		spec, meta = &v.Spec, &v.ObjectMeta
	case *security.AuthorizationPolicy:
		spec, meta = &v.Spec, &v.ObjectMeta
	default:
		h := sha256.New()
		if m, ok := o.(gogoMarshaler); ok {
			if b, err := m.Marshal(); err == nil {
				fmt.Fprintf(h, "%T\x00", o)
				h.Write(b)
				var sum [32]byte
				h.Sum(sum[:0])
				return sum
			}
		}
		b, _ := json.Marshal(o)
		return sha256.Sum256(b)
	}
	h := sha256.New()
	mb, _ := meta.Marshal()
	sb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(spec)
	fmt.Fprintf(h, "%s\x00%d\x00", o.GetObjectKind().GroupVersionKind(), len(mb))
	h.Write(mb)
	h.Write(sb)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// gogoMarshaler is the generated protobuf encoder of Kubernetes API types.
type gogoMarshaler interface{ Marshal() ([]byte, error) }
