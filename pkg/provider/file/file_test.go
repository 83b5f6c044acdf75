package file

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/resource"
)

func vs(name, host string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s}
spec:
  hosts: [%s]
  gateways: [gw]
  http: [{route: [{destination: {host: web}}]}]
`, name, host)
}

// watch runs a provider and records every snapshot it publishes.
type watch struct {
	mu    sync.Mutex
	snaps []*resource.Resources
	cond  chan struct{}
}

func startProvider(t *testing.T, dir string) *watch {
	t.Helper()
	return startProviderWith(t, dir, Options{Holdoff: 30 * time.Millisecond, MaxDelay: 200 * time.Millisecond})
}

func startProviderWith(t *testing.T, dir string, opts Options) *watch {
	t.Helper()
	w := &watch{cond: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	p := New(dir, logr.Discard(), opts)
	done := make(chan error, 1)
	go func() {
		done <- p.Run(ctx, func(r *resource.Resources) {
			w.mu.Lock()
			w.snaps = append(w.snaps, r)
			w.mu.Unlock()
			select {
			case w.cond <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	w.await(t, "initial snapshot", func(*resource.Resources) bool { return true })
	return w
}

func (w *watch) latest() *resource.Resources {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.snaps) == 0 {
		return nil
	}
	return w.snaps[len(w.snaps)-1]
}

func (w *watch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.snaps)
}

// await waits (with a deadline) until the latest snapshot satisfies ok.
func (w *watch) await(t *testing.T, what string, ok func(*resource.Resources) bool) *resource.Resources {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if r := w.latest(); r != nil && ok(r) {
			return r
		}
		select {
		case <-w.cond:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; latest: %s", what, describe(w.latest()))
		}
	}
}

func describe(r *resource.Resources) string {
	if r == nil {
		return "none"
	}
	var parts []string
	for _, v := range r.VirtualServices {
		parts = append(parts, fmt.Sprintf("%s=%v@%d", v.Name, v.Spec.Hosts, v.Generation))
	}
	for _, i := range r.Invalid {
		parts = append(parts, "invalid:"+i.Error)
	}
	return strings.Join(parts, "; ")
}

func hostOf(r *resource.Resources, name string) string {
	for _, v := range r.VirtualServices {
		if v.Name == name && len(v.Spec.Hosts) > 0 {
			return v.Spec.Hosts[0]
		}
	}
	return ""
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestInitialLoadRecursiveAndMultiDocument(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), vs("a", "a.example.com")+"---\n"+vs("b", "b.example.com"))
	write(t, filepath.Join(dir, "team", "nested", "c.yml"), vs("c", "c.example.com"))
	write(t, filepath.Join(dir, "README.md"), "not config")
	write(t, filepath.Join(dir, ".hidden", "d.yaml"), vs("d", "d.example.com"))
	w := startProvider(t, dir)
	r := w.latest()
	if got := describe(r); len(r.VirtualServices) != 3 || hostOf(r, "c") != "c.example.com" {
		t.Fatalf("loaded %s", got)
	}
	for _, v := range r.VirtualServices {
		if v.Generation != 1 || v.Namespace != "default" {
			t.Errorf("%s: generation %d namespace %q", v.Name, v.Generation, v.Namespace)
		}
	}
}

func TestEditorRenameOverAndGenerations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vs.yaml")
	write(t, path, vs("a", "one.example.com"))
	w := startProvider(t, dir)

	// Like vim or an IDE: write a temporary file, rename it over.
	tmp := filepath.Join(dir, ".vs.yaml.swp")
	write(t, tmp, vs("a", "two.example.com"))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	r := w.await(t, "renamed-over content", func(r *resource.Resources) bool { return hostOf(r, "a") == "two.example.com" })
	if g := r.VirtualServices[0].Generation; g != 2 {
		t.Errorf("generation after a change = %d, want 2", g)
	}
	// Touching the file without changing it keeps the generation.
	write(t, path, vs("a", "two.example.com")+"\n# a comment\n")
	before := w.count()
	w.await(t, "reload after touch", func(*resource.Resources) bool { return w.count() > before })
	if g := w.latest().VirtualServices[0].Generation; g != 2 {
		t.Errorf("generation after a no-op edit = %d, want 2", g)
	}
}

// TestAtomicRenameIsReadAtOnce: a file renamed into place is complete
// when its event comes, so it is read without waiting for the holdoff
// (here an hour); writes in place still wait for it (renamedInto's table).
func TestAtomicRenameIsReadAtOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vs.yaml")
	write(t, path, vs("a", "one.example.com"))
	w := startProviderWith(t, dir, Options{Holdoff: time.Hour, MaxDelay: time.Hour})
	tmp := filepath.Join(dir, ".vs.yaml.tmp")
	write(t, tmp, vs("a", "two.example.com"))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	w.await(t, "the renamed file, before the holdoff", func(r *resource.Resources) bool { return hostOf(r, "a") == "two.example.com" })
}

func TestRenamedInto(t *testing.T) {
	ev := func(op fsnotify.Op, name string) fsnotify.Event { return fsnotify.Event{Op: op, Name: name} }
	for _, c := range []struct {
		name     string
		prev, ev fsnotify.Event
		want     bool
	}{
		{"dot-temp renamed over", ev(fsnotify.Rename, "d/.vs.yaml.tmp"), ev(fsnotify.Create, "d/vs.yaml"), true},
		{"visible file renamed", ev(fsnotify.Rename, "d/a.yaml"), ev(fsnotify.Create, "d/b.yaml"), true},
		{"created, not renamed", ev(fsnotify.Create, "d/.vs.yaml.tmp"), ev(fsnotify.Create, "d/vs.yaml"), false},
		{"written in place", ev(fsnotify.Rename, "d/.vs.yaml.tmp"), ev(fsnotify.Write, "d/vs.yaml"), false},
		{"created and written", ev(fsnotify.Rename, "d/.x"), ev(fsnotify.Create|fsnotify.Write, "d/vs.yaml"), false},
		{"moved in from elsewhere", ev(fsnotify.Rename, "other/.vs.yaml.tmp"), ev(fsnotify.Create, "d/vs.yaml"), false},
		{"renamed onto a hidden name", ev(fsnotify.Rename, "d/..data_tmp"), ev(fsnotify.Create, "d/..data"), false},
		{"renamed away, then created again", ev(fsnotify.Rename, "d/vs.yaml"), ev(fsnotify.Create, "d/vs.yaml"), false},
		{"nothing before", fsnotify.Event{}, ev(fsnotify.Create, "d/vs.yaml"), false},
	} {
		if got := renamedInto(c.prev, c.ev); got != c.want {
			t.Errorf("%s: renamedInto = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestPartialWriteKeepsLastGoodVersion(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vs.yaml")
	full := vs("a", "good.example.com")
	write(t, path, full)
	w := startProvider(t, dir)

	// A writer that has written only part of the file.
	write(t, path, full[:len(full)-25])
	r := w.await(t, "the partial write reported", func(r *resource.Resources) bool { return len(r.Invalid) > 0 })
	if hostOf(r, "a") != "good.example.com" {
		t.Fatalf("last good version not kept: %s", describe(r))
	}
	if e := r.Invalid[0]; e.Source != "vs.yaml" || !strings.Contains(e.Error, "vs.yaml:") || !strings.Contains(e.Error, ": document 1") {
		t.Errorf("error should name file and document: %+v", e)
	}
	// A document with a typo names the field.
	write(t, path, strings.Replace(vs("a", "typo.example.com"), "hosts:", "hostz:", 1))
	r = w.await(t, "the typo reported", func(r *resource.Resources) bool {
		return len(r.Invalid) > 0 && strings.Contains(r.Invalid[0].Error, "spec.hostz")
	})
	if r.Invalid[0].Key.Name != "a" || hostOf(r, "a") != "good.example.com" {
		t.Fatalf("typo: %s", describe(r))
	}
	// The writer finishes: the new version replaces the old one.
	write(t, path, vs("a", "new.example.com"))
	w.await(t, "the completed write", func(r *resource.Resources) bool { return hostOf(r, "a") == "new.example.com" && len(r.Invalid) == 0 })
}

// TestKubernetesConfigMapSwap reproduces how the kubelet updates a mounted
// ConfigMap: files are symlinks into "..data", which is itself a symlink
// swapped atomically to a new timestamped directory.
func TestKubernetesConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	mkVersion := func(name, host string) {
		write(t, filepath.Join(dir, name, "vs.yaml"), vs("a", host))
	}
	mkVersion("..2026_01_01_00_00_00.000000001", "v1.example.com")
	if err := os.Symlink("..2026_01_01_00_00_00.000000001", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/vs.yaml", filepath.Join(dir, "vs.yaml")); err != nil {
		t.Fatal(err)
	}
	w := startProvider(t, dir)
	if hostOf(w.latest(), "a") != "v1.example.com" {
		t.Fatalf("initial: %s", describe(w.latest()))
	}
	mkVersion("..2026_01_01_00_01_00.000000002", "v2.example.com")
	if err := os.Symlink("..2026_01_01_00_01_00.000000002", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.000000001"))
	w.await(t, "the swapped version", func(r *resource.Resources) bool { return hostOf(r, "a") == "v2.example.com" })
	if n := len(w.latest().VirtualServices); n != 1 {
		t.Errorf("the hidden versioned directories must not be read as config: %d VirtualServices", n)
	}
}

func TestRemovalAndNewDirectories(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), vs("a", "a.example.com"))
	write(t, filepath.Join(dir, "sub", "b.yaml"), vs("b", "b.example.com"))
	w := startProvider(t, dir)

	write(t, filepath.Join(dir, "new", "deeper", "c.yaml"), vs("c", "c.example.com"))
	w.await(t, "a file in a new directory", func(r *resource.Resources) bool { return hostOf(r, "c") != "" })
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	w.await(t, "a removed file's objects gone", func(r *resource.Resources) bool { return hostOf(r, "a") == "" })
	if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	r := w.await(t, "a removed directory's objects gone", func(r *resource.Resources) bool { return hostOf(r, "b") == "" })
	if hostOf(r, "c") == "" {
		t.Fatal("unrelated objects were lost")
	}
}

func TestDuplicateObjectsReported(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "1.yaml"), vs("a", "first.example.com"))
	write(t, filepath.Join(dir, "2.yaml"), vs("a", "second.example.com"))
	w := startProvider(t, dir)
	r := w.latest()
	if hostOf(r, "a") != "first.example.com" || len(r.Invalid) != 1 || !strings.Contains(r.Invalid[0].Error, "also defined in 1.yaml") {
		t.Fatalf("duplicates: %s", describe(r))
	}
}

func TestBurstsAreBatched(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vs.yaml")
	write(t, path, vs("a", "h0.example.com"))
	w := startProvider(t, dir)
	before := w.count()
	const writes = 30
	for i := 1; i <= writes; i++ {
		write(t, path, vs("a", fmt.Sprintf("h%d.example.com", i)))
		time.Sleep(5 * time.Millisecond) // a writer's pace, not synchronisation
	}
	w.await(t, "the last write", func(r *resource.Resources) bool { return hostOf(r, "a") == fmt.Sprintf("h%d.example.com", writes) })
	if n := w.count() - before; n >= writes/2 {
		t.Errorf("%d writes caused %d reloads; events are not batched", writes, n)
	}
}

// TestPatchedSnapshotEqualsFullMerge: after edits that keep a file's
// objects (the snapshot is patched in place), that add an object, that
// break a document or define an object twice (full merge), the snapshot
// always equals what a fresh provider reading the directory produces.
func TestPatchedSnapshotEqualsFullMerge(t *testing.T) {
	dir := t.TempDir()
	vs := func(name, host string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: " + name + ", namespace: ns}\nspec:\n  hosts: [" + host + "]\n  gateways: [gw]\n  http: [{route: [{destination: {host: a}}]}]\n"
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range []string{"c", "a", "b"} {
		write(n+".yaml", vs(n, n+".example.com")+"---\n"+vs(n+"-2", fmt.Sprint(i)+".example.com"))
	}
	p := New(dir, logr.Discard(), Options{})
	p.reload(nil)
	p.Snapshot()
	// Generations count edits since the provider started, so a fresh
	// provider has its own; everything else must be equal.
	generation := regexp.MustCompile(`(?m)^\s*generation: \d+\n`)
	render := func(r *resource.Resources) string {
		b, err := yaml.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return generation.ReplaceAllString(string(b), "")
	}
	fresh := func() string {
		q := New(dir, logr.Discard(), Options{})
		q.reload(nil)
		return render(q.Snapshot())
	}
	steps := []struct {
		name, file, content string
		patched             bool
	}{
		{"same objects, new content", "b.yaml", vs("b", "new.example.com") + "---\n" + vs("b-2", "x.example.com"), true},
		{"an object added", "a.yaml", vs("a", "a.example.com") + "---\n" + vs("a-2", "0.example.com") + "---\n" + vs("a-3", "z.example.com"), false},
		// (A fresh provider has no last good version of c.yaml: checked below.)
		{"a broken document", "c.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: c, namespace: ns}\nspec: {hosts: 3}\n", true},
		{"fixed again", "c.yaml", vs("c", "c2.example.com") + "---\n" + vs("c-2", "2.example.com"), true},
		{"an object defined twice", "d.yaml", vs("b", "dup.example.com"), false},
		{"the shadowed copy edited", "d.yaml", vs("b", "dup2.example.com"), false},
	}
	for _, step := range steps {
		write(step.file, step.content)
		merges := p.merges
		prev := p.last
		p.reload([]string{filepath.Join(dir, step.file)})
		snap := p.Snapshot()
		if step.name == "a broken document" {
			// The last good objects stay; the error is reported, on
			// every object of the file (none of its new version is used).
			kept := *snap
			kept.Invalid = prev.Invalid
			if render(&kept) != render(prev) || len(snap.Invalid) != 2 || snap.Invalid[0].Key.Name != "c" || snap.Invalid[1].Key.Name != "c-2" ||
				!strings.Contains(snap.Invalid[0].Error, "spec.hosts") || !strings.Contains(snap.Invalid[1].Error, "spec.hosts") {
				t.Errorf("%s: %v", step.name, snap.Invalid)
			}
		} else if got, want := render(snap), fresh(); got != want {
			t.Errorf("%s: snapshot differs from a full merge:\n%s\nwant:\n%s", step.name, got, want)
		}
		if patched := p.merges == merges; patched != step.patched {
			t.Errorf("%s: patched = %v, want %v", step.name, patched, step.patched)
		}
		// What the provider remembers of the snapshot is the snapshot's
		// own objects, not a version it replaced (which it would keep
		// alive).
		inSnapshot := map[resource.Object]bool{}
		for _, o := range snap.All() {
			inSnapshot[o] = true
		}
		for f, st := range p.files {
			for _, o := range st.published {
				if !inSnapshot[o] {
					t.Errorf("%s: %s remembers %s of an older version", step.name, f, resource.KeyOf(o))
				}
			}
		}
	}
}

// TestRescansDecodeOnlyChangedFilesAndEqualAFreshLoad drives the provider
// through random edit sequences — files rewritten with new content, with
// the same bytes, broken, fixed, removed, added, and the whole directory
// rescanned as an event on a hidden name (an atomic write through a
// dot-temp file) causes — and after every step checks that the snapshot
// holds the same objects as a fresh provider reading each file's last
// good version, that only files whose bytes changed were decoded, and
// that a rescan read only the file the event named.
func TestRescansDecodeOnlyChangedFilesAndEqualAFreshLoad(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	dir, mirror := t.TempDir(), t.TempDir()
	vs := func(name, host string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: " + name + ", namespace: ns}\nspec:\n  hosts: [" + host + "]\n  gateways: [gw]\n  http: [{route: [{destination: {host: a}}]}]\n"
	}
	files := []string{"a.yaml", "b.yaml", "sub/c.yaml", "sub/d.yaml", "e.yaml"}
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	content := map[string]string{}  // what is on disk now
	lastGood := map[string]string{} // what the provider should serve
	write := func(f, c string) {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		content[f] = c
	}
	render := func(r *resource.Resources) string {
		kept := *r
		kept.Invalid = nil
		b, err := yaml.Marshal(&kept)
		if err != nil {
			t.Fatal(err)
		}
		return regexp.MustCompile(`(?m)^\s*generation: \d+\n`).ReplaceAllString(string(b), "")
	}
	fresh := func() string {
		if err := os.RemoveAll(mirror); err != nil {
			t.Fatal(err)
		}
		for f, c := range lastGood {
			if _, exists := content[f]; !exists {
				continue
			}
			path := filepath.Join(mirror, f)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		q := New(mirror, logr.Discard(), Options{})
		q.reload(nil)
		return render(q.Snapshot())
	}
	for i, f := range files[:3] {
		c := vs(fmt.Sprintf("o%d", i), fmt.Sprintf("h%d.example.com", i))
		write(f, c)
		lastGood[f] = c
	}
	p := New(dir, logr.Discard(), Options{})
	p.reload(nil)
	p.Snapshot()
	for step := range 300 {
		f := files[rng.IntN(len(files))]
		name := strings.NewReplacer("/", "-", ".yaml", "").Replace(f)
		var what string
		changed := map[string]bool{}
		switch op := rng.IntN(6); {
		case op == 0: // same bytes again
			what = "rewrite same bytes"
			if c, ok := content[f]; ok {
				write(f, c)
			}
		case op == 1: // new version of the same objects, or one object more
			what = "new content"
			c := vs(name, fmt.Sprintf("x%d.example.com", step))
			if rng.IntN(2) == 0 {
				c += "---\n" + vs(name+"-extra", fmt.Sprintf("y%d.example.com", step))
			}
			write(f, c)
			lastGood[f] = c
			changed[f] = true
		case op == 2: // broken: the last good version keeps serving
			what = "broken"
			write(f, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: "+name+", namespace: ns}\nspec: {hosts: 3}\n")
			changed[f] = true
		case op == 3: // removed
			what = "removed"
			if _, ok := content[f]; ok {
				if err := os.Remove(filepath.Join(dir, f)); err != nil {
					t.Fatal(err)
				}
				delete(content, f)
				delete(lastGood, f)
			}
		default: // an object moved to another file (a duplicate for a while)
			what = "object shared"
			c := vs("shared", fmt.Sprintf("s%d.example.com", step))
			write(f, c)
			lastGood[f] = c
			changed[f] = true
		}
		// The event names the file; half the time an event on a hidden
		// name (an atomic write's temporary file) also rescans the tree.
		paths := []string{filepath.Join(dir, f)}
		if rng.IntN(2) == 0 {
			paths = append(paths, dir)
		}
		before, readBefore := p.decodes.Load(), p.reads.Load()
		p.reload(paths)
		snap := p.Snapshot()
		if got, want := render(snap), fresh(); got != want {
			t.Fatalf("step %d (%s %s): snapshot differs from a fresh load of the last good files:\n%s\nwant:\n%s", step, what, f, got, want)
		}
		if n := p.decodes.Load() - before; n > int64(len(changed)) {
			t.Fatalf("step %d (%s %s): %d files decoded, want at most %d (only changed bytes are decoded)", step, what, f, n, len(changed))
		}
		if n := p.reads.Load() - readBefore; n > 1 {
			t.Fatalf("step %d (%s %s): %d files read, want at most the one named (a rescan reads only files whose stat changed)", step, what, f, n)
		}
	}
}

// TestContentHashFollowsContent checks contentHash for every way it
// hashes: the same content decoded again (labels in another order) hashes
// the same, any change to metadata or spec hashes differently.
func TestContentHashFollowsContent(t *testing.T) {
	base := map[string]string{
		"Service":        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: ns, labels: {x: '1', y: '2'}}\nspec:\n  selector: {app: a}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
		"EndpointSlice":  "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-x, namespace: ns, labels: {kubernetes.io/service-name: a, y: '2'}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n- addresses: [10.0.0.1]\n",
		"Pod":            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: ns, labels: {app: a, y: '2'}}\nspec: {containers: [{name: c, image: i}]}\n",
		"VirtualService": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: ns, labels: {x: '1', y: '2'}}\nspec:\n  hosts: [a.example.com]\n  http: [{route: [{destination: {host: a}}]}]\n",
	}
	reordered := map[string]string{
		"Service":        strings.Replace(base["Service"], "labels: {x: '1', y: '2'}", "labels: {y: '2', x: '1'}", 1),
		"EndpointSlice":  strings.Replace(base["EndpointSlice"], "{kubernetes.io/service-name: a, y: '2'}", "{y: '2', kubernetes.io/service-name: a}", 1),
		"Pod":            strings.Replace(base["Pod"], "{app: a, y: '2'}", "{y: '2', app: a}", 1),
		"VirtualService": strings.Replace(base["VirtualService"], "labels: {x: '1', y: '2'}", "labels: {y: '2', x: '1'}", 1),
	}
	changed := map[string][]string{
		"Service":        {strings.Replace(base["Service"], "port: 80,", "port: 81,", 1), strings.Replace(base["Service"], "y: '2'", "y: '3'", 1)},
		"EndpointSlice":  {strings.Replace(base["EndpointSlice"], "10.0.0.1", "10.0.0.2", 1), strings.Replace(base["EndpointSlice"], "y: '2'", "y: '3'", 1)},
		"Pod":            {strings.Replace(base["Pod"], "namespace: ns,", "namespace: ns, annotations: {z: '1'},", 1), strings.Replace(base["Pod"], "y: '2'", "y: '3'", 1)},
		"VirtualService": {strings.Replace(base["VirtualService"], "a.example.com", "b.example.com", 1), strings.Replace(base["VirtualService"], "y: '2'", "y: '3'", 1)},
	}
	hash := func(kind, doc string) [32]byte {
		objs, errs := resource.Decode([]byte(doc), kind)
		if len(errs) > 0 || len(objs) != 1 {
			t.Fatalf("%s: %d objects, errors %v", kind, len(objs), errs)
		}
		return contentHash(objs[0])
	}
	for kind, doc := range base {
		h := hash(kind, doc)
		if again := hash(kind, doc); again != h {
			t.Errorf("%s: the same document hashes differently", kind)
		}
		if r := hash(kind, reordered[kind]); r != h {
			t.Errorf("%s: reordered labels hash differently", kind)
		}
		for i, c := range changed[kind] {
			if c == doc {
				t.Fatalf("%s: change %d changes nothing", kind, i)
			}
			if hash(kind, c) == h {
				t.Errorf("%s: change %d hashes the same", kind, i)
			}
		}
	}
}

// TestGenerationsFollowObjectsAcrossFiles: an object's generation grows
// with each change of its content, in its file or moved to another
// (even in a file read before the one it left), and starts again at 1
// when it is re-created after a snapshot without it. Files of many
// objects, reordered, keep every unchanged object's generation.
func TestGenerationsFollowObjectsAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	vs := func(name, host string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: " + name + ", namespace: ns}\nspec:\n  hosts: [" + host + "]\n  http: [{route: [{destination: {host: a}}]}]\n"
	}
	p := New(dir, logr.Discard(), Options{})
	p.reload(nil)
	p.Snapshot()
	type gens map[string]int64
	step := func(what string, files map[string]string, want gens) {
		t.Helper()
		var paths []string
		for name, content := range files {
			path := filepath.Join(dir, name)
			paths = append(paths, path)
			if content == "" {
				os.Remove(path)
			} else if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		p.reload(paths)
		got := gens{}
		snap := p.Snapshot()
		if len(snap.Invalid) > 0 {
			t.Fatalf("%s: %v", what, snap.Invalid)
		}
		for _, v := range snap.VirtualServices {
			got[v.Name] = v.Generation
		}
		for name, g := range want {
			if got[name] != g {
				t.Errorf("%s: %s has generation %d, want %d (all: %v)", what, name, got[name], g, got)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: generations %v, want %v", what, got, want)
		}
	}
	step("created", map[string]string{"b.yaml": vs("vx", "one") + "---\n" + vs("vy", "vy.example.com")}, gens{"vx": 1, "vy": 1})
	step("changed", map[string]string{"b.yaml": vs("vx", "two") + "---\n" + vs("vy", "vy.example.com")}, gens{"vx": 2, "vy": 1})
	step("rewritten unchanged", map[string]string{"b.yaml": vs("vy", "vy.example.com") + "---\n" + vs("vx", "two")}, gens{"vx": 2, "vy": 1})
	step("moved to a file read first, changed", map[string]string{"b.yaml": vs("vy", "vy.example.com"), "a.yaml": vs("vx", "three")}, gens{"vx": 3, "vy": 1})
	step("moved back unchanged, its file removed", map[string]string{"a.yaml": "", "c.yaml": vs("vx", "three")}, gens{"vx": 3, "vy": 1})
	step("deleted", map[string]string{"c.yaml": ""}, gens{"vy": 1})
	step("re-created", map[string]string{"c.yaml": vs("vx", "three")}, gens{"vx": 1, "vy": 1})

	var many, reordered strings.Builder
	want := gens{"vx": 1, "vy": 1}
	for i := range 40 {
		fmt.Fprintf(&many, "---\n%s", vs(fmt.Sprint("m", i), "m"))
		want[fmt.Sprint("m", i)] = 1
	}
	step("a file of many", map[string]string{"m.yaml": many.String()}, want)
	for i := 39; i >= 0; i-- {
		host := "m"
		if i == 7 {
			host = "changed"
		}
		fmt.Fprintf(&reordered, "---\n%s", vs(fmt.Sprint("m", i), host))
	}
	want["m7"] = 2
	step("a file of many, reordered, one changed", map[string]string{"m.yaml": reordered.String()}, want)
}
