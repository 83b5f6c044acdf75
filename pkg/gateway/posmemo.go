package gateway

// byPosition carries values computed from object versions (a
// VirtualService's conversion, a DestinationRule's findings, an
// Envoy-limits verdict) from one build to the next, as the last build's
// list: from one snapshot to the next a list keeps its order but for what
// changed, so a version is looked for at its own position first (an ID
// comparison) and through an index only when another is there. Keyed by a
// map instead, every build wrote and read one entry per object: tens of
// thousands of hashes per change.
type byPosition[V any] struct {
	ids   []objectID
	names []objectName
	vals  []V
	byID  map[objectID]int // made on the first miss
}

// find returns the value of the version id of the object named name,
// expected at position i. Another version of the same object in its
// place is a miss without an index: a changed object, the common case,
// must not cost one.
func (p *byPosition[V]) find(i int, id objectID, name objectName) (V, bool) {
	var zero V
	if i < len(p.ids) {
		if p.ids[i] == id {
			return p.vals[i], true
		}
		if p.names[i] == name {
			return zero, false
		}
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
	return zero, false
}

// reset empties p for a list of n, reusing its arrays.
func (p *byPosition[V]) reset(n int) {
	p.ids, p.names, p.vals, p.byID = resizedTo(p.ids, n), resizedTo(p.names, n), resizedTo(p.vals, n), nil
}

// set records the value of the version at position i.
func (p *byPosition[V]) set(i int, id objectID, name objectName, v V) {
	p.ids[i], p.names[i], p.vals[i] = id, name, v
}
