package xds

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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

// published returns the resource of a type and name as handed to the xDS
// cache (a virtual host, cluster or load assignment may be a compact
// stand-in, compact.go).
func (s *Snapshot) published(typeURL, name string) (proto.Message, bool) {
	r, ok := s.Resources[cachev3.GetResponseType(typeURL)].Items[name]
	return r.Resource, ok
}

// Originals returns the resources of a type as translated, by name: for
// inspection (config dumps), not for serving. Compact stand-ins (see
// compact.go) are expanded into full messages, new on every call.
func (s *Snapshot) Originals(typeURL string) map[string]proto.Message {
	items := s.Resources[cachev3.GetResponseType(typeURL)].Items
	out := make(map[string]proto.Message, len(items))
	for name, r := range items {
		out[name] = expand(r.Resource)
	}
	return out
}

// Version summarises all type versions.
func (s *Snapshot) Version() string {
	h := sha256.New()
	for _, t := range typeOrder {
		h.Write([]byte(s.Versions[t]))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// memo remembers, for one class, what its last published snapshot held,
// per xDS type (typeMemo), and its route configurations with their
// virtual hosts' hashes (routeMemo). Only the last snapshot's entries are
// kept: deleted resources are forgotten.
type memo struct {
	types map[string]*typeMemo // by type URL
	// routes are route configurations as last published, by name.
	routes map[string]*routeMemo
	// consistent identifies the references last checked by Consistent():
	// listeners and clusters (which refer) and the names of route
	// configurations and endpoints (which are referred to).
	consistent uint64
}

// typeMemo is what a snapshot held of one type: each message's content
// hash by pointer (the translator hands back the very same messages for
// what did not change, so they need not be marshalled again), the hashes
// that passed validation (so unchanged content is not validated again),
// and what was published. When a build hands back exactly the messages
// of the last one (most types, when one virtual host changed), the whole
// typeMemo is carried over instead of being looked up message by
// message: a typeMemo is never written once its build is done.
type typeMemo struct {
	hashes map[proto.Message]string
	valid  map[string]struct{}
	// refs are the load assignments compact clusters refer to.
	refs map[proto.Message][]string
	// What was published: the messages as translated (to tell them the
	// same), the type's version, hashes by name, the cache's resources,
	// and a hash of the names (for the consistency key).
	items     []cachetypes.Resource
	version   string
	byName    map[string]string
	resources cachev3.Resources
	names     uint64
}

// routeMemo is a route configuration as last published: when its shell and
// virtual hosts are the same again, so is what was published for it.
// vhosts[i] (all valid, all compact stand-ins once the build is done,
// which hold their own bytes) hashed to hashes[i]. They are looked up by
// position first: the translator hands back the same messages in the
// same places but for what changed, and a map operation per virtual host
// per change (six, across the memos) was most of preparing a one-route
// change at 10,000 virtual hosts.
type routeMemo struct {
	shell     []byte
	shellHash string
	vhosts    []*routev3.VirtualHost
	hashes    []string
	hash      string
	wire      *routev3.RouteConfiguration
	// index finds a virtual host not in its place, made on first use.
	// A routeMemo is only read once its build is done, by the builds of
	// its class, one at a time.
	index map[*routev3.VirtualHost]int
}

// lookup returns the hash vh had in this route configuration, looking
// at position i first.
func (m *routeMemo) lookup(i int, vh *routev3.VirtualHost) (string, bool) {
	if m == nil {
		return "", false
	}
	if i < len(m.vhosts) {
		if m.vhosts[i] == vh {
			return m.hashes[i], true
		}
		if m.vhosts[i].GetName() == vh.GetName() {
			// Another version of the virtual host in its place: names
			// are unique in a route configuration, so vh is nowhere
			// else, and a changed virtual host costs no index.
			return "", false
		}
	}
	if m.index == nil {
		m.index = make(map[*routev3.VirtualHost]int, len(m.vhosts))
		for j, v := range m.vhosts {
			m.index[v] = j
		}
	}
	if j, ok := m.index[vh]; ok {
		return m.hashes[j], true
	}
	return "", false
}

// noType is the typeMemo of a type a memo does not hold: empty, read only.
var noType = &typeMemo{}

// of returns the typeMemo of a type, noType when there is none.
func (m *memo) of(typ string) *typeMemo {
	if t := m.types[typ]; t != nil {
		return t
	}
	return noType
}

// newMemo returns an empty memo sized like like (which may be nil).
func newMemo(like *memo) *memo {
	if like == nil {
		like = &memo{}
	}
	return &memo{types: make(map[string]*typeMemo, len(typeOrder)), routes: make(map[string]*routeMemo, len(like.routes))}
}

// newTypeMemo returns an empty typeMemo sized like like.
func newTypeMemo(like *typeMemo) *typeMemo {
	return &typeMemo{hashes: make(map[proto.Message]string, len(like.hashes)), valid: make(map[string]struct{}, len(like.valid)),
		refs: make(map[proto.Message][]string, len(like.refs))}
}

// typeOf is the xDS type of a message the translator makes (virtual
// hosts belong to route configurations).
func typeOf(m proto.Message) string {
	switch m.(type) {
	case *clusterv3.Cluster:
		return resourcev3.ClusterType
	case *endpointv3.ClusterLoadAssignment:
		return resourcev3.EndpointType
	case *routev3.RouteConfiguration, *routev3.VirtualHost:
		return resourcev3.RouteType
	case *listenerv3.Listener:
		return resourcev3.ListenerType
	}
	return resourcev3.SecretType
}

// builder versions one snapshot, filling the next memo from the previous.
type builder struct {
	prev, next *memo
	opts       proto.MarshalOptions
	// pre holds what prepare computed in parallel for new messages.
	pre map[proto.Message]*prepared
	// enc holds the encodings of new messages of compacted types, from
	// which their stand-ins are made once the snapshot is complete.
	enc map[proto.Message][]byte
	// vhosts are the stand-ins published for new virtual hosts.
	vhosts map[*routev3.VirtualHost]*routev3.VirtualHost
	// carried are the types whose typeMemo is the previous one.
	carried map[string]bool
	// prevT and nextT are the typeMemos of the type being versioned.
	prevT, nextT *typeMemo
	// valid validates new content (see validate.Validator).
	valid *validate.Validator
}

// prepared is the per-message work of a snapshot, done ahead in parallel.
type prepared struct {
	hash    string
	wire    []byte // the encoding, kept for virtual hosts and compacted types
	err     error  // marshalling failed
	checked bool   // validation ran (the hash was not known to be valid)
	invalid error  // what validation found
	// refs are a streamed cluster's load assignments (hasRefs: known),
	// read from the full message before it was replaced by its stand-in.
	refs    []string
	hasRefs bool
}

// parallelFrom is how many new messages make parallel preparation worth
// its goroutines: a cold start or a large change, not an edit.
const parallelFrom = 256

// prepare marshals, hashes and validates the messages the previous
// snapshot did not have, spread over the available CPUs. Each message is
// independent, and on a cold start of thousands of VirtualServices this
// is most of a snapshot's cost. The sequential pass then only looks up.
func (b *builder) prepare(byType map[string][]cachetypes.Resource) {
	var work []proto.Message
	for typ, items := range byType {
		if b.carried[typ] {
			continue
		}
		prev := b.prev.of(typ)
		for _, r := range items {
			if rc, ok := r.(*routev3.RouteConfiguration); ok {
				m := b.prev.routes[rc.Name]
				for i, vh := range rc.VirtualHosts {
					if b.pre[vh] != nil {
						continue // streamed
					}
					if _, ok := m.lookup(i, vh); !ok {
						work = append(work, vh)
					}
				}
				continue
			}
			if _, ok := prev.hashes[r]; !ok && b.pre[r] == nil {
				work = append(work, r)
			}
		}
	}
	if len(work) < parallelFrom {
		return
	}
	results := make([]prepared, len(work))
	inParallel(len(work), func(i int) {
		r := &results[i]
		bytes, err := b.opts.Marshal(work[i])
		if err != nil {
			r.err = err
			return
		}
		r.hash = contentHash(bytes)
		if _, ok := compactFields(work[i]); ok {
			r.wire = bytes
		}
		if _, ok := b.prev.of(typeOf(work[i])).valid[r.hash]; !ok {
			r.checked, r.invalid = true, b.valid.Deep(expand(work[i]))
		}
	})
	if b.pre == nil {
		b.pre = make(map[proto.Message]*prepared, len(work))
	}
	for i, m := range work {
		b.pre[m] = &results[i]
	}
}

// inParallel runs do(0..n-1) spread over the available CPUs.
func inParallel(n int, do func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				do(i)
			}
		})
	}
	wg.Wait()
}

func (b *builder) sum(bytes []byte) string { return contentHash(bytes) }

// contentHash is a resource's content hash: of its deterministic encoding,
// the SHA-256 in hex that go-control-plane sends as the resource's
// version in delta responses (cachev3.HashResource), and the version of
// every published resource but route configurations (routeVersion). The
// same content always gets the same version: a proxy reconnecting with
// the versions it holds (initial_resource_versions) is sent only what it
// lacks.
func contentHash(bytes []byte) string {
	sum := sha256.Sum256(bytes)
	return hex.EncodeToString(sum[:])
}

// routeVersion is a route configuration's content version: the SHA-256,
// in hex, of its shell's content hash (the configuration without virtual
// hosts) followed by each virtual host's, in order. Equal content gives
// an equal version; a change to the shell, to a virtual host, or to their
// order, a new one. It is not the hash of the whole encoding that
// go-control-plane's HashResource would give: at 30,000 routes on one
// port that streamed ~10 MB through SHA-256 per change (35 ms here),
// while the virtual hosts' hashes are at hand. Versions are opaque to
// proxies, and the same content always gets the same one, so a proxy
// reconnecting with the versions it holds is still sent only what it
// lacks.
func routeVersion(shellHash string, vhostHashes []string) string {
	// Written in chunks of many hashes: a Write per virtual host copied
	// each hash to the heap first, and one buffer of them all was 190 KB
	// a change at 3,000 virtual hosts.
	h := sha256.New()
	buf := make([]byte, 0, 8<<10)
	buf = append(buf, shellHash...)
	for _, vh := range vhostHashes {
		if len(buf)+len(vh) > cap(buf) {
			h.Write(buf)
			buf = buf[:0]
		}
		buf = append(buf, vh...)
	}
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil))
}

// RouteVersion is the version a snapshot gives a route configuration (for
// tests, from the full message).
func RouteVersion(rc *routev3.RouteConfiguration) (string, error) {
	shell := proto.Clone(rc).(*routev3.RouteConfiguration)
	shell.VirtualHosts = nil
	opts := proto.MarshalOptions{Deterministic: true}
	b, err := opts.Marshal(shell)
	if err != nil {
		return "", err
	}
	hashes := make([]string, len(rc.VirtualHosts))
	for i, vh := range rc.VirtualHosts {
		vb, err := opts.Marshal(vh)
		if err != nil {
			return "", err
		}
		hashes[i] = contentHash(vb)
	}
	return routeVersion(contentHash(b), hashes), nil
}

// hash returns a message's content hash, marshalling only messages the
// previous snapshot did not already hold.
func (b *builder) hash(m proto.Message) (string, error) {
	h, ok := b.prevT.hashes[m]
	if refs, ok := b.prevT.refs[m]; ok {
		b.nextT.refs[m] = refs
	}
	if p := b.pre[m]; !ok && p != nil {
		if p.err != nil {
			return "", p.err
		}
		h, ok = p.hash, true
		if p.wire != nil {
			b.enc[m] = p.wire
		}
		if p.hasRefs {
			b.nextT.refs[m] = p.refs
		}
	}
	if !ok {
		bytes, err := b.opts.Marshal(m)
		if err != nil {
			return "", err
		}
		h = b.sum(bytes)
		if _, ok := compactFields(m); ok {
			b.enc[m] = bytes
		}
	}
	b.nextT.hashes[m] = h
	return h, nil
}

// virtualHost returns the hash and wire bytes of a virtual host the last
// snapshot did not publish in this route configuration.
func (b *builder) virtualHost(vh *routev3.VirtualHost) (string, []byte, error) {
	if p := b.pre[vh]; p != nil {
		if p.err != nil {
			return "", nil, p.err
		}
		if p.wire != nil {
			return p.hash, p.wire, nil
		}
	}
	bytes, err := b.opts.Marshal(vh)
	if err != nil {
		return "", nil, err
	}
	return b.sum(bytes), bytes, nil
}

// check validates content not validated before.
func (b *builder) check(hash string, m proto.Message) error {
	if _, ok := b.prevT.valid[hash]; !ok {
		if _, ok := b.nextT.valid[hash]; !ok {
			if p := b.pre[m]; p != nil && p.checked && p.hash == hash {
				if p.invalid != nil {
					return p.invalid
				}
			} else if err := b.valid.Deep(expand(m)); err != nil {
				return err
			}
		}
	}
	b.nextT.valid[hash] = struct{}{}
	return nil
}

// resource hashes and checks one resource, and returns what to publish.
//
// A route configuration is taken apart: its virtual hosts are hashed and
// validated one by one, so that a change to one of thousands costs one
// (Envoy's rules for a route configuration are those of its parts). What
// is published for it holds its virtual hosts as compact stand-ins, which
// marshal to their remembered bytes: the xDS server's one marshal per push
// is then a copy of those bytes, not an encoding of every route. (It used
// to be published as one pre-assembled body, which cost a second copy of
// the whole route configuration per change, in the controller's heap.)
func (b *builder) resource(r cachetypes.Resource) (string, cachetypes.Resource, error) {
	rc, ok := r.(*routev3.RouteConfiguration)
	if !ok {
		h, err := b.hash(r)
		if err != nil {
			return "", nil, err
		}
		if err := b.check(h, r); err != nil {
			return "", nil, invalidParts{{msg: expand(r), err: err}}
		}
		return h, r, nil
	}
	shell := shellOf(rc)
	shellBytes, err := b.opts.Marshal(shell)
	if err != nil {
		return "", nil, err
	}
	prev := b.prev.routes[rc.Name]
	if prev != nil && bytes.Equal(prev.shell, shellBytes) && slices.Equal(prev.vhosts, rc.VirtualHosts) {
		// Nothing changed: carry it over.
		b.nextT.valid[prev.shellHash] = struct{}{}
		b.next.routes[rc.Name] = prev
		return prev.hash, prev.wire, nil
	}
	h := b.sum(shellBytes)
	var invalid invalidParts
	if err := b.check(h, shell); err != nil {
		invalid = append(invalid, &invalidPart{msg: shell, err: err})
	}
	hashes := make([]string, len(rc.VirtualHosts))
	// What is published is the shell with every virtual host as a compact
	// stand-in (the unchanged ones already are): it marshals to the
	// virtual hosts' remembered bytes, with no copy of the whole route
	// configuration per change.
	pubs := make([]*routev3.VirtualHost, len(rc.VirtualHosts))
	for i, vh := range rc.VirtualHosts {
		h, ok := prev.lookup(i, vh)
		var vb []byte // the encoding of a virtual host published anew
		if !ok {
			var err error
			if h, vb, err = b.virtualHost(vh); err != nil {
				return "", nil, err
			}
			if err := b.check(h, vh); err != nil {
				// Every invalid virtual host is named, not only the first.
				full := expand(vh)
				invalid = append(invalid, &invalidPart{msg: full, where: describePart(full.ProtoReflect()), err: err})
				continue
			}
		}
		// (What the last snapshot published here was valid.)
		hashes[i] = h
		pub := vh
		if !isCompact(vh) {
			if vb == nil { // published before, yet not as a stand-in
				var err error
				if _, vb, err = b.virtualHost(vh); err != nil {
					return "", nil, err
				}
			}
			if pub = standIn(vh, vb).(*routev3.VirtualHost); pub != vh {
				b.vhosts[vh] = pub // res and the memo follow in compact
			}
		}
		pubs[i] = pub
	}
	if len(invalid) > 0 {
		return "", nil, invalid
	}
	wire := shell
	wire.VirtualHosts = pubs
	m := &routeMemo{shell: shellBytes, shellHash: h, vhosts: rc.VirtualHosts, hashes: hashes, hash: routeVersion(h, hashes), wire: wire}
	b.next.routes[rc.Name] = m
	return m.hash, m.wire, nil
}

// shellOf returns a route configuration without its virtual hosts (their
// fields and unknown bytes shared with rc).
func shellOf(rc *routev3.RouteConfiguration) *routev3.RouteConfiguration {
	shell := &routev3.RouteConfiguration{}
	src, dst := rc.ProtoReflect(), shell.ProtoReflect()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != routeVHosts {
			dst.Set(fd, v)
		}
		return true
	})
	if unknown := src.GetUnknown(); len(unknown) > 0 {
		dst.SetUnknown(unknown)
	}
	return shell
}

// NewSnapshot versions and checks resources: Consistent() (every EDS and
// RDS resource referenced, every reference present) and Envoy's validation
// rules on every message, Any fields unpacked. Messages breaking the rules
// are all reported in an *InvalidError, each with the innermost failing
// part and the Istio resources it came from. prev is the class's memo (nil for
// none); the memo for the next snapshot is returned with it.
func NewSnapshot(res *translate.Resources, prev *memo) (*Snapshot, *memo, error) {
	return newSnapshot(res, prev, nil)
}

// newSnapshot is NewSnapshot for resources whose new messages a Stream
// (which may be nil) already prepared while they were translated.
func newSnapshot(res *translate.Resources, prev *memo, st *Stream) (*Snapshot, *memo, error) {
	if prev == nil {
		prev = newMemo(nil)
	}
	b := &builder{prev: prev, next: newMemo(prev), opts: proto.MarshalOptions{Deterministic: true}, enc: map[proto.Message][]byte{},
		vhosts: map[*routev3.VirtualHost]*routev3.VirtualHost{}, valid: validate.NewValidator()}
	if st != nil {
		b.pre, b.valid = st.pre, st.valid
	}
	// A type whose messages are exactly the last snapshot's is carried
	// over whole. (Route configurations are made anew by every
	// translation; their virtual hosts have a memo of their own.) Only
	// the others are listed as resources: at 30,000 routes on one port
	// the lists of 20,000 clusters and load assignments, made for a
	// comparison, were 1.5 MB of garbage per change.
	same := map[string]bool{
		resourcev3.ClusterType:  sameItems(prev.types[resourcev3.ClusterType], res.Clusters),
		resourcev3.EndpointType: sameItems(prev.types[resourcev3.EndpointType], res.Endpoints),
		resourcev3.SecretType:   sameItems(prev.types[resourcev3.SecretType], res.Secrets),
		resourcev3.ListenerType: sameItems(prev.types[resourcev3.ListenerType], res.Listeners),
	}
	byType := map[string][]cachetypes.Resource{}
	b.carried = map[string]bool{}
	for _, typ := range typeOrder {
		if same[typ] {
			b.carried[typ] = true
			b.next.types[typ] = prev.types[typ]
			continue
		}
		b.next.types[typ] = newTypeMemo(prev.of(typ))
		switch typ {
		case resourcev3.ClusterType:
			byType[typ] = toResources(res.Clusters)
		case resourcev3.EndpointType:
			byType[typ] = toResources(res.Endpoints)
		case resourcev3.SecretType:
			byType[typ] = toResources(res.Secrets)
		case resourcev3.ListenerType:
			byType[typ] = toResources(res.Listeners)
		case resourcev3.RouteType:
			byType[typ] = toResources(res.Routes)
		}
	}
	b.prepare(byType)
	snap := &Snapshot{Snapshot: &cachev3.Snapshot{}, Versions: map[string]string{}, hashes: map[string]map[string]string{}}
	var problems []*Problem
	swaps := map[proto.Message]proto.Message{}
	// What a type's version hashes, collected and hashed at once: written
	// name by name, the hash's per-call overhead was most of its cost.
	var typeHash []byte
	for _, typ := range typeOrder {
		items := byType[typ]
		if b.carried[typ] {
			t := b.next.types[typ]
			snap.Versions[typ], snap.hashes[typ] = t.version, t.byName
			snap.Resources[cachev3.GetResponseType(typ)] = t.resources
			continue
		}
		b.prevT, b.nextT = prev.of(typ), b.next.types[typ]
		typeHash = typeHash[:0]
		hashes := make(map[string]string, len(items))
		published := make([]cachetypes.Resource, 0, len(items))
		names := xxhash.New()
		for _, r := range items {
			name := cachev3.GetResourceName(r)
			hash, pub, err := b.resource(r)
			if err != nil {
				var parts invalidParts
				if !errors.As(err, &parts) {
					return nil, nil, fmt.Errorf("%s %s (from %s): %w", shortType(typ), name, sources(r), err)
				}
				// Go on: every invalid part of the snapshot is reported,
				// so that all of them can be excluded at once.
				for _, p := range parts {
					problems = append(problems, blame(typ, name, p)...)
				}
				continue
			}
			if wire, ok := b.enc[r]; ok {
				// Published and kept as a compact stand-in; res and
				// the memo follow once the whole snapshot is good.
				if c := compactOf(r, wire); c != r {
					if typ == resourcev3.ClusterType {
						// What the consistency check needs of it.
						b.nextT.refs[c] = b.edsRefs(r)
						delete(b.nextT.refs, r)
					}
					swaps[r] = c
					pub = c
				}
			}
			hashes[name] = hash
			published = append(published, pub)
			typeHash = append(append(typeHash, name...), hash...)
			names.WriteString(name)
			names.WriteString("\x00")
		}
		typeSum := sha256.Sum256(typeHash)
		version := hex.EncodeToString(typeSum[:])[:16]
		snap.Versions[typ] = version
		snap.hashes[typ] = hashes
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(version, published)
		t := b.nextT
		t.items, t.version, t.byName = byType[typ], version, hashes
		t.resources, t.names = snap.Resources[cachev3.GetResponseType(typ)], names.Sum64()
	}
	b.prevT, b.nextT = nil, nil
	if len(problems) > 0 {
		return nil, nil, &InvalidError{Problems: problems}
	}
	// Delta xDS compares per-resource versions; reuse the hashes above
	// instead of letting the cache marshal everything again.
	snap.VersionMap = snap.hashes
	// References only change with listeners, clusters, or the names of
	// what they refer to: a change to a route's content needs no new check.
	key := xxhash.New()
	key.WriteString(snap.Versions[resourcev3.ListenerType])
	key.WriteString(snap.Versions[resourcev3.ClusterType])
	for _, typ := range []string{resourcev3.RouteType, resourcev3.EndpointType} {
		var names [8]byte
		binary.LittleEndian.PutUint64(names[:], b.next.types[typ].names)
		key.Write(names[:])
	}
	b.next.consistent = key.Sum64()
	if b.next.consistent != prev.consistent {
		if err := b.consistent(snap); err != nil {
			return nil, nil, fmt.Errorf("inconsistent snapshot: %w", err)
		}
	}
	b.compact(res, swaps)
	// The next build hands back the stand-ins: they are what it compares.
	if !b.carried[resourcev3.ClusterType] {
		b.next.types[resourcev3.ClusterType].items = toResources(res.Clusters)
	}
	if !b.carried[resourcev3.EndpointType] {
		b.next.types[resourcev3.EndpointType].items = toResources(res.Endpoints)
	}
	return snap, b.next, nil
}

// sameItems reports whether list holds exactly the messages t was made
// of, in order (t nil or without items: no).
func sameItems[T cachetypes.Resource](t *typeMemo, list []T) bool {
	if t == nil || t.items == nil || len(t.items) != len(list) {
		return false
	}
	for i, r := range list {
		if t.items[i] != cachetypes.Resource(r) {
			return false
		}
	}
	return true
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
		if s := translate.UnpackMetadata(m.GetMetadata()).GetFilterMetadata()["portico"].GetFields()["sources"].GetListValue(); s != nil {
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

// compact replaces, once a snapshot is complete, the messages it made
// stand-ins for (swaps, and the new virtual hosts published as stand-ins)
// by those stand-ins: in the memo, and in res, whose messages the
// translator hands back for unchanged IR — so that the next build finds
// them in the memo, and the full messages can be collected.
func (b *builder) compact(res *translate.Resources, swaps map[proto.Message]proto.Message) {
	swap := func(from, to proto.Message) {
		// Only messages of types versioned in this build are swapped:
		// a carried typeMemo is never written.
		t := b.next.types[typeOf(from)]
		if h, ok := t.hashes[from]; ok {
			delete(t.hashes, from)
			t.hashes[to] = h
		}
	}
	for i, c := range res.Clusters {
		if to, ok := swaps[c]; ok {
			swap(c, to)
			res.Clusters[i] = to.(*clusterv3.Cluster)
		}
	}
	for i, e := range res.Endpoints {
		if to, ok := swaps[e]; ok {
			swap(e, to)
			res.Endpoints[i] = to.(*endpointv3.ClusterLoadAssignment)
		}
	}
	for _, rc := range res.Routes {
		// The route memo shares this slice, so it follows (its hashes
		// and bytes are by position).
		for i, vh := range rc.VirtualHosts {
			if to, ok := b.vhosts[vh]; ok {
				rc.VirtualHosts[i] = to
			}
		}
	}
}
