package resource_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/resource"
)

// sameAsYAMLv2 checks one document: Portico's own parser either steps
// aside or gives exactly what yaml.v2 (through jsonable) gives. It parses
// with a store shared by every check, as a provider's worker does: keys
// and values interned by earlier documents, their maps and sequences
// reused. It reports whether the own parser handled the document.
func sameAsYAMLv2(t testing.TB, doc []byte, what string) (handled bool) {
	t.Helper()
	fast, ok := resource.ParseFastYAMLShared(doc)
	if !ok {
		return false
	}
	v2, ok2 := resource.ParseYAMLv2Tree(doc)
	if !ok2 {
		t.Errorf("%s: own parser read a document yaml.v2 rejects (or reads as something else)\ndocument:\n%s\nown: %#v", what, doc, fast)
		return true
	}
	if !reflect.DeepEqual(fast, v2) {
		t.Errorf("%s: parsers differ\ndocument:\n%s\nown:    %#v\nyaml.v2: %#v", what, doc, fast, v2)
	}
	return true
}

// scalarsForYAML are plain, quoted and odd scalars, YAML 1.1's special
// spellings among them.
var scalarsForYAML = []string{
	"a", "web", "reviews.default.svc.cluster.local", "x-forwarded-for", "/api/v1", "GET", "ROUND_ROBIN", "v1", "10.0.0.1",
	"0", "1", "-1", "+1", "007", "0x1F", "0o17", "0b101", "-0b1", "1_000", "1e3", "1.5", "-0.0", ".5", "1.", "1e400", "12345678901234567890",
	"99999999999999999999999", "9223372036854775807", "9223372036854775808", "-9223372036854775809", "0x_1", "1__0",
	"y", "n", "yes", "No", "ON", "off", "true", "False", "null", "NULL", "~", ".nan", ".inf", "-.Inf", "<<",
	"2001-12-14", "2001-12-14T21:59:43.10Z", "2001-12-14 21:59:43", "1234-", "5s", "-5s", "1h30m", "<&>", "a#b", "a #b", "a: b", "a:b",
	"a,b", "[a]", "{a}", "a]", "a}", "-", "- a", "-a", "?a", ":a", "%a", "@a", "`a", "!a", "&a", "*a", "|", ">", "a'b", `a"b`, "é", "日本",
	"'q'", "'it''s'", "''", `"d"`, `""`, `"a\"b"`, `"a\\b"`, `"a\nb"`, `"\t"`, `"\x41"`, `"\u00e9"`, `"a\/b"`, `"unterminated`, `'unterminated`,
	"a ", " a", "a  b", "#", "a # c", "[]", "{}", "[a, b]", "[1, yes, ~, 'q', \"d\"]", "{a: 1, b: x}", "{a: 1,b: 2}", "[a,b]", "[a, [b]]",
	"{a: {b: 1}}", "[a,]", "[,]", "{a}", "{a: }", "{1: a}", "{yes: a}", "{'k': v}", "[a: 1]", "[-1, +2, .5]", "[http://x]",
}

// commonScalars is how many of scalarsForYAML's first entries are the
// kind configuration files are made of.
const commonScalars = 40

var keysForYAML = []string{"a", "b", "name", "host", "spec", "metadata", "x-y", "a.b/c", "Name", "1", "1a", "yes", "null", "~",
	"'quoted'", `"dq"`, "'a b'", "<<", "-a", ".5", "0x1", "a b", "?", "k ", "2001-01-01"}

// genYAML prints a random document: a block mapping at the top, nested
// mappings and sequences in block, compact and flow styles, block
// scalars, comments and blank lines, and now and then a misplaced
// indentation.
func genYAML(rng *rand.Rand) string {
	var b strings.Builder
	var mapping func(indent, depth int)
	var value func(indent, depth int, inSeq bool)
	pad := func(n int) string { return strings.Repeat(" ", n) }
	scalar := func() string { // mostly the first, common ones
		if rng.IntN(4) > 0 {
			return scalarsForYAML[rng.IntN(commonScalars)]
		}
		return scalarsForYAML[rng.IntN(len(scalarsForYAML))]
	}
	step := func() int { return 1 + rng.IntN(4) }
	comment := func() {
		if rng.IntN(8) == 0 {
			b.WriteString(pad(rng.IntN(6)) + "# c: [x]\n")
		}
		if rng.IntN(10) == 0 {
			b.WriteString(pad(rng.IntN(3)) + "\n")
		}
	}
	blockScalar := func(indent int) {
		b.WriteString([]string{"|", ">", "|-", ">-", "|+", ">+", "|2", "| # c", "|", ">"}[rng.IntN(10)] + "\n")
		base := indent + step()
		if rng.IntN(10) == 0 {
			base = indent
		}
		for range 1 + rng.IntN(4) {
			switch rng.IntN(8) {
			case 0:
				b.WriteString("\n")
			case 1:
				b.WriteString(pad(base+rng.IntN(3)) + "more # not a comment\n")
			default:
				b.WriteString(pad(base) + scalar() + "\n")
			}
		}
		if rng.IntN(4) == 0 {
			b.WriteString("\n")
		}
	}
	value = func(indent, depth int, inSeq bool) {
		r := rng.IntN(10)
		if depth > 4 {
			r = 0
		}
		switch {
		case r < 5:
			s := scalar()
			if rng.IntN(6) == 0 {
				s += " # comment"
			}
			b.WriteString(" " + s + "\n")
		case r == 5:
			b.WriteString(" ")
			blockScalar(indent)
		case r == 6 || r == 7: // a nested mapping
			b.WriteString("\n")
			comment()
			mapping(indent+step(), depth+1)
		default: // a sequence, sometimes at the mapping's own indentation
			b.WriteString("\n")
			in := indent + step()
			if !inSeq && rng.IntN(3) == 0 {
				in = indent
			}
			for range 1 + rng.IntN(3) {
				comment()
				b.WriteString(pad(in) + "-")
				switch rng.IntN(4) {
				case 0: // a compact mapping
					b.WriteString(" ")
					mapping(-(in + 2), depth+1)
				default:
					value(in, depth+1, true)
				}
			}
		}
	}
	mapping = func(indent, depth int) {
		first := indent < 0 // the first key follows "- " on the same line
		if first {
			indent = -indent
		}
		for i := range 1 + rng.IntN(4) {
			if i > 0 || !first {
				comment()
				in := indent
				if rng.IntN(40) == 0 {
					in += rng.IntN(3) - 1
				}
				b.WriteString(pad(max(in, 0)))
			}
			k := keysForYAML[rng.IntN(len(keysForYAML))]
			if rng.IntN(8) > 0 {
				k = fmt.Sprintf("k%d", rng.IntN(30)) // mostly distinct keys
			}
			b.WriteString(k + ":")
			value(indent, depth, false)
		}
	}
	mapping(0, 0)
	return b.String()
}

// mutateBytes changes, inserts or removes a few bytes.
func mutateBytes(rng *rand.Rand, doc string) string {
	b := []byte(doc)
	const stray = "{}[],:#&*!|>'\"%@`\t\x00\xff -a1\n\\ ~.?"
	for range 1 + rng.IntN(3) {
		if len(b) == 0 {
			break
		}
		i := rng.IntN(len(b))
		switch rng.IntN(3) {
		case 0:
			b[i] = stray[rng.IntN(len(stray))]
		case 1:
			b = append(b[:i], append([]byte{stray[rng.IntN(len(stray))]}, b[i:]...)...)
		default:
			b = append(b[:i], b[i+1:]...)
		}
	}
	return string(b)
}

// TestFastYAMLEqualsYAMLv2 compares Portico's YAML parser with yaml.v2 on
// random documents, the bench generator's files, the golden inputs and
// random worlds, and mutations of all of them (values, keys, lines,
// bytes): wherever the own parser gives an answer it must be yaml.v2's.
// It also checks that the own parser handles the documents it exists
// for, so the comparison is not vacuous.
func TestFastYAMLEqualsYAMLv2(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	compared, handled, generatedHandled := 0, 0, 0
	check := func(doc string, what string) {
		compared++
		if sameAsYAMLv2(t, []byte(doc), what) {
			handled++
		}
	}
	for i := range 6000 {
		doc := genYAML(rng)
		compared++
		if sameAsYAMLv2(t, []byte(doc), fmt.Sprintf("generated %d", i)) {
			handled++
			generatedHandled++
		}
		for j := range 2 {
			check(mutateBytes(rng, doc), fmt.Sprintf("generated %d, byte mutation %d", i, j))
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	for i, doc := range corpus(t, rng) {
		if !sameAsYAMLv2(t, doc, fmt.Sprintf("corpus %d", i)) && i < 20*6 {
			// The bench generator's documents come first in the corpus.
			t.Errorf("own parser stepped aside from a generated service document:\n%s", doc)
		}
		m := string(doc)
		for j := range 20 {
			m = mutate(rng, m)
			check(m, fmt.Sprintf("corpus %d, mutation %d", i, j))
			check(mutateBytes(rng, m), fmt.Sprintf("corpus %d, mutation %d and bytes", i, j))
			if j%5 == 4 {
				m = string(doc)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d documents compared, %d handled by the own parser (%d of 6000 unmutated generated ones)", compared, handled, generatedHandled)
	if generatedHandled < 6000/5 {
		t.Errorf("own parser handled only %d of 6000 generated documents: the comparison says little", generatedHandled)
	}
}

// TestFastYAMLHostile feeds documents built to be expensive: deep
// nesting, huge scalars, many keys, long lines. The own parser must
// either agree with yaml.v2 or step aside (deep nesting beyond its
// limit), and never take long.
func TestFastYAMLHostile(t *testing.T) {
	deep := func(n int, seq bool) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(strings.Repeat(" ", i))
			if seq {
				b.WriteString("- a:\n")
			} else {
				b.WriteString("a:\n")
			}
		}
		return b.String()
	}
	many := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "k%d: v%d\n", i, i)
		}
		return b.String()
	}
	cases := []struct {
		name    string
		doc     string
		handled bool
	}{
		{"nesting within the limit", deep(30, false), true},
		{"nesting beyond the limit", deep(5000, false), false},
		{"sequence nesting beyond the limit", deep(3000, true), false},
		{"huge plain scalar", "a: " + strings.Repeat("x", 8<<20) + "\n", true},
		{"huge quoted scalar", "a: '" + strings.Repeat("x''", 1<<20) + "'\n", true},
		{"huge block scalar", "a: |\n" + strings.Repeat("  line\n", 1<<18), true},
		{"many keys", many(100000), true},
		{"long flow sequence", "a: [" + strings.Repeat("x, ", 100000) + "y]\n", true},
		{"long key", strings.Repeat("k", 2000) + ": v\n", false},
		{"empty", "", false},
		{"no final newline", "a: b", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Only the own parser is timed (a guard against a quadratic
			// blow-up, far above its milliseconds): yaml.v2 itself took
			// over 20 s on the huge scalars under -race on a loaded
			// machine.
			start := time.Now()
			resource.ParseFastYAML([]byte(c.doc))
			own := time.Since(start)
			handled := sameAsYAMLv2(t, []byte(c.doc), c.name)
			if handled != c.handled {
				t.Errorf("handled = %v, want %v", handled, c.handled)
			}
			if own > 20*time.Second {
				t.Errorf("the own parser took %v", own)
			}
		})
	}
}

// FuzzFastYAMLEqualsYAMLv2: on any input, the own parser steps aside or
// agrees with yaml.v2.
func FuzzFastYAMLEqualsYAMLv2(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		f.Add([]byte(genYAML(rng)))
	}
	o := scale.Options{VirtualServices: 3}
	for _, d := range o.All() {
		f.Add([]byte(d.YAML))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		sameAsYAMLv2(t, doc, "fuzz input")
	})
}

// BenchmarkParseYAML compares the own parser with yaml.v2 on the bench
// generator's service files (six documents each), split as the provider
// splits them.
func BenchmarkParseYAML(b *testing.B) {
	o := scale.Options{VirtualServices: 100}
	var docs [][][]byte
	for i := range o.VirtualServices {
		var file [][]byte
		for _, d := range resource.SplitDocuments([]byte(scale.Join(o.Service(i, 0)))) {
			file = append(file, d.Data)
		}
		docs = append(docs, file)
	}
	for _, p := range []struct {
		name  string
		parse func([]byte) (map[string]any, bool)
	}{{"own", resource.ParseFastYAML}, {"yaml.v2", resource.ParseYAMLv2Tree}} {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				for _, d := range docs[i%len(docs)] {
					if _, ok := p.parse(d); !ok {
						b.Fatalf("%s stepped aside:\n%s", p.name, d)
					}
				}
			}
		})
	}
}
