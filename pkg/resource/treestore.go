package resource

import (
	"encoding/json"
	"sync"
)

// A cold start of 5,000 VirtualServices parses 30,000 documents, and the
// trees they are parsed into were a third of everything it allocated:
// 75 MB of small maps alone, most of it garbage within microseconds. The
// garbage was not only work for the collector. Allocated among the
// decoded objects that stay (labels, names, specs), it left them spread
// over half-empty spans once collected: after decoding, 51 MB of live
// objects took 90 MB of the heap, and the build never filled the holes.
// So a document's tree is built from a treeStore, and its maps and
// sequences go back to the store once the document is decoded, for the
// next document parsed on the same P. Nothing decoded may keep a tree's
// map or sequence (decoders copy what they keep: stringMap, setTyped,
// structpb); TestReusedTreesLeaveNothingBehind overwrites released
// storage and checks every decoded object is still what it was.

// Bounds on what a store keeps: larger maps and sequences are left to
// the collector rather than kept at their size for small ones.
const (
	storeMaxItems  = 1024 // maps, and sequences, each
	storeMaxMapLen = 16
	storeMaxSeqCap = 64
	storeMaxLines  = 4096
	storeMaxKeys   = 4096
	// Values are many more than keys, most of them names read once.
	storeMaxValues   = 4096
	storeMaxValueLen = 32
)

// treeStore holds the storage of released trees, and the mapping keys
// already read (a document's keys are mostly field names seen before;
// interned, they are neither copied again nor each kept as a copy).
type treeStore struct {
	maps  []map[string]any
	seqs  [][]any
	lines []fastLine
	keys  map[string]string
	// values holds plain scalars read before, strings and numbers as
	// parsed: most values of a configuration repeat (versions, ports,
	// protocols, label values), and each new one costs a copy and a box.
	values map[string]any
}

var treeStores = sync.Pool{New: func() any {
	return &treeStore{keys: map[string]string{}, values: map[string]any{}}
}}

// mapping returns an empty map for a mapping.
func (t *treeStore) mapping() map[string]any {
	if n := len(t.maps); n > 0 {
		m := t.maps[n-1]
		t.maps = t.maps[:n-1]
		return m
	}
	return make(map[string]any, 4)
}

// sequence returns an empty slice for a sequence.
func (t *treeStore) sequence() []any {
	if n := len(t.seqs); n > 0 {
		s := t.seqs[n-1]
		t.seqs = t.seqs[:n-1]
		return s
	}
	return make([]any, 0, 4)
}

// keepLines takes back a parser's line slice, cleared (its lines point
// into their document's text), unless it is too large to keep.
func (t *treeStore) keepLines(lines []fastLine) {
	if cap(lines) > storeMaxLines {
		t.lines = nil
		return
	}
	clear(lines)
	t.lines = lines[:0]
}

// key returns the interned copy of a mapping key if there is one.
func (t *treeStore) key(k string) (string, bool) {
	s, ok := t.keys[k]
	return s, ok
}

// learnKey interns k, a copy the parser made of a key that reads as
// itself.
func (t *treeStore) learnKey(k string) {
	if t.keys != nil && len(t.keys) < storeMaxKeys {
		t.keys[k] = k
	}
}

// learnValue keeps v, a plain scalar the parser resolved, for the next
// time its text is read.
func (t *treeStore) learnValue(v any) {
	if t.values == nil || len(t.values) >= storeMaxValues {
		return
	}
	switch x := v.(type) {
	case string:
		if len(x) <= storeMaxValueLen {
			t.values[x] = v
		}
	case json.Number:
		// Kept under the text they print as, which reads as the same
		// number: whole numbers only, so no float's spelling matters.
		if len(x) <= storeMaxValueLen && allDigits(string(x)) {
			t.values[string(x)] = v
		}
	}
}

// release takes back v's maps and sequences, v's and its items'; nothing
// may use them afterwards.
func (t *treeStore) release(v any) {
	switch x := v.(type) {
	case map[string]any:
		for _, item := range x {
			t.release(item)
		}
		if len(x) <= storeMaxMapLen && len(t.maps) < storeMaxItems {
			clear(x)
			t.maps = append(t.maps, x)
		}
	case []any:
		for _, item := range x {
			t.release(item)
		}
		if cap(x) <= storeMaxSeqCap && len(t.seqs) < storeMaxItems {
			clear(x)
			t.seqs = append(t.seqs, x[:0])
		}
	}
}
