package resource

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"

	yaml3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// Positions are worked out only for documents that failed, so reading
// thousands of good files pays nothing for them.

// position returns where in a document (1-based line and column, relative
// to the document) a decode error is: the node of the field it names, or,
// for a YAML syntax error, the first place the document stops parsing. It
// returns 0, 0 when it cannot tell.
func position(doc []byte, e *DecodeError) (line, col int) {
	if e.syntax {
		return syntaxPosition(doc)
	}
	path := e.Field
	if p := pathInMessage(e.Err.Error()); p != "" {
		// Strict JSON decoding names the field inside what it decoded:
		// the object, or its metadata.
		if path == "metadata" && !strings.HasPrefix(p, "metadata.") {
			p = "metadata." + p
		}
		path = p
	}
	if path == "" {
		return 0, 0
	}
	var root yaml3.Node
	if err := yaml3.Unmarshal(doc, &root); err != nil || len(root.Content) == 0 {
		return 0, 0
	}
	n := locate(root.Content[0], parsePath(path))
	if n == nil {
		return 0, 0
	}
	return n.Line, n.Column
}

var (
	// sigs.k8s.io/json: unknown field "spec.ports[0].nmae"
	quotedPath = regexp.MustCompile(`(?:unknown|duplicate) field "([^"]+)"`)
	// encoding/json: cannot unmarshal string into Go struct field ServicePort.spec.ports.port of type int32
	structPath = regexp.MustCompile(`Go struct field [A-Za-z0-9_]+\.([^ ]+) of type`)
)

// pathInMessage finds a field path in a strict JSON decoder's message.
func pathInMessage(msg string) string {
	if m := quotedPath.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	if m := structPath.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return ""
}

// pathSeg is one step of a field path: a key, or an index in a list.
type pathSeg struct {
	key   string
	index int // -1 for keys
}

// parsePath reads "spec.http[0].route[1].headers[x-user].exact". A list
// step without an index (as encoding/json names fields) matches the first
// element that has the rest of the path.
func parsePath(p string) []pathSeg {
	var out []pathSeg
	for len(p) > 0 {
		switch p[0] {
		case '.':
			p = p[1:]
		case '[':
			end := strings.IndexByte(p, ']')
			if end < 0 {
				return out
			}
			inner := p[1:end]
			if i, err := strconv.Atoi(inner); err == nil {
				out = append(out, pathSeg{index: i})
			} else {
				out = append(out, pathSeg{key: inner, index: -1})
			}
			p = p[end+1:]
		default:
			end := strings.IndexAny(p, ".[")
			if end < 0 {
				end = len(p)
			}
			out = append(out, pathSeg{key: p[:end], index: -1})
			p = p[end:]
		}
	}
	return out
}

// locate follows a path through a YAML node tree and returns the node it
// ends at: for a key, the key itself (where a user looks for the field),
// for an index, the list element. It stops at the deepest node it can
// reach, so a path into a value that is not what was expected points at
// that value.
func locate(n *yaml3.Node, path []pathSeg) *yaml3.Node {
	for n.Kind == yaml3.DocumentNode || n.Kind == yaml3.AliasNode {
		if n.Kind == yaml3.AliasNode {
			n = n.Alias
		} else if len(n.Content) > 0 {
			n = n.Content[0]
		} else {
			return nil
		}
	}
	if len(path) == 0 {
		return n
	}
	seg := path[0]
	switch {
	case seg.index >= 0 && n.Kind == yaml3.SequenceNode:
		if seg.index >= len(n.Content) {
			return n
		}
		if r := locate(n.Content[seg.index], path[1:]); r != nil {
			return r
		}
		return n.Content[seg.index]
	case seg.index < 0 && n.Kind == yaml3.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if sameKey(n.Content[i].Value, seg.key) {
				if len(path) == 1 {
					return n.Content[i]
				}
				if r := locate(n.Content[i+1], path[1:]); r != nil {
					return r
				}
				return n.Content[i]
			}
		}
		return nil
	case seg.index < 0 && n.Kind == yaml3.SequenceNode:
		// encoding/json paths have no indexes: try each element.
		for _, c := range n.Content {
			if r := locate(c, path); r != nil {
				return r
			}
		}
		return nil
	}
	return n
}

// sameKey matches a path key to a YAML key as Istio's decoding does:
// exactly, or ignoring case and underscores (retry_on is retryOn).
func sameKey(yamlKey, pathKey string) bool {
	if yamlKey == pathKey {
		return true
	}
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	return norm(yamlKey) == norm(pathKey)
}

// syntaxPosition finds where a document that is not valid YAML stops
// parsing: the line after the longest prefix of whole lines that parses
// (a prefix ending inside a multi-line value may fail although the
// document is fine up to there, so prefixes are tried from the end), and
// on that line the column after the longest part that still parses. The
// YAML library's own "line N" is relative to the document and names the
// enclosing structure as often as the problem.
func syntaxPosition(doc []byte) (line, col int) {
	lines := bytes.SplitAfter(doc, []byte("\n"))
	const maxLines = 2000 // beyond that, a quadratic search is not worth it
	if len(lines) > maxLines {
		return 0, 0
	}
	parses := func(b []byte) bool {
		_, err := yaml.YAMLToJSON(b)
		return err == nil
	}
	prefix := func(k int) []byte { return bytes.Join(lines[:k], nil) }
	bad := len(lines)
	for k := len(lines) - 1; k >= 0; k-- {
		if parses(prefix(k)) {
			bad = k
			break
		}
	}
	if bad >= len(lines) {
		return 0, 0
	}
	before, text := prefix(bad), lines[bad]
	col = 1
	for c := len(bytes.TrimRight(text, "\r\n")); c > 0; c-- {
		if parses(append(append([]byte(nil), before...), text[:c]...)) {
			col = c + 1
			break
		}
	}
	return bad + 1, col
}
