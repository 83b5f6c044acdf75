package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds/validate"
)

// typeOrder lists the xDS types in make-before-break order: clusters and
// endpoints before the listeners and routes that use them.
var typeOrder = []string{
	resourcev3.ClusterType,
	resourcev3.EndpointType,
	resourcev3.SecretType,
	resourcev3.ListenerType,
	resourcev3.RouteType,
}

// Snapshot is a validated, versioned set of resources for one proxy class.
type Snapshot struct {
	*cachev3.Snapshot
	// Versions is the content version of each type.
	Versions map[string]string
	// hashes holds each resource's content hash by type and name.
	hashes map[string]map[string]string
}

// Version summarises all type versions.
func (s *Snapshot) Version() string {
	h := sha256.New()
	for _, t := range typeOrder {
		h.Write([]byte(s.Versions[t]))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// validated remembers resources (by content hash) that already passed deep
// validation: most pushes change a few resources, and validating thousands
// of unchanged route entries again would dominate push latency.
type validated struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

func (v *validated) check(hash string, m proto.Message) error {
	v.mu.Lock()
	_, ok := v.seen[hash]
	v.mu.Unlock()
	if ok {
		return nil
	}
	if err := validate.Deep(m); err != nil {
		return err
	}
	v.mu.Lock()
	if len(v.seen) > 1<<20 {
		v.seen = map[string]struct{}{} // bound memory; revalidation is only slower
	}
	v.seen[hash] = struct{}{}
	v.mu.Unlock()
	return nil
}

// NewSnapshot versions and checks resources: Consistent() (every EDS and
// RDS resource referenced, every reference present) and Envoy's validation
// rules on every message, Any fields unpacked. An error names the resource
// and the Istio resources it came from.
func (v *validated) NewSnapshot(res *translate.Resources) (*Snapshot, error) {
	byType := map[string][]cachetypes.Resource{
		resourcev3.ClusterType:  toResources(res.Clusters),
		resourcev3.EndpointType: toResources(res.Endpoints),
		resourcev3.SecretType:   toResources(res.Secrets),
		resourcev3.ListenerType: toResources(res.Listeners),
		resourcev3.RouteType:    toResources(res.Routes),
	}
	snap := &Snapshot{Snapshot: &cachev3.Snapshot{}, Versions: map[string]string{}, hashes: map[string]map[string]string{}}
	opts := proto.MarshalOptions{Deterministic: true}
	for _, typ := range typeOrder {
		items := byType[typ]
		typeHash := sha256.New()
		hashes := make(map[string]string, len(items))
		for _, r := range items {
			b, err := opts.Marshal(r)
			if err != nil {
				return nil, fmt.Errorf("marshalling %s %s: %w", shortType(typ), cachev3.GetResourceName(r), err)
			}
			sum := sha256.Sum256(b)
			hash := hex.EncodeToString(sum[:16])
			name := cachev3.GetResourceName(r)
			if err := v.check(hash, r); err != nil {
				return nil, fmt.Errorf("invalid %s %s (from %s): %w", shortType(typ), name, sources(r), err)
			}
			hashes[name] = hash
			typeHash.Write([]byte(name))
			typeHash.Write(sum[:])
		}
		version := hex.EncodeToString(typeHash.Sum(nil))[:16]
		snap.Versions[typ] = version
		snap.hashes[typ] = hashes
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(version, items)
	}
	// Delta xDS compares per-resource versions; reuse the hashes above
	// instead of letting the cache marshal everything again.
	snap.VersionMap = snap.hashes
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("inconsistent snapshot: %w", err)
	}
	return snap, nil
}

func toResources[T cachetypes.Resource](list []T) []cachetypes.Resource {
	out := make([]cachetypes.Resource, len(list))
	for i, r := range list {
		out[i] = r
	}
	return out
}

func shortType(typeURL string) string {
	switch typeURL {
	case resourcev3.ClusterType:
		return "cluster"
	case resourcev3.EndpointType:
		return "endpoints"
	case resourcev3.SecretType:
		return "secret"
	case resourcev3.ListenerType:
		return "listener"
	case resourcev3.RouteType:
		return "route configuration"
	}
	return typeURL
}

// sources reads the portico.sources metadata translate puts on resources.
func sources(r cachetypes.Resource) string {
	type withMeta interface{ GetMetadata() *corev3.Metadata }
	if m, ok := r.(withMeta); ok {
		if s := m.GetMetadata().GetFilterMetadata()["portico"].GetFields()["sources"].GetListValue(); s != nil {
			out := ""
			for i, v := range s.GetValues() {
				if i > 0 {
					out += ", "
				}
				out += v.GetStringValue()
			}
			return out
		}
	}
	return "unknown source"
}

// ErrNoSnapshot is returned for classes nothing was published for.
var ErrNoSnapshot = errors.New("no snapshot")
