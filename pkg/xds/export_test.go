package xds

// Memo names the memo for tests that thread it through builds.
type Memo = memo

// Carried reports the types whose typeMemo next took over from prev.
func Carried(prev, next *Memo) map[string]bool {
	out := map[string]bool{}
	for typ, t := range next.types {
		if prev != nil && prev.types[typ] == t {
			out[typ] = true
		}
	}
	return out
}
