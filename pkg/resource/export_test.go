package resource

import "encoding/json"

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
// kept prints the tree of docs[0] as parsed and as it reads now: parsed
// and released before the others were decoded, but kept, as a decoder
// keeping part of a tree would.
func DecodeInOneStore(docs [][]byte, each func(i int, objs []Object, err error, fast bool)) (poison func() int, kept func() (was, now string)) {
	store := &treeStore{keys: map[string]string{}, values: map[string]any{}}
	tree, _ := parseFastYAMLIn(docs[0], store)
	was, _ := json.Marshal(tree)
	store.release(tree)
	kept = func() (string, string) { now, _ := json.Marshal(tree); return string(was), string(now) }
	for i, doc := range docs {
		objs, err, fast := decodeYAMLIn(doc, store)
		each(i, objs, err, fast)
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
