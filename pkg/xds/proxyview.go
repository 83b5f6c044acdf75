package xds

import (
	"errors"
	"fmt"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
)

// ErrNoProxy is returned for a proxy that is not connected.
var ErrNoProxy = errors.New("no such proxy connected")

// ProxyView is what the server means one proxy to have right now: its
// class snapshot less what the proxy may not receive (secrets outside
// its grant). `portico proxy-status POD` diffs it against the proxy's own
// config dump, as istioctl diffs istiod's view against Envoy's.
type ProxyView struct {
	ID, Namespace, Class string
	// Versions is the version of each type (by type URL) the proxy was
	// last given.
	Versions map[string]string
	// Resources holds, by type URL and name, the resources as translated.
	Resources map[string]map[string]proto.Message
}

// ProxyView returns the view of the connected proxy whose node id is id,
// or "id.namespace" as istioctl names a proxy.
func (s *Server) ProxyView(id string) (*ProxyView, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var found []*nodeState
	for _, n := range s.nodes {
		if n.ID == id || n.Namespace != "" && n.ID+"."+n.Namespace == id {
			found = append(found, n)
		}
	}
	switch {
	case len(found) == 0:
		return nil, fmt.Errorf("%w: %q", ErrNoProxy, id)
	case len(found) > 1:
		var names []string
		for _, n := range found {
			names = append(names, n.ID+"."+n.Namespace)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%q names several proxies (%s): name one as ID.NAMESPACE", id, strings.Join(names, ", "))
	}
	n := found[0]
	v := &ProxyView{ID: n.ID, Namespace: n.Namespace, Class: n.Class, Versions: map[string]string{}, Resources: map[string]map[string]proto.Message{}}
	snap := s.published[n.Class]
	if n.current == nil || snap == nil {
		return v, nil // connected, nothing sent yet
	}
	for _, typ := range typeOrder {
		v.Versions[typ] = n.current.GetVersion(typ)
		byName := map[string]proto.Message{}
		for name := range n.current.GetResources(typ) {
			if m, ok := snap.published(typ, name); ok {
				// Published virtual hosts, clusters and load
				// assignments are compact stand-ins (compact.go).
				byName[name] = expand(m)
			}
		}
		v.Resources[typ] = byName
	}
	return v, nil
}

// buildVersion reads the build version a node reports
// (user_agent_build_version, "major.minor.patch"), or its free-form
// user_agent_version.
func buildVersion(n *corev3.Node) string {
	if v := n.GetUserAgentBuildVersion().GetVersion(); v != nil {
		return fmt.Sprintf("%d.%d.%d", v.GetMajorNumber(), v.GetMinorNumber(), v.GetPatch())
	}
	return n.GetUserAgentVersion()
}
