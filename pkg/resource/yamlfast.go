package resource

import (
	"encoding/json"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// yaml.v2 spends ~330 µs and 1,600 allocations on one generated service
// file (six short documents), which at 5,000 files is most of the cold
// start's CPU budget. Configuration files use a small, plain part of
// YAML: block mappings and sequences, one-line flow collections of
// scalars, plain and quoted one-line scalars, literal and folded block
// scalars, comments. parseFastYAML reads exactly that part into the
// value decodeYAML gets from yaml.v2 and jsonable (string keys;
// json.Number, bool, nil, string scalars resolved as YAML 1.1 does
// through yaml.v2's rules), and reports false for anything else — tabs,
// anchors, aliases, tags, merge keys, complex or non-string keys,
// duplicate keys, multi-line plain or quoted scalars, odd indentation,
// uncommon escapes, timestamps, deep nesting, anything it is unsure of —
// so yaml.v2 reads it as before and results and error messages stay the
// same. TestFastYAMLEqualsYAMLv2 and FuzzFastYAMLEqualsYAMLv2 check that
// it never gives an answer yaml.v2 would not.

// maxFastDepth bounds nesting; deeper documents go to yaml.v2 with its
// own limits.
const maxFastDepth = 64

// maxFastKey is well under the 1,024 characters yaml.v2 allows a key.
const maxFastKey = 512

type fastLine struct {
	indent int    // leading spaces
	text   string // the rest of the line, without its "\n"
	num    int    // index in the document's lines
}

type fastParser struct {
	lines []fastLine // every line, blank and comment lines included
	pos   int        // next line to read
	depth int
	store *treeStore // where maps and sequences come from
}

// parseFastYAML parses a document whose top level is a block mapping; ok
// is false whenever it is not sure it reads the document as yaml.v2 does.
func parseFastYAML(data []byte) (map[string]any, bool) {
	return parseFastYAMLIn(data, &treeStore{})
}

// parseFastYAMLIn is parseFastYAML building the tree from store's
// storage (see treeStore).
func parseFastYAMLIn(data []byte, store *treeStore) (map[string]any, bool) {
	if len(data) == 0 || data[len(data)-1] != '\n' || !fastPrintable(data) {
		return nil, false
	}
	// One string for the document, scanned in place; scalars are copied
	// out of it (decoded objects keep them, and should not keep every
	// document's whole text alive).
	src := string(data)
	n := strings.Count(src, "\n")
	p := &fastParser{lines: slices.Grow(store.lines[:0], n), store: store}
	defer func() { store.keepLines(p.lines) }()
	for i := 0; len(src) > 0; i++ {
		end := strings.IndexByte(src, '\n')
		l := src[:end]
		src = src[end+1:]
		ind := 0
		for ind < len(l) && l[ind] == ' ' {
			ind++
		}
		p.lines = append(p.lines, fastLine{indent: ind, text: l[ind:], num: i})
	}
	p.skipBlank()
	if p.pos >= len(p.lines) {
		return nil, false
	}
	l := p.lines[p.pos]
	if l.indent != 0 {
		return nil, false
	}
	m, ok := p.mapping(0)
	if !ok {
		return nil, false
	}
	if p.skipBlank(); p.pos < len(p.lines) {
		return nil, false
	}
	return m, true
}

// fastPrintable reports whether data has only characters yaml.v2 reads
// as printable and not as line breaks or byte order marks: no tabs, no
// carriage returns, no control characters, valid UTF-8 without NEL, LS,
// PS or BOM.
func fastPrintable(data []byte) bool {
	for i := 0; i < len(data); {
		c := data[i]
		if c < utf8.RuneSelf {
			if c < ' ' && c != '\n' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError, r < 0xA0, r == 0x2028, r == 0x2029, r == 0xFEFF,
			r > 0xD7FF && r < 0xE000, r > 0xFFFD && r < 0x10000:
			return false
		}
		i += size
	}
	return true
}

// skipBlank moves past empty lines and comment lines.
func (p *fastParser) skipBlank() {
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.text != "" && l.text[0] != '#' {
			return
		}
		p.pos++
	}
}

// node reads the block node that follows a key or "- " whose own line
// ended after the indicator; parent is the indentation of that mapping or
// sequence. seqOK allows a sequence at the parent's own indentation (a
// mapping's value).
func (p *fastParser) node(parent int, seqOK bool) (any, bool) {
	p.skipBlank()
	if p.pos >= len(p.lines) {
		return nil, true
	}
	l := p.lines[p.pos]
	if l.indent < parent || l.indent == parent && !(seqOK && isSeqItem(l.text)) {
		return nil, true // an empty value
	}
	if isSeqItem(l.text) {
		return p.sequence(l.indent)
	}
	if l.indent == parent {
		return nil, false
	}
	return p.mapping(l.indent)
}

func isSeqItem(s string) bool { return s == "-" || strings.HasPrefix(s, "- ") }

// mapping reads a block mapping whose keys are at column indent; the
// current line is its first entry (it may be the rest of a "- " line).
func (p *fastParser) mapping(indent int) (map[string]any, bool) {
	if p.depth++; p.depth > maxFastDepth {
		return nil, false
	}
	defer func() { p.depth-- }()
	m := p.store.mapping()
	for {
		p.skipBlank()
		if p.pos >= len(p.lines) {
			return m, true
		}
		l := p.lines[p.pos]
		if l.indent < indent {
			return m, true
		}
		if l.indent > indent {
			return nil, false
		}
		if isSeqItem(l.text) {
			return m, true // a sequence at a parent mapping's indentation ends this one
		}
		key, rest, ok := p.mappingKey(l.text)
		if !ok {
			return nil, false
		}
		if _, dup := m[key]; dup {
			return nil, false
		}
		v, ok := p.value(indent, rest, true)
		if !ok {
			return nil, false
		}
		m[key] = v
	}
}

// sequence reads a block sequence whose "-" are at column indent.
func (p *fastParser) sequence(indent int) ([]any, bool) {
	if p.depth++; p.depth > maxFastDepth {
		return nil, false
	}
	defer func() { p.depth-- }()
	s := p.store.sequence()
	for {
		p.skipBlank()
		if p.pos >= len(p.lines) {
			return s, true
		}
		l := p.lines[p.pos]
		if l.indent < indent || l.indent == indent && !isSeqItem(l.text) {
			return s, true
		}
		if l.indent > indent {
			return nil, false
		}
		rest := l.text[1:]
		sp := 0
		for sp < len(rest) && rest[sp] == ' ' {
			sp++
		}
		rest = rest[sp:]
		var v any
		var ok bool
		if _, _, isKey := p.mappingKey(rest); isKey && rest != "" {
			// A compact mapping: "- key: value" and keys below it at the
			// column of key.
			p.lines[p.pos] = fastLine{indent: indent + 1 + sp, text: rest, num: l.num}
			v, ok = p.mapping(indent + 1 + sp)
		} else {
			v, ok = p.value(indent, rest, false)
		}
		if !ok {
			return nil, false
		}
		s = append(s, v)
	}
}

// value reads what follows a key's ":" or a "- " on the current line
// (rest, leading spaces removed for "- ") and, for an empty rest, the
// block node below; parent is the indentation of the mapping or sequence
// that holds the value.
func (p *fastParser) value(parent int, rest string, inMapping bool) (any, bool) {
	rest = strings.TrimLeft(rest, " ")
	if rest == "" || rest[0] == '#' {
		p.pos++
		return p.node(parent, inMapping)
	}
	switch rest[0] {
	case '|', '>':
		return p.blockScalar(parent, rest)
	case '[', '{':
		v, tail, ok := p.flowCollection(rest, p.depth)
		if !ok || !onlyComment(tail) {
			return nil, false
		}
		p.pos++
		return v, p.nextNotDeeper(parent)
	case '"', '\'':
		s, tail, ok := quoted(rest)
		if !ok || !onlyComment(tail) {
			return nil, false
		}
		p.pos++
		return s, p.nextNotDeeper(parent)
	}
	if !plainStart(rest) {
		return nil, false
	}
	s := rest
	if i := strings.Index(s, " #"); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, " ")
	if strings.Contains(s, ": ") || strings.HasSuffix(s, ":") {
		return nil, false
	}
	v, ok := p.plain(s)
	if !ok {
		return nil, false
	}
	p.pos++
	return v, p.nextNotDeeper(parent)
}

// nextNotDeeper reports whether the next content line is not indented
// deeper than the node that just ended on one line (a deeper line would
// continue a multi-line scalar, or be an error).
func (p *fastParser) nextNotDeeper(parent int) bool {
	p.skipBlank()
	return p.pos >= len(p.lines) || p.lines[p.pos].indent <= parent
}

// onlyComment reports whether what follows a scalar on its line is
// nothing, or spaces and a comment.
func onlyComment(tail string) bool {
	t := strings.TrimLeft(tail, " ")
	return t == "" || t[0] == '#' && len(t) < len(tail)
}

// plainStart reports whether s may start a plain scalar: not with an
// indicator, nor "-", "?" or ":" followed by a space (which yaml.v2 reads
// as structure), and not with anything else this parser is unsure of.
func plainStart(s string) bool {
	switch s[0] {
	case ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', '?', ':':
		return false
	case '-':
		return len(s) > 1 && s[1] != ' '
	}
	return true
}

// mappingKey splits "key: rest" or "key:" into the key and the rest. Keys
// are quoted scalars or plain scalars of the characters names use, and
// must resolve to strings.
func (p *fastParser) mappingKey(s string) (key, rest string, ok bool) {
	if s == "" {
		return "", "", false
	}
	if s[0] == '"' || s[0] == '\'' {
		k, tail, ok := quoted(s)
		if !ok || len(s)-len(tail) > maxFastKey {
			return "", "", false
		}
		tail = strings.TrimLeft(tail, " ")
		if tail == "" || tail[0] != ':' || len(tail) > 1 && tail[1] != ' ' {
			return "", "", false
		}
		return k, tail[1:], true
	}
	i := 0
	for i < len(s) && keyByte(s[i]) {
		i++
	}
	if i == 0 || i > maxFastKey {
		return "", "", false
	}
	j := i
	for j < len(s) && s[j] == ' ' {
		j++
	}
	if j == len(s) || s[j] != ':' || j+1 < len(s) && s[j+1] != ' ' {
		return "", "", false
	}
	k := s[:i]
	if k[0] == '-' || k == "<<" {
		return "", "", false
	}
	if ks, ok := p.store.key(k); ok {
		return ks, s[j+1:], true
	}
	v, ok := resolvePlain(k)
	if !ok {
		return "", "", false
	}
	ks, isString := v.(string)
	if !isString || ks != k {
		return "", "", false
	}
	p.store.learnKey(ks)
	return ks, s[j+1:], true
}

func keyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/'
}

// quoted reads a one-line single- or double-quoted scalar at the start of
// s; tail is what follows its closing quote.
func quoted(s string) (v string, tail string, ok bool) {
	q := s[0]
	if q == '\'' {
		var b []byte
		for i := 1; i < len(s); i++ {
			if s[i] != '\'' {
				continue
			}
			if i+1 < len(s) && s[i+1] == '\'' {
				b = append(b, s[1:i+1]...)
				s = s[i+1:]
				i = 0
				continue
			}
			if b == nil {
				return strings.Clone(s[1:i]), s[i+1:], true
			}
			return string(append(b, s[1:i]...)), s[i+1:], true
		}
		return "", "", false
	}
	var b []byte
	start := 1
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '"':
			if b == nil {
				return strings.Clone(s[1:i]), s[i+1:], true
			}
			return string(append(b, s[start:i]...)), s[i+1:], true
		case '\\':
			if i+1 >= len(s) {
				return "", "", false
			}
			var c byte
			switch s[i+1] {
			case '\\', '"':
				c = s[i+1]
			case 'n':
				c = '\n'
			case 't':
				c = '\t'
			case 'r':
				c = '\r'
			default:
				return "", "", false
			}
			b = append(append(b, s[start:i]...), c)
			i++
			start = i + 1
		}
	}
	return "", "", false
}

// flowCollection reads a one-line flow sequence or mapping at the start
// of s (its keys scalars, its values scalars or flow collections); tail is
// what follows it.
func (p *fastParser) flowCollection(s string, depth int) (v any, tail string, ok bool) {
	if depth++; depth > maxFastDepth {
		return nil, "", false
	}
	open, closing := s[0], byte(']')
	if open == '{' {
		closing = '}'
	}
	s = strings.TrimLeft(s[1:], " ")
	var seq []any
	var m map[string]any
	if open == '[' {
		seq = p.store.sequence()
	} else {
		m = p.store.mapping()
	}
	if s != "" && s[0] == closing {
		if open == '[' {
			return seq, s[1:], true
		}
		return m, s[1:], true
	}
	for {
		var key string
		if open == '{' {
			var k string
			var isString bool
			k, s, isString, ok = p.flowKey(s)
			if !ok || !isString || s == "" || s[0] != ':' || len(s) < 2 || s[1] != ' ' {
				return nil, "", false
			}
			if _, dup := m[k]; dup {
				return nil, "", false
			}
			key = k
			s = strings.TrimLeft(s[1:], " ")
		}
		var item any
		if s != "" && (s[0] == '[' || s[0] == '{') {
			item, s, ok = p.flowCollection(s, depth)
			s = strings.TrimLeft(s, " ")
		} else {
			item, s, ok = p.flowScalar(s)
		}
		if !ok {
			return nil, "", false
		}
		if open == '[' {
			seq = append(seq, item)
		} else {
			m[key] = item
		}
		if s == "" {
			return nil, "", false
		}
		switch s[0] {
		case ',':
			s = strings.TrimLeft(s[1:], " ")
			if s == "" || s[0] == closing || s[0] == ',' {
				return nil, "", false
			}
			continue
		case closing:
			if open == '[' {
				return seq, s[1:], true
			}
			return m, s[1:], true
		}
		return nil, "", false
	}
}

// flowKey reads a key inside a flow mapping as flowScalar does; isString
// is whether it is a string. Plain keys read before are the store's
// interned copies.
func (p *fastParser) flowKey(s string) (k, rest string, isString, ok bool) {
	i := 0
	for i < len(s) && flowPlainByte(s[i]) {
		i++
	}
	if i > 0 && i < len(s) && s[i] == ':' && plainStart(s[:i]) {
		if ks, known := p.store.key(s[:i]); known {
			return ks, s[i:], true, true
		}
	}
	v, rest, ok := p.flowScalar(s)
	if !ok {
		return "", "", false, false
	}
	k, isString = v.(string)
	if isString && i > 0 && i < len(s) && s[i] == ':' && k == s[:i] {
		p.store.learnKey(k)
	}
	return k, rest, isString, true
}

// flowScalar reads a scalar inside a flow collection; the rest has its
// leading spaces removed. Plain scalars there are limited to characters
// that cannot be flow indicators or comments.
func (p *fastParser) flowScalar(s string) (v any, rest string, ok bool) {
	if s == "" {
		return nil, "", false
	}
	if s[0] == '"' || s[0] == '\'' {
		q, tail, ok := quoted(s)
		if !ok {
			return nil, "", false
		}
		return q, strings.TrimLeft(tail, " "), true
	}
	i := 0
	for i < len(s) && flowPlainByte(s[i]) {
		i++
	}
	plain := strings.TrimRight(s[:i], " ")
	if plain == "" || !plainStart(plain) {
		return nil, "", false
	}
	v, ok = p.plain(plain)
	return v, s[i:], ok
}

// plain is resolvePlain, with short strings and numbers read before
// taken from the store.
func (p *fastParser) plain(s string) (any, bool) {
	if v, ok := p.store.values[s]; ok {
		return v, true
	}
	v, ok := resolvePlain(s)
	if ok {
		p.store.learnValue(v)
	}
	return v, ok
}

// flowPlainByte reports whether c may be part of a plain scalar in a
// flow collection, as far as this parser is concerned: not a flow
// indicator (yaml.v2 counts '?' among them), ':', '#' or a quote.
func flowPlainByte(c byte) bool {
	switch c {
	case ',', '[', ']', '{', '}', ':', '#', '\'', '"', '?':
		return false
	}
	return true
}

// blockScalar reads a literal or folded block scalar whose header is
// rest. Only the common forms: no indentation indicator, content lines
// with no trailing-space-only lines, and for folded scalars no lines
// indented deeper than the first.
func (p *fastParser) blockScalar(parent int, rest string) (any, bool) {
	literal := rest[0] == '|'
	chomp := byte(0)
	h := rest[1:]
	if h != "" && (h[0] == '-' || h[0] == '+') {
		chomp, h = h[0], h[1:]
	}
	if !onlyComment(h) {
		return nil, false
	}
	p.pos++
	base := -1
	var b strings.Builder
	empties := 0 // empty lines not yet written
	lines := 0
	for ; p.pos < len(p.lines); p.pos++ {
		l := p.lines[p.pos]
		if l.text == "" {
			if l.indent > 0 {
				return nil, false
			}
			if base < 0 {
				return nil, false // leading empty lines
			}
			empties++
			continue
		}
		if base < 0 {
			if l.indent <= parent {
				return nil, false
			}
			base = l.indent
		}
		if l.indent < base {
			break
		}
		if !literal && l.indent > base {
			return nil, false
		}
		if lines > 0 {
			switch {
			case literal:
				b.WriteByte('\n')
				for range empties {
					b.WriteByte('\n')
				}
			case empties == 0:
				b.WriteByte(' ')
			default:
				for range empties {
					b.WriteByte('\n')
				}
			}
		}
		empties = 0
		lines++
		for range l.indent - base {
			b.WriteByte(' ')
		}
		b.WriteString(l.text)
	}
	if lines == 0 {
		return nil, false
	}
	switch chomp {
	case 0:
		b.WriteByte('\n')
	case '+':
		b.WriteByte('\n')
		for range empties {
			b.WriteByte('\n')
		}
	}
	if p.pos < len(p.lines) && p.lines[p.pos].indent > parent {
		return nil, false
	}
	return b.String(), true
}

var fastYAMLFloat = regexp.MustCompile(`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`)

// resolvePlain resolves a plain scalar as yaml.v2 does (YAML 1.1: yes/no,
// on/off, ~, octal and hexadecimal integers, underscores in numbers) and
// converts it as jsonable does; ok is false for what jsonable rejects
// (NaN, infinities, merge keys) and for what looks like a timestamp.
func resolvePlain(in string) (any, bool) {
	switch in {
	case "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON":
		return true, true
	case "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF":
		return false, true
	case "", "~", "null", "Null", "NULL":
		return nil, true
	case ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", "<<":
		return nil, false
	}
	switch c := in[0]; {
	case c == '.':
		if f, err := strconv.ParseFloat(in, 64); err == nil {
			return jsonFloat(f)
		}
		return strings.Clone(in), true
	case c == '+' || c == '-' || '0' <= c && c <= '9':
	default:
		return strings.Clone(in), true
	}
	// A timestamp (four digits and "-") stays a string in yaml.v2 only
	// after it has been tried as one; not worth repeating here.
	if len(in) > 4 && in[4] == '-' && allDigits(in[:4]) {
		return nil, false
	}
	plain := in
	if strings.IndexByte(in, '_') >= 0 {
		plain = strings.ReplaceAll(in, "_", "")
	}
	if n, err := strconv.ParseInt(plain, 0, 64); err == nil {
		return json.Number(strconv.FormatInt(n, 10)), true
	}
	if n, err := strconv.ParseUint(plain, 0, 64); err == nil {
		return json.Number(strconv.FormatUint(n, 10)), true
	}
	if fastYAMLFloat.MatchString(plain) {
		if f, err := strconv.ParseFloat(plain, 64); err == nil {
			return jsonFloat(f)
		}
	}
	if strings.HasPrefix(plain, "0b") || strings.HasPrefix(plain, "-0b") {
		return nil, false
	}
	return strings.Clone(in), true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// jsonFloat prints a float as encoding/json does (what jsonable gives).
func jsonFloat(f float64) (any, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, false
	}
	b, err := json.Marshal(f)
	if err != nil {
		return nil, false
	}
	return json.Number(b), true
}
