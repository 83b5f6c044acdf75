// Package fuzzcache makes the YAML fuzz targets (pkg/gateway,
// pkg/translate) fast enough to find anything.
//
// `go test -fuzz` instruments every package linked into the test binary;
// with Kubernetes, Istio and Envoy types that is roughly half a
// millisecond of coverage bookkeeping per input before the target does
// any work, and decoding a YAML stream (YAML → JSON → strict field checks
// → protojson) costs about a millisecond per kilobyte on top. A mutation
// usually changes one document of a stream, so Documents decodes each
// distinct document once and serves the others from a cache: the decoder
// is still exercised on every document a mutation produces.
//
// A cache is only trustworthy when it is checked: every Nth stream is also
// decoded from scratch and compared with what the cache served, which
// would also catch a later stage modifying decoded objects in place.
package fuzzcache

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/portico-gateway/portico/pkg/resource"
)

// maxEntries bounds each cache; when full it is emptied (fuzzing keeps
// producing new documents, and a stale cache is only slower, not wrong).
const maxEntries = 20000

// Documents decodes YAML streams document by document through a cache.
type Documents struct {
	// CheckEvery: every Nth call also decodes from scratch and compares.
	CheckEvery int

	mu    sync.Mutex
	cache map[string][]resource.Object
	calls int
}

// NewDocuments returns an empty cache checking every 64th stream.
func NewDocuments() *Documents {
	return &Documents{CheckEvery: 64, cache: map[string][]resource.Object{}}
}

// Decode returns the objects of every document that decodes (documents
// with errors contribute nothing, as with resource.Decode), and an error
// only when the cache disagrees with a fresh decoding.
func (d *Documents) Decode(data []byte) ([]resource.Object, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var objs []resource.Object
	for _, doc := range resource.SplitDocuments(data) {
		o, ok := d.cache[string(doc.Data)]
		if !ok {
			o, _ = resource.DecodeDocument(doc.Data)
			if len(d.cache) >= maxEntries {
				clear(d.cache)
			}
			d.cache[string(doc.Data)] = o
		}
		objs = append(objs, o...)
	}
	d.calls++
	if d.CheckEvery > 0 && d.calls%d.CheckEvery == 0 {
		fresh, _ := resource.Decode(data, "fuzz")
		if err := same(objs, fresh); err != nil {
			return nil, fmt.Errorf("decoding cache differs from a fresh decoding: %w", err)
		}
	}
	return objs, nil
}

// same compares two object lists by their JSON form (Istio specs marshal
// through protojson, so equal JSON means equal objects).
func same(a, b []resource.Object) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d objects, fresh %d", len(a), len(b))
	}
	for i := range a {
		ja, err := json.Marshal(a[i])
		if err != nil {
			return err
		}
		jb, err := json.Marshal(b[i])
		if err != nil {
			return err
		}
		if string(ja) != string(jb) {
			return fmt.Errorf("object %d: cached %s, fresh %s", i, ja, jb)
		}
	}
	return nil
}
