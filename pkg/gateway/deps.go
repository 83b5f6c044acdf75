package gateway

import (
	"unsafe"

	networking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// objectID identifies one version of an object: its UID and
// resourceVersion when an API server gave it one (an informer cache hands
// out new copies of the same version), else the object's address (the
// file provider decodes an object once per change and never mutates it).
// Two equal IDs mean the same content. The address is held as a pointer,
// not a number: it keeps the object alive, so its memory cannot be reused
// by a different object that would then compare equal.
type objectID struct {
	uid types.UID
	rv  string
	ptr unsafe.Pointer
}

// idOf returns o's ID; nil has the zero ID.
func idOf[T any, P interface {
	*T
	metav1.Object
}](o P) objectID {
	if o == nil {
		return objectID{}
	}
	if rv := o.GetResourceVersion(); rv != "" {
		return objectID{uid: o.GetUID(), rv: rv}
	}
	return objectID{ptr: unsafe.Pointer(o)}
}

// readKind is one of the registry's accessors.
type readKind uint8

const (
	readService readKind = iota
	readDestinationRule
	readSecret
)

// read is one registry lookup a cached computation made, and the identity
// of what it found (zero for nothing).
type read struct {
	kind readKind
	key  string
	// found identifies what was found: the service's address (registry
	// entries are shared between registries while what they were built
	// from is unchanged, so the pointer is their identity), or the
	// DestinationRule's or Secret's version.
	found objectID
}

func serviceID(s *service) objectID { return objectID{ptr: unsafe.Pointer(s)} }

// deps is everything a cached computation read from the registry,
// recorded by the registry's accessors themselves (see registry.record):
// no list of "what this depends on" is kept by hand next to the code
// that reads, so a new read can never be forgotten. The computation may
// be reused exactly when every read still finds the same thing.
type deps struct {
	reads []read
	// holdsIn is a registry every read is known to find the same thing
	// in: the one they were recorded or last checked against. Registries
	// never change once built, and one is reused whole while its inputs
	// are the same objects, so checking against it again is skipped.
	// Every memo a build keeps was recorded or checked in that build, so
	// none keeps an older registry alive.
	holdsIn *registry
}

// newDeps returns an empty set. Its list grows as reads are recorded: most
// computations make one to three, and thousands of sets live in the memo.
func newDeps() *deps { return &deps{} }

func (d *deps) add(r read) {
	for _, old := range d.reads {
		if old.kind == r.kind && old.key == r.key {
			return // the first answer is what was used; replay checks it
		}
	}
	d.reads = append(d.reads, r)
}

// startRecording makes the registry's accessors record into d until
// stopRecording(d, outer) with what it returned. Recordings nest: an
// outer computation depends on what the inner ones read too.
func (r *registry) startRecording(d *deps) (outer *deps) {
	outer = r.deps
	r.deps = d
	return outer
}

func (r *registry) stopRecording(d, outer *deps) {
	r.deps = outer
	d.holdsIn = r
	if outer != nil {
		for _, x := range d.reads {
			outer.add(x)
		}
	}
}

// unchanged reports whether every recorded read finds the same thing in
// this registry.
func (r *registry) unchanged(d *deps) bool {
	if d.holdsIn == r {
		return true
	}
	for _, x := range d.reads {
		switch x.kind {
		case readService:
			if serviceID(r.findService(x.key)) != x.found {
				return false
			}
		case readDestinationRule:
			if idOf(r.findDestinationRule(x.key)) != x.found {
				return false
			}
		case readSecret:
			if idOf(r.secrets[x.key]) != x.found {
				return false
			}
		}
	}
	d.holdsIn = r
	return true
}

// lookup finds the service for an expanded host: exact first, then the
// most specific ServiceEntry wildcard. The read is recorded.
func (r *registry) lookup(host string) *service {
	s := r.findService(host)
	if r.deps != nil {
		r.deps.add(read{kind: readService, key: host, found: serviceID(s)})
	}
	return s
}

// destinationRule returns the rule that applies to a host: the oldest
// exact match, else the most specific wildcard. The read is recorded.
func (r *registry) destinationRule(host string) *networking.DestinationRule {
	dr := r.findDestinationRule(host)
	if r.deps != nil {
		r.deps.add(read{kind: readDestinationRule, key: host, found: idOf(dr)})
	}
	return dr
}

// secret returns a Secret by namespace and name. The read is recorded.
func (r *registry) secret(namespace, name string) *corev1.Secret {
	key := namespace + "/" + name
	s := r.secrets[key]
	if r.deps != nil {
		r.deps.add(read{kind: readSecret, key: key, found: idOf(s)})
	}
	return s
}
