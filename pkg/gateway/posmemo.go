package gateway

// byPosition carries values computed from object versions (a
// VirtualService's conversion, a DestinationRule's findings) from one
// build to the next, as the last build's list: from one snapshot to the
// next a list keeps its order but for what changed, so a version is
// looked for at its own position first (an ID comparison) and through an
// index only when another is there. Keyed by a map instead, every build
// wrote and read one entry per object: tens of thousands of hashes per
// change.
type byPosition[V any] struct {
	ids  []objectID
	vals []V
	byID map[objectID]int // made on the first miss
}

// find returns the value of the version id, expected at position i.
func (p *byPosition[V]) find(i int, id objectID) (V, bool) {
	if i < len(p.ids) && p.ids[i] == id {
		return p.vals[i], true
	}
	if p.byID == nil {
		p.byID = make(map[objectID]int, len(p.ids))
		for j, x := range p.ids {
			p.byID[x] = j
		}
	}
	if j, ok := p.byID[id]; ok && id != (objectID{}) {
		return p.vals[j], true
	}
	var zero V
	return zero, false
}

// reset empties p for a list of n, reusing its arrays.
func (p *byPosition[V]) reset(n int) {
	p.ids, p.vals, p.byID = resizedTo(p.ids, n), resizedTo(p.vals, n), nil
}

// set records the value of the version at position i.
func (p *byPosition[V]) set(i int, id objectID, v V) {
	p.ids[i], p.vals[i] = id, v
}
