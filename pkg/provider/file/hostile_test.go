package file

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

func invalidFor(r *resource.Resources, source, says string) bool {
	for _, i := range r.Invalid {
		if i.Source == source && strings.Contains(i.Error, says) {
			return true
		}
	}
	return false
}

// A FIFO, a symlink to /dev/zero and a file over the size limit, all
// named *.yaml: none of them blocks a reload or fills memory; each is
// reported on its file; the good files serve, and the last good version
// of a file that grew too large keeps serving.
func TestHostileFilesAreSkippedAndReported(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "good.yaml"), vs("a", "a.example.com"))
	write(t, filepath.Join(dir, "big.yaml"), vs("b", "b.example.com"))
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero.yaml")); err != nil {
		t.Fatal(err)
	}
	w := startProvider(t, dir) // returns once the first snapshot is published: nothing blocked
	r := w.latest()
	if hostOf(r, "a") != "a.example.com" || hostOf(r, "b") != "b.example.com" {
		t.Fatalf("good files not served: %s", describe(r))
	}
	if !invalidFor(r, "fifo.yaml", "FIFO") || !invalidFor(r, "zero.yaml", "character device") {
		t.Errorf("non-regular files not reported: %s", describe(r))
	}

	// big.yaml grows past the limit: reported, and its last good version
	// keeps serving.
	big := []byte(vs("b", "b2.example.com") + "# " + strings.Repeat("x", 17<<20) + "\n")
	write(t, filepath.Join(dir, "big.yaml"), string(big))
	r = w.await(t, "the oversized file reported", func(r *resource.Resources) bool { return invalidFor(r, "big.yaml", "too large") })
	if hostOf(r, "b") != "b.example.com" {
		t.Errorf("an oversized file replaced the last good version: %s", hostOf(r, "b"))
	}

	// Reloads still work: an edit of a good file is served.
	write(t, filepath.Join(dir, "good.yaml"), vs("a", "a2.example.com"))
	w.await(t, "the edit served", func(r *resource.Resources) bool { return hostOf(r, "a") == "a2.example.com" })
}

// Refusing an oversized or endless file does not read it.
func TestOversizedFilesAreNotRead(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "big.yaml"), strings.Repeat("#", 17<<20))
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero.yaml")); err != nil {
		t.Fatal(err)
	}
	p := New(dir, logr.Discard(), Options{})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p.reload(nil)
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4<<20 {
		t.Errorf("refusing two files allocated %d MiB", grown>>20)
	}
	r := p.Snapshot()
	if !invalidFor(r, "big.yaml", "over the limit") || !invalidFor(r, "zero.yaml", "not a regular file") {
		t.Errorf("not reported: %+v", r.Invalid)
	}
}

// While a file does not parse, every resource of its last good version
// says so in its status (StaleSpec), also after a YAML syntax error,
// which names no resource; once fixed, they are accepted again.
func TestStatusStaysFailedWhileTheFileIsBroken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vs.yaml")
	write(t, path, vs("a", "a.example.com")+"---\n"+vs("b", "b.example.com"))
	p := New(dir, logr.Discard(), Options{})
	statusOf := func(name string) *status.Status {
		p.reload(nil)
		for _, s := range gateway.Build(p.Snapshot(), gateway.Options{}).Statuses {
			if s.Key.Kind == "VirtualService" && s.Key.Name == name {
				return s
			}
		}
		t.Fatalf("no status for %s", name)
		return nil
	}
	stale := func(s *status.Status) bool {
		for _, m := range s.Messages {
			if m.Reason == status.ReasonStaleSpec && strings.Contains(m.Message, "vs.yaml:6:2:") {
				return s.Condition(status.Accepted).Reason != status.ReasonAccepted
			}
		}
		return false
	}
	if s := statusOf("a"); stale(s) {
		t.Fatalf("stale before any error: %+v", s)
	}
	// A syntax error on line 6, column 2 (in the first document).
	write(t, path, strings.Replace(vs("a", "a2.example.com"), "  gateways: [gw]", " gateways: [gw]", 1)+"---\n"+vs("b", "b.example.com"))
	for i := 0; i < 2; i++ { // and it stays so at the next reload
		for _, n := range []string{"a", "b"} {
			if s := statusOf(n); !stale(s) {
				t.Fatalf("reload %d: %s while its file is broken: %+v", i, n, s)
			}
		}
	}
	write(t, path, vs("a", "a2.example.com")+"---\n"+vs("b", "b.example.com"))
	for _, m := range statusOf("a").Messages {
		if m.Reason == status.ReasonStaleSpec {
			t.Errorf("still stale once fixed: %v", m)
		}
	}
}
