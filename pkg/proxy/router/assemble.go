package router

import (
	"maps"
	"slices"
)

// AssembleFrom is Assemble for a route configuration whose previous table
// is prev: when one virtual host among thousands changed (the route
// configuration of a busy port arrives whole for every change), it
// patches a copy of prev's lookup instead of building it again — a
// domain map of every host, every wildcard sorted, every cluster
// collected and sorted. It falls back to Assemble whenever the patch
// would not be the same table: a different length, a changed domain
// list (which could also make or undo a duplicate), or many changes.
// prev is not modified.
func AssembleFrom(prev *Table, name string, ignorePortInHost bool, vhosts []*CompiledVirtualHost) (*Table, error) {
	if prev == nil || prev.Name != name || prev.IgnorePortInHost != ignorePortInHost || len(prev.from) != len(vhosts) {
		return Assemble(name, ignorePortInHost, vhosts)
	}
	var changed []int
	for i, cv := range vhosts {
		old := prev.from[i]
		if cv == old {
			continue
		}
		if !slices.Equal(cv.Domains, old.Domains) {
			return Assemble(name, ignorePortInHost, vhosts)
		}
		changed = append(changed, i)
		if len(changed) > len(vhosts)/8 {
			return Assemble(name, ignorePortInHost, vhosts)
		}
	}
	t := &Table{Name: name, IgnorePortInHost: ignorePortInHost, exact: prev.exact, suffix: prev.suffix, prefix: prev.prefix,
		any: prev.any, Clusters: prev.Clusters, from: vhosts}
	if len(changed) == 0 {
		return t, nil
	}
	t.exact = maps.Clone(prev.exact)
	sameClusters := true
	for _, i := range changed {
		old, cv := prev.from[i].VirtualHost, vhosts[i]
		sameClusters = sameClusters && slices.Equal(cv.Clusters, prev.from[i].Clusters)
		for _, d := range cv.Domains {
			switch {
			case d == "*":
				t.any = cv.VirtualHost
			case len(d) > 0 && (d[0] == '*' || d[len(d)-1] == '*'):
				// Wildcards are few: replace the old host's entries.
				t.suffix = replaceHost(t.suffix, prev.suffix, old, cv.VirtualHost)
				t.prefix = replaceHost(t.prefix, prev.prefix, old, cv.VirtualHost)
			default:
				t.exact[d] = cv.VirtualHost
			}
		}
	}
	if !sameClusters {
		set := map[string]bool{}
		for _, cv := range vhosts {
			for _, c := range cv.Clusters {
				set[c] = true
			}
		}
		t.Clusters = slices.Sorted(maps.Keys(set))
	}
	return t, nil
}

// replaceHost returns list with old's entries pointing at vh, copying
// list first if it is still prev's (shared with the previous table).
func replaceHost(list, prev []wildcard, old, vh *VirtualHost) []wildcard {
	for i := range list {
		if list[i].vh != old {
			continue
		}
		if len(list) > 0 && len(prev) > 0 && &list[0] == &prev[0] {
			list = slices.Clone(list)
		}
		list[i].vh = vh
	}
	return list
}
