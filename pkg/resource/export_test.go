package resource

import (
	"encoding/json"
	"sync"
)

// DecodeDocumentPlain exposes the plain decoding path to the external
// tests that compare the fast one with it.
var DecodeDocumentPlain = decodeDocumentPlain

// The YAML parsers, for the tests that compare Portico's own with
// yaml.v2.
var (
	ParseFastYAML   = parseFastYAML
	ParseYAMLv2Tree = parseYAMLv2Tree
)

// DecodeInOneStore decodes documents one after another with one tree
// store, as a provider's worker does, calling each with what each gave
// (fast false for documents the fast way steps aside from). poison
// overwrites every map and sequence the store holds, returning how many.
// kept prints the tree of docs[0] as parsed and as it read once docs[1]
// was decoded: parsed and released before the others were decoded, but
// kept, as a decoder keeping part of a tree would.
func DecodeInOneStore(docs [][]byte, each func(i int, objs []Object, err error, fast bool)) (poison func() int, kept func() (was, after string)) {
	store := &treeStore{keys: map[string]string{}, values: map[string]any{}}
	tree, _ := parseFastYAMLIn(docs[0], store)
	was, _ := json.Marshal(tree)
	store.release(tree)
	var after []byte
	kept = func() (string, string) { return string(was), string(after) }
	for i, doc := range docs {
		objs, err, fast := decodeYAMLIn(doc, store)
		each(i, objs, err, fast)
		if i == 1 {
			after, _ = json.Marshal(tree)
		}
	}
	poison = func() int {
		for _, m := range store.maps {
			for _, k := range []string{"apiVersion", "kind", "metadata", "name", "spec", "hosts", "labels", "data", "ports"} {
				m[k] = "poisoned"
			}
		}
		for _, s := range store.seqs {
			s = s[:cap(s)]
			for i := range s {
				s[i] = "poisoned"
			}
		}
		return len(store.maps) + len(store.seqs)
	}
	return poison, kept
}

// sharedStore is one tree store for every ParseFastYAMLShared call, so
// that parsing meets keys and values interned by earlier documents and
// maps and sequences released by them, as a provider's worker does.
var (
	sharedStore   = &treeStore{keys: map[string]string{}, values: map[string]any{}}
	sharedStoreMu sync.Mutex
)

// ParseFastYAMLShared is parseFastYAML with the shared store: it returns
// a copy of the tree and releases the tree itself into the store.
func ParseFastYAMLShared(data []byte) (map[string]any, bool) {
	sharedStoreMu.Lock()
	defer sharedStoreMu.Unlock()
	doc, ok := parseFastYAMLIn(data, sharedStore)
	if !ok {
		return nil, false
	}
	c := copyTree(doc).(map[string]any)
	sharedStore.release(doc)
	return c, true
}

func copyTree(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, item := range x {
			out[k] = copyTree(item)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, item := range x {
			out[i] = copyTree(item)
		}
		return out
	}
	return v
}
