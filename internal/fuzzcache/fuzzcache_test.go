package fuzzcache

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/portico-gateway/portico/internal/golden"
	"github.com/portico-gateway/portico/pkg/resource"
)

// TestDocumentsMatchFreshDecoding edits YAML streams at random — byte
// changes inside a document, documents dropped, duplicated, swapped, taken
// from another stream — and after every step compares what the cache
// serves with a fresh resource.Decode of the same stream.
func TestDocumentsMatchFreshDecoding(t *testing.T) {
	files, _ := filepath.Glob("../../pkg/gateway/testdata/*.in.yaml")
	if len(files) == 0 {
		t.Fatal("no seed streams")
	}
	var streams [][]resource.Document
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, resource.SplitDocuments(golden.ExpandPEM(b)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	d := NewDocuments()
	d.CheckEvery = 0 // compared explicitly below
	for round := 0; round < 20; round++ {
		docs := append([]resource.Document(nil), streams[rng.IntN(len(streams))]...)
		for step := 0; step < 25; step++ {
			switch i := rng.IntN(max(len(docs), 1)); rng.IntN(5) {
			case 0: // change bytes inside a document
				if len(docs) > 0 && len(docs[i].Data) > 0 {
					b := append([]byte(nil), docs[i].Data...)
					b[rng.IntN(len(b))] = "ab: {}[]-\n0"[rng.IntN(11)]
					docs[i].Data = b
				}
			case 1: // drop one
				if len(docs) > 0 {
					docs = append(docs[:i], docs[i+1:]...)
				}
			case 2: // duplicate one
				if len(docs) > 0 {
					docs = append(docs, docs[i])
				}
			case 3: // swap two
				if len(docs) > 1 {
					j := rng.IntN(len(docs))
					docs[i], docs[j] = docs[j], docs[i]
				}
			case 4: // take one from another stream
				other := streams[rng.IntN(len(streams))]
				docs = append(docs, other[rng.IntN(len(other))])
			}
			var stream bytes.Buffer
			for _, doc := range docs {
				stream.WriteString("---\n")
				stream.Write(doc.Data)
			}
			got, err := d.Decode(stream.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			fresh, _ := resource.Decode(stream.Bytes(), "test")
			if err := same(got, fresh); err != nil {
				t.Fatalf("round %d step %d: %v", round, step, err)
			}
		}
	}
}
