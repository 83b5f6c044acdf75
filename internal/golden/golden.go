// Package golden compares test output with files under testdata and
// rewrites them when tests run with -update.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portico-gateway/portico/internal/testpki"
)

var update = flag.Bool("update", false, "rewrite golden files with the current output")

// Updating reports whether -update was given.
func Updating() bool { return *update }

// Check compares got with the golden file at path, or rewrites it.
func Check(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("output differs from %s (run `go test -update` and review the diff):\n%s", path, diff(string(want), string(got)))
	}
}

// diff returns a compact line diff: the first differing region with context.
func diff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(wl) && i < len(gl) && wl[i] == gl[i] {
		i++
	}
	var b strings.Builder
	from := max(0, i-3)
	for k := from; k < i; k++ {
		b.WriteString("  " + wl[k] + "\n")
	}
	for k := i; k < min(len(wl), i+8); k++ {
		b.WriteString("- " + wl[k] + "\n")
	}
	for k := i; k < min(len(gl), i+8); k++ {
		b.WriteString("+ " + gl[k] + "\n")
	}
	return b.String()
}

// ExpandPEM replaces ${PEM:name} in test input with the JSON-quoted
// contents of the test PKI file, so YAML inputs can carry certificates.
func ExpandPEM(in []byte) []byte {
	s := string(in)
	for {
		i := strings.Index(s, "${PEM:")
		if i < 0 {
			return []byte(s)
		}
		j := strings.Index(s[i:], "}")
		name := s[i+6 : i+j]
		q := strings.ReplaceAll(string(testpki.Read(name)), "\n", `\n`)
		s = s[:i] + `"` + q + `"` + s[i+j+1:]
	}
}
