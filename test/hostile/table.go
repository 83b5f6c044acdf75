package hostile

import (
	"fmt"
	"strings"
)

// Table renders results as Markdown: case, what it sends, nginx's
// reference, Portico's result, and whether it is one Portico wants.
func Table(cases []*Case, got map[string]Result) string {
	var b strings.Builder
	b.WriteString("| Case | What the client does | nginx 1.22 | Portico | OK |\n| --- | --- | --- | --- | :---: |\n")
	pass, total := 0, 0
	for _, c := range cases {
		r, ok := got[c.Name]
		if !ok {
			continue
		}
		total++
		mark := "✗"
		if c.Accepts(r) {
			mark = "✓"
			pass++
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", c.Name, cell(c.What), cell(c.Nginx), cell(r.String()), mark)
	}
	fmt.Fprintf(&b, "\n%d of %d cases as wanted.\n", pass, total)
	return b.String()
}

// cell escapes a table cell.
func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}

// Failing renders the cases whose result Portico does not want: what
// was observed, what is wanted, and nginx's behaviour.
func Failing(cases []*Case, got map[string]Result) string {
	var b strings.Builder
	b.WriteString("| Case | What the client does | Portico now | Wanted | nginx 1.22 |\n| --- | --- | --- | --- | --- |\n")
	n := 0
	for _, c := range cases {
		r, ok := got[c.Name]
		if !ok || c.Accepts(r) {
			continue
		}
		n++
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", c.Name, cell(c.What), cell(r.String()), cell(strings.Join(c.Want, " or ")), cell(c.Nginx))
	}
	fmt.Fprintf(&b, "\n%d failing.\n", n)
	return b.String()
}
