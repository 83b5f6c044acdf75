package file

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/resource"
)

// TestRandomFileOperationsThroughTheWatcher drives a running provider (the
// real fsnotify loop) through random sequences of what happens to config
// directories — in-place writes, atomic writes through a dot-prefixed
// temporary file in the directory and through one outside it, the same
// bytes written again, deletes, and Kubernetes' ConfigMap "..data"
// symlink swaps that add, change and drop keys — and after every step
// waits (with a deadline) until the published snapshot equals a fresh
// provider's full decode of the directory. It also checks that the
// steps cost decodes of what changed, not of the directory: an event on
// a hidden name (the temporary file, ..data) rescans the directory, and
// unchanged files must not be decoded again.
func TestRandomFileOperationsThroughTheWatcher(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	dir, outside := t.TempDir(), t.TempDir()
	plain := []string{"a.yaml", "b.yaml", "c.yaml", "sub/d.yaml", "sub/e.yaml", "sub/f.yaml"}
	cmKeys := []string{"cm-a.yaml", "cm-b.yaml", "cm-c.yaml"}
	cm := filepath.Join(dir, "cm")
	rev := 0
	content := func(name string) string {
		rev++
		base := regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(name, "-")
		c := vs(base, fmt.Sprintf("r%d.example.com", rev))
		if rng.IntN(3) == 0 {
			c += "---\n" + vs(base+"-extra", fmt.Sprintf("x%d.example.com", rev))
		}
		return c
	}
	for _, f := range plain[:4] {
		write(t, filepath.Join(dir, f), content(f))
	}
	// A ConfigMap volume as the kubelet lays it out: versioned hidden
	// directories, ..data pointing at the current one, and one symlink
	// per key through ..data. linked is the same done by some other tool
	// with hidden names that do not start with "..": events on them must
	// rescan too, because the directory's config files are symlinks.
	type volume struct {
		dir, versions, data, tmp string
		version                  int
		files                    map[string]string
	}
	cmVol := &volume{dir: cm, versions: "..2026_11_28_00_00_00.%09d", data: "..data", tmp: "..data_tmp", files: map[string]string{}}
	linked := filepath.Join(dir, "linked")
	linkedVol := &volume{dir: linked, versions: ".v%d", data: ".current", tmp: ".next", files: map[string]string{}}
	swap := func(v *volume, keys map[string]string) {
		v.version++
		ts := fmt.Sprintf(v.versions, v.version)
		for k, c := range keys {
			write(t, filepath.Join(v.dir, ts, k), c)
		}
		old, _ := os.Readlink(filepath.Join(v.dir, v.data))
		if err := os.Symlink(ts, filepath.Join(v.dir, v.tmp)); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(v.dir, v.tmp), filepath.Join(v.dir, v.data)); err != nil {
			t.Fatal(err)
		}
		for k := range keys {
			if _, had := v.files[k]; !had {
				if err := os.Symlink(filepath.Join(v.data, k), filepath.Join(v.dir, k)); err != nil {
					t.Fatal(err)
				}
			}
		}
		for k := range v.files {
			if _, keep := keys[k]; !keep {
				if err := os.Remove(filepath.Join(v.dir, k)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if old != "" {
			if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
				t.Fatal(err)
			}
		}
		v.files = keys
	}
	swap(cmVol, map[string]string{"cm-a.yaml": content("cm-a.yaml")})
	swap(linkedVol, map[string]string{"cm-b.yaml": content("cm-b.yaml")})

	p := New(dir, logr.Discard(), Options{Holdoff: 20 * time.Millisecond, MaxDelay: 200 * time.Millisecond})
	w := &watch{cond: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
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
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	render := func(r *resource.Resources) string {
		if r == nil {
			return "none"
		}
		b, err := yaml.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return regexp.MustCompile(`(?m)^\s*generation: \d+\n`).ReplaceAllString(string(b), "")
	}
	fresh := func() string {
		q := New(dir, logr.Discard(), Options{})
		q.reload(nil)
		return render(q.Snapshot())
	}
	converge := func(step int, what string) {
		want := fresh()
		deadline := time.Now().Add(10 * time.Second)
		for render(w.latest()) != want {
			if time.Now().After(deadline) {
				t.Fatalf("step %d (%s): the provider's snapshot never became a fresh decode of the directory:\n%s\nwant:\n%s", step, what, render(w.latest()), want)
			}
			select {
			case <-w.cond:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	converge(-1, "initial load")

	exists := func(f string) bool { _, err := os.Lstat(filepath.Join(dir, f)); return err == nil }
	totalDecodes, totalChanged := int64(0), 0
	for step := range 60 {
		before := p.decodes.Load()
		var what string
		changed := 0
		f := plain[rng.IntN(len(plain))]
		path := filepath.Join(dir, f)
		switch op := rng.IntN(8); op {
		case 0:
			what = "write in place " + f
			write(t, path, content(f))
			changed = 1
		case 1:
			what = "atomic write through a dot-temp file " + f
			tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(f)+".tmp")
			write(t, tmp, content(f))
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			changed = 1
		case 2:
			what = "atomic write from outside " + f
			tmp := filepath.Join(outside, "staged.yaml")
			write(t, tmp, content(f))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			changed = 1
		case 3:
			what = "same bytes again " + f
			if exists(f) {
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				write(t, path, string(b))
			}
		case 4:
			what = "delete " + f
			if exists(f) {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			}
		case 7:
			// The hidden link itself goes (no event names a visible
			// file): every config file of the directory dangles.
			what = "remove .current in linked"
			if old, err := os.Readlink(filepath.Join(linked, linkedVol.data)); err == nil {
				if err := os.Remove(filepath.Join(linked, linkedVol.data)); err != nil {
					t.Fatal(err)
				}
				if err := os.RemoveAll(filepath.Join(linked, old)); err != nil {
					t.Fatal(err)
				}
			}
		default:
			v := cmVol
			if op == 6 {
				v = linkedVol
			}
			keys := map[string]string{}
			var names []string
			for _, k := range cmKeys {
				switch {
				case rng.IntN(4) == 0: // dropped (or still absent)
				case rng.IntN(2) == 0 && v.files[k] != "": // unchanged
					keys[k] = v.files[k]
				default:
					keys[k] = content(k)
					changed++
				}
				if _, ok := keys[k]; ok {
					names = append(names, k)
				}
			}
			sort.Strings(names)
			what = fmt.Sprintf("%s swap in %s to %v", v.data, filepath.Base(v.dir), names)
			swap(v, keys)
		}
		converge(step, what)
		totalDecodes += p.decodes.Load() - before
		totalChanged += changed
	}
	// Events may split a write into two batches (truncated, then
	// written), so a changed file may be decoded twice; a rescan that
	// decoded the directory would decode ten files.
	if limit := int64(2*totalChanged + 4); totalDecodes > limit {
		t.Errorf("%d files decoded for %d changed files over the run; want at most %d: rescans decode unchanged files", totalDecodes, totalChanged, limit)
	}
	t.Logf("%d decodes for %d changed files", totalDecodes, totalChanged)
	// Atomic writes through a dot-temp file in a directory of plain
	// files name their file: the temporary name must not rescan it.
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range []string{dir, filepath.Join(dir, "sub")} {
		if n := p.hiddenRescans[d]; n != 0 {
			t.Errorf("events on hidden names rescanned %s %d times; its config files are not symlinks", d, n)
		}
	}
	t.Logf("rescans for hidden names: %v", p.hiddenRescans)
}
