// Package validate checks Envoy resources the way Envoy would before
// accepting them: every message's protoc-gen-validate rules (ValidateAll),
// including messages packed in Any fields (typed_config and friends), which
// ValidateAll alone does not look into.
package validate

import (
	"fmt"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	// Register every extension type pkg/translate packs into Any fields.
	_ "github.com/portico-gateway/portico/pkg/envoytypes"
)

type validator interface{ ValidateAll() error }

// Deep validates m and every message packed in its Any fields.
func Deep(m proto.Message) error { return (*Validator)(nil).Deep(m) }

// A Validator is Deep with a memo of the packed messages found valid, by
// type URL and bytes: thousands of clusters carry the same packed
// protocol options, routes the same retry predicate, listeners the same
// filters, and unpacking each copy to validate it again was most of the
// time and garbage of validating a cold start. Validity is a function of
// the bytes (unmarshalling is deterministic and the rules read only the
// message), so a payload seen valid stays valid. The memo is bounded
// (memoEntries payloads of at most memoPayload bytes): a snapshot built
// from hostile input cannot grow it without limit. Safe for concurrent
// use; a nil Validator memoises nothing.
type Validator struct {
	mu    sync.Mutex
	valid map[string]map[string]struct{} // type URL → payload
	n     int
	hits  int // answers from the memo (tests)
}

const (
	memoEntries = 4096
	memoPayload = 1 << 10
)

// NewValidator returns a Validator with an empty memo.
func NewValidator() *Validator {
	return &Validator{valid: map[string]map[string]struct{}{}}
}

// Deep validates m and every message packed in its Any fields.
func (v *Validator) Deep(m proto.Message) error {
	if err := v.tree(m.ProtoReflect()); err != nil {
		return prefix(err, string(m.ProtoReflect().Descriptor().FullName()))
	}
	return nil
}

func (v *Validator) known(a *anypb.Any) bool {
	if v == nil {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.valid[a.GetTypeUrl()][string(a.GetValue())]
	if ok {
		v.hits++
	}
	return ok
}

func (v *Validator) remember(a *anypb.Any) {
	if v == nil || len(a.GetValue()) > memoPayload {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.n >= memoEntries {
		return
	}
	byType := v.valid[a.GetTypeUrl()]
	if byType == nil {
		byType = map[string]struct{}{}
		v.valid[a.GetTypeUrl()] = byType
	}
	if _, ok := byType[string(a.GetValue())]; !ok {
		byType[string(a.GetValue())] = struct{}{}
		v.n++
	}
}

// tree validates a message with ValidateAll, which checks the whole tree
// of embedded messages but does not look inside Any fields; those are
// then found, unpacked and validated the same way. (Calling ValidateAll
// at every level instead would validate each subtree once per ancestor.)
func (v *Validator) tree(m protoreflect.Message) error {
	if val, ok := m.Interface().(validator); ok {
		if err := val.ValidateAll(); err != nil {
			return &pathError{err: err}
		}
	}
	return v.anys(m)
}

// anys finds the Any fields under m and validates what they hold. It only
// descends into fields whose type can lead to an Any (anyFields): most of
// a route table (matches, header matchers, weights) cannot, and walking
// it by reflection was most of the cost of validating a large snapshot.
func (v *Validator) anys(m protoreflect.Message) error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		if v.known(a) {
			return nil
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			return &pathError{err: fmt.Errorf("cannot unpack %s: %w", a.GetTypeUrl(), err)}
		}
		if err := v.tree(inner.ProtoReflect()); err != nil {
			return prefix(err, "<"+string(inner.ProtoReflect().Descriptor().FullName())+">")
		}
		v.remember(a)
		return nil
	}
	for _, fd := range anyFields(m.Descriptor()) {
		if !m.Has(fd) {
			continue
		}
		val := m.Get(fd)
		var err error
		switch {
		case fd.IsMap():
			val.Map().Range(func(k protoreflect.MapKey, item protoreflect.Value) bool {
				if err = v.anys(item.Message()); err != nil {
					err = prefix(err, fmt.Sprintf(".%s[%v]", fd.Name(), k.Interface()))
				}
				return err == nil
			})
		case fd.IsList():
			l := val.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				if err = v.anys(l.Get(i).Message()); err != nil {
					err = prefix(err, fmt.Sprintf(".%s[%d]", fd.Name(), i))
				}
			}
		default:
			if err = v.anys(val.Message()); err != nil {
				err = prefix(err, "."+string(fd.Name()))
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// fields memoises anyFields per message type (descriptors are immutable).
var fields sync.Map // protoreflect.FullName → []protoreflect.FieldDescriptor

// anyFields lists, in declaration order, the fields of md whose values
// can lead to an Any. anys looks at these alone: ranging over every set
// field by reflection (a route sets a dozen, of which two or three can
// hold an Any) was most of the cost of validating a cold start.
func anyFields(md protoreflect.MessageDescriptor) []protoreflect.FieldDescriptor {
	if v, ok := fields.Load(md.FullName()); ok {
		return v.([]protoreflect.FieldDescriptor)
	}
	var out []protoreflect.FieldDescriptor
	fds := md.Fields()
	for i := 0; i < fds.Len(); i++ {
		if fieldMayHoldAny(fds.Get(i)) {
			out = append(out, fds.Get(i))
		}
	}
	fields.Store(md.FullName(), out)
	return out
}

// pathError is a validation error with the path to the failing message,
// built only on the way out of a failure.
type pathError struct {
	path []string // outermost last
	err  error
}

func (e *pathError) Error() string {
	var b strings.Builder
	for i := len(e.path) - 1; i >= 0; i-- {
		b.WriteString(e.path[i])
	}
	b.WriteString(": ")
	b.WriteString(e.err.Error())
	return b.String()
}

func (e *pathError) Unwrap() error { return e.err }

func prefix(err error, p string) error {
	if pe, ok := err.(*pathError); ok {
		pe.path = append(pe.path, p)
		return pe
	}
	return &pathError{path: []string{p}, err: err}
}

// fieldMayHoldAny reports whether a field's value can contain an Any,
// directly or further down.
func fieldMayHoldAny(fd protoreflect.FieldDescriptor) bool {
	md := FieldMessage(fd)
	return md != nil && mayHoldAny(md)
}

// FieldMessage is the message type a field holds (a map's values), or nil.
func FieldMessage(fd protoreflect.FieldDescriptor) protoreflect.MessageDescriptor {
	switch {
	case fd.IsMap():
		return fd.MapValue().Message()
	case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
		return fd.Message()
	}
	return nil
}

// reach memoises mayHoldAny per message type. Descriptors are immutable,
// so the memo is a pure function's cache, shared by every caller.
var reach sync.Map // protoreflect.FullName → bool

func mayHoldAny(md protoreflect.MessageDescriptor) bool {
	if v, ok := reach.Load(md.FullName()); ok {
		return v.(bool)
	}
	v := searchAny(md, map[protoreflect.FullName]bool{})
	reach.Store(md.FullName(), v)
	return v
}

// searchAny reports whether Any is reachable from md in the graph of
// message types, depth first with a visited set: a type seen before is
// either fully explored without finding Any or still being explored by a
// caller, which will report what it finds, so reachability stays exact
// through recursive types (Struct, matchers).
func searchAny(md protoreflect.MessageDescriptor, visited map[protoreflect.FullName]bool) bool {
	name := md.FullName()
	if name == "google.protobuf.Any" {
		return true
	}
	if v, ok := reach.Load(name); ok {
		return v.(bool)
	}
	if visited[name] {
		return false
	}
	visited[name] = true
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		if sub := FieldMessage(fields.Get(i)); sub != nil && searchAny(sub, visited) {
			return true
		}
	}
	return false
}
