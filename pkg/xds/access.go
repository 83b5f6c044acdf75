package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/portico-gateway/portico/pkg/xds/auth"
)

// SecretOrigins names, per SDS secret name, the namespaces of the
// Kubernetes Secrets its content was read from.
type SecretOrigins map[string][]string

// SetSecretOrigins tells the server where the Kubernetes Secrets of a
// class's next snapshot come from; the next successful Publish of the
// class adopts them. Without origins a "kubernetes://" secret is served
// only to trusted proxies.
func (s *Server) SetSecretOrigins(class string, origins SecretOrigins) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pendingOrigins[class] = origins
}

// adoptOrigins makes a class's pending origins current; it reports whether
// they changed. Call with s.mu held.
func (s *Server) adoptOrigins(class string) bool {
	next, ok := s.pendingOrigins[class]
	if !ok {
		return false
	}
	delete(s.pendingOrigins, class)
	prev := s.origins[class]
	s.origins[class] = next
	return !maps.EqualFunc(prev, next, slices.Equal)
}

// secretAllowed applies Istio's rule for serving a secret to a proxy
// (pilot/pkg/xds/sds.go, filterAuthorizedResources), adapted to Portico,
// which reads credentialName Secrets when it binds the configuration:
//
//   - file-cert:/file-root: secrets name files on the proxy's own
//     filesystem and carry no key material: always served;
//   - a kubernetes:// secret only if every Kubernetes Secret it was read
//     from is in the proxy's namespace, and, when it holds a private key,
//     only if the proxy's service account may read Secrets there; a CA
//     certificate alone is public;
//   - anything else only to trusted proxies.
func secretAllowed(g auth.Grant, name string, origins []string, caOnly bool) bool {
	switch {
	case g.AllSecrets:
		return true
	case strings.HasPrefix(name, "file-cert:"), strings.HasPrefix(name, "file-root:"):
		return true
	case strings.HasPrefix(name, "kubernetes://"):
		if len(origins) == 0 || g.Namespace == "" {
			return false
		}
		for _, ns := range origins {
			if ns != g.Namespace {
				return false
			}
		}
		return caOnly || g.ReadSecrets
	}
	return false
}

// viewKey identifies what a proxy may see of a class snapshot.
type viewKey struct {
	class       string
	snap        *Snapshot
	namespace   string
	readSecrets bool
}

// view returns the part of a class snapshot a proxy may receive: all of it
// but the secrets it is not allowed. Views are shared by proxies with the
// same grant. Call with s.mu held.
func (s *Server) view(class string, snap *Snapshot, g auth.Grant) *cachev3.Snapshot {
	if g.AllSecrets {
		return snap.Snapshot
	}
	key := viewKey{class: class, snap: snap, namespace: g.Namespace, readSecrets: g.ReadSecrets}
	if v, ok := s.views[key]; ok {
		return v
	}
	origins := s.origins[class]
	idx := cachev3.GetResponseType(resourcev3.SecretType)
	items := snap.Resources[idx].Items
	allowed := make(map[string]cachetypes.ResourceWithTTL, len(items))
	for name, r := range items {
		sec, _ := r.Resource.(*tlsv3.Secret)
		caOnly := sec != nil && sec.GetTlsCertificate() == nil && sec.GetGenericSecret() == nil
		if secretAllowed(g, name, origins[name], caOnly) {
			allowed[name] = r
		}
	}
	v := snap.Snapshot
	if len(allowed) != len(items) {
		// The same version scheme as the snapshot's: the filtered set has
		// its own version, equal to the full one only if nothing is left out.
		h := sha256.New()
		hashes := snap.hashes[resourcev3.SecretType]
		versions := make(map[string]string, len(allowed))
		for _, name := range slices.Sorted(maps.Keys(allowed)) {
			h.Write([]byte(name))
			h.Write([]byte(hashes[name]))
			versions[name] = hashes[name]
		}
		cp := &cachev3.Snapshot{Resources: snap.Resources, VersionMap: maps.Clone(snap.VersionMap)}
		cp.Resources[idx] = cachev3.Resources{Version: hex.EncodeToString(h.Sum(nil))[:16], Items: allowed}
		cp.VersionMap[resourcev3.SecretType] = versions
		v = cp
	}
	s.views[key] = v
	return v
}

// forgetViews drops the views of a class (its snapshot or the origins of
// its secrets changed). Call with s.mu held.
func (s *Server) forgetViews(class string) {
	for k := range s.views {
		if k.class == class {
			delete(s.views, k)
		}
	}
}
