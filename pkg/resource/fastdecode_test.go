package resource_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/randconfig"
	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/resource"
)

// outcome renders what decoding a document gave, for comparison: every
// object as JSON, and the error with the fields providers report.
func outcome(objs []resource.Object, err error) string {
	var b strings.Builder
	for _, o := range objs {
		js, jerr := json.Marshal(o)
		if jerr != nil {
			fmt.Fprintf(&b, "unprintable %T: %v\n", o, jerr)
			continue
		}
		fmt.Fprintf(&b, "%T %s\n", o, js)
	}
	if err != nil {
		var de *resource.DecodeError
		if errors.As(err, &de) {
			fmt.Fprintf(&b, "DecodeError key=%v field=%q: %v\n", de.Key, de.Field, de.Err)
		} else {
			fmt.Fprintf(&b, "error %T: %v\n", err, err)
		}
	}
	return b.String()
}

// corpus is every kind of document Portico reads, as users write them:
// the bench generator's files, the golden tests' inputs and random
// worlds of every kind, printed as YAML.
func corpus(t *testing.T, rng *rand.Rand) [][]byte {
	var docs [][]byte
	o := scale.Options{VirtualServices: 20}
	for _, d := range o.All() {
		docs = append(docs, []byte(d.YAML))
	}
	for _, dir := range []string{"../gateway/testdata", "../translate/testdata"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no golden inputs in %s: %v", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, ".out.yaml") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range resource.SplitDocuments(data) {
				docs = append(docs, d.Data)
			}
		}
	}
	for range 3 {
		w := randconfig.New(rng.Uint64(), randconfig.Options{Kubernetes: rng.IntN(2) == 0})
		for range 20 {
			w.Edit()
		}
		for _, line := range strings.Split(strings.TrimSpace(w.Dump()), "\n") {
			_, js, ok := strings.Cut(line, ": {")
			if !ok {
				t.Fatalf("unexpected dump line %q", line)
			}
			y, err := yaml.JSONToYAML([]byte("{" + js))
			if err != nil {
				t.Fatal(err)
			}
			docs = append(docs, y)
		}
	}
	return docs
}

// odd values a user (or a fuzzer) puts where another type belongs.
var oddValues = []string{"3", "-1", "0", "1.5", "1e400", "-0.0", "1e-7", "12345678901234567890", "99999999999", "true", "yes", "null", "~",
	`"x"`, "''", "[a, 1]", "[]", "{a: 1}", "{}", ".nan", ".inf", "0x1F", "0o17", "5s", "-5s", "2001-12-14", "!!binary aGVsbG8=", "&a x", "*a",
	"UNKNOWN_ENUM", "PASSTHROUGH", "ROUND_ROBIN", "[null]", "{a: null}", "<&>", "\"\\xff\"", "|\n  block"}

// mutate makes one random change to a YAML document's text.
func mutate(rng *rand.Rand, doc string) string {
	lines := strings.Split(strings.TrimRight(doc, "\n"), "\n")
	i := rng.IntN(len(lines))
	l := lines[i]
	switch rng.IntN(8) {
	case 0, 1: // another value
		if k := strings.Index(l, ": "); k >= 0 {
			lines[i] = l[:k+2] + oddValues[rng.IntN(len(oddValues))]
		} else if k := strings.Index(l, "- "); k >= 0 {
			lines[i] = l[:k+2] + oddValues[rng.IntN(len(oddValues))]
		}
	case 2: // a misspelt or differently cased key
		if k := strings.Index(l, ":"); k > 0 {
			key := strings.TrimLeft(l[:k], " -")
			indent := l[:k-len(key)]
			switch rng.IntN(3) {
			case 0:
				if key != "" {
					key = strings.ToUpper(key[:1]) + key[1:]
				}
			case 1:
				key += "x"
			default:
				key = strings.ReplaceAll(key, "a", "_a")
			}
			lines[i] = indent + key + l[k:]
		}
	case 3: // a line gone
		lines = append(lines[:i], lines[i+1:]...)
	case 4: // a line twice (duplicate keys)
		lines = append(lines[:i+1], lines[i:]...)
	case 5: // an extra field next to this one
		indent := l[:len(l)-len(strings.TrimLeft(l, " -"))]
		indent = strings.ReplaceAll(indent, "-", " ")
		extra := []string{"items: []", "status: {}", "spec: null", "kind: List", "Kind: x", "apiVersion: 3", "metadata: 7", "bogus: 1", "1: a", "true: b"}
		lines = append(lines[:i+1], append([]string{indent + extra[rng.IntN(len(extra))]}, lines[i+1:]...)...)
	case 6: // the same key again in its proto spelling, with another value
		if k := strings.Index(l, ": "); k > 0 {
			key := strings.TrimLeft(l[:k], " -")
			indent := strings.ReplaceAll(l[:k-len(key)], "-", " ")
			lines = append(lines[:i+1], append([]string{indent + snakeCase(key) + ": " + oddValues[rng.IntN(len(oddValues))]}, lines[i+1:]...)...)
		}
	default: // bytes
		b := []byte(l)
		if len(b) > 0 {
			const stray = "{}[],:#&*!|>'\"%@`\t\x00\xff -a1"
			b[rng.IntN(len(b))] = stray[rng.IntN(len(stray))]
		}
		lines[i] = string(b)
	}
	return strings.Join(lines, "\n") + "\n"
}

// snakeCase is a camelCase key's proto field name (retryOn → retry_on).
func snakeCase(key string) string {
	var b strings.Builder
	for _, r := range key {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// TestFastDecodeEqualsPlainDecode checks that decoding a document from
// its parsed YAML gives exactly what the plain way through JSON text
// gives (the same objects, the same errors), on every kind of document
// and on random mutations of them: odd values of every type, misspelt
// and re-cased keys, duplicate keys, missing lines and stray bytes.
func TestFastDecodeEqualsPlainDecode(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	docs := corpus(t, rng)
	compared, failed := 0, 0
	check := func(doc []byte, what string) {
		compared++
		fast := outcome(resource.DecodeDocument(doc))
		plain := outcome(resource.DecodeDocumentPlain(doc))
		if fast != plain {
			failed++
			if failed <= 5 {
				t.Errorf("%s: decoding differs\ndocument:\n%s\nfast:\n%s\nplain:\n%s", what, doc, fast, plain)
			}
		}
	}
	for i, doc := range docs {
		check(doc, fmt.Sprintf("document %d", i))
		m := string(doc)
		for j := range 20 {
			m = mutate(rng, m)
			check([]byte(m), fmt.Sprintf("document %d, mutation %d", i, j))
			if j%5 == 4 {
				m = string(doc)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d documents decoded differently", failed, compared)
	}
	t.Logf("%d documents compared", compared)
}

// TestReusedTreesLeaveNothingBehind decodes every kind of document (and
// random mutations of them) with one tree store, then overwrites every
// map and sequence the store took back: each object must still print as
// it did right after its own decoding. An object keeping any part of
// its document's tree would show the reuse by later documents, or the
// overwrite.
func TestReusedTreesLeaveNothingBehind(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	// Every document as written first (the first two differ), then
	// mutations of each.
	docs := corpus(t, rng)
	for _, doc := range docs[:len(docs):len(docs)] {
		m := string(doc)
		for range 5 {
			m = mutate(rng, m)
			docs = append(docs, []byte(m))
		}
	}
	// A well-formed document last, so that the store ends holding what
	// it took back.
	docs = append(docs, docs[0])
	type result struct {
		objs  []resource.Object
		err   error
		first string
	}
	var results []result
	poison, kept := resource.DecodeInOneStore(docs, func(_ int, objs []resource.Object, err error, fast bool) {
		if fast {
			results = append(results, result{objs, err, outcome(objs, err)})
		}
	})
	if len(results) < len(docs)/4 { // mutations send about half the other way
		t.Fatalf("only %d of %d documents were decoded the fast way", len(results), len(docs))
	}
	if n := poison(); n == 0 {
		t.Fatal("the store took back no map or sequence")
	}
	// What a decoder keeping part of a tree would hold does change.
	if was, after := kept(); after == was {
		t.Fatalf("a tree kept after its release still reads %s once the next document is decoded: reuse would not show in what objects keep", after)
	}
	for i, r := range results {
		if now := outcome(r.objs, r.err); now != r.first {
			t.Fatalf("the %dth document decoded the fast way changed as its tree was reused:\nthen:\n%s\nnow:\n%s", i, r.first, now)
		}
	}
	t.Logf("%d documents decoded with one store", len(results))
}
