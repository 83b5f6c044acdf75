package xds

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds/validate"
)

// Problem is one part of a snapshot that breaks Envoy's validation rules,
// with the Istio resources it was made from: the controller leaves those
// out and builds again, so that one bad resource cannot hold back
// everybody's configuration.
type Problem struct {
	// Type is the resource's type URL, Name its name.
	Type, Name string
	// Where is the failing part inside the resource, innermost last
	// ("virtual host a.example.com:80, route default.r.0"); empty when
	// the resource itself fails.
	Where string
	// Sources are the resources the failing part was made from
	// (portico.sources, "Kind/namespace/name"); empty when it carries
	// none (endpoints, secrets: the caller knows them from the IR).
	Sources []string
	// Path is the offending field in Envoy's spelling, relative to the
	// failing part, and Rule the validation rule it breaks.
	Path, Rule string
	// Err is the validation error.
	Err error
}

func (p *Problem) String() string {
	s := p.Part()
	from := "unknown source"
	if len(p.Sources) > 0 {
		from = strings.Join(p.Sources, ", ")
	}
	return fmt.Sprintf("invalid %s (from %s): %v", s, from, p.Err)
}

// InvalidError is a snapshot that breaks Envoy's validation rules: every
// failing part of every resource is listed.
type InvalidError struct {
	Problems []*Problem
}

func (e *InvalidError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// invalidPart is a message that failed validation inside a resource.
type invalidPart struct {
	msg   proto.Message
	where string
	err   error
}

func (e *invalidPart) Error() string {
	if e.where == "" {
		return e.err.Error()
	}
	return e.where + ": " + e.err.Error()
}

func (e *invalidPart) Unwrap() error { return e.err }

// blame finds who is responsible for a message failing validation: the
// innermost parts of it that carry portico.sources metadata and fail on
// their own (a route of a virtual host, a filter chain of a listener), or
// the message itself when no such part fails. It runs only on failure.
func blame(typ, name string, part *invalidPart) []*Problem {
	m := part.msg.ProtoReflect()
	var out []*Problem
	for _, c := range culprits(m, part.where, sourcesOf(m), part.err) {
		path, rule := validate.Describe(c.err)
		out = append(out, &Problem{Type: typ, Name: name, Where: c.where, Sources: c.sources, Path: path, Rule: rule, Err: c.err})
	}
	return out
}

type culprit struct {
	where   string
	sources []string
	err     error
}

func culprits(m protoreflect.Message, where string, own []string, err error) []culprit {
	var found []culprit
	sourcedParts(m, func(child protoreflect.Message) {
		if cerr := validate.Deep(child.Interface()); cerr != nil {
			found = append(found, culprits(child, joinWhere(where, describePart(child)), sourcesOf(child), cerr)...)
		}
	})
	if len(found) == 0 {
		return []culprit{{where: where, sources: own, err: err}}
	}
	return found
}

func joinWhere(outer, inner string) string {
	if outer == "" {
		return inner
	}
	return outer + ", " + inner
}

var metadataName = (&corev3.Metadata{}).ProtoReflect().Descriptor().FullName()

// sourcedParts calls f for the nearest messages under m (not m itself)
// that carry source metadata, not looking inside Any fields.
func sourcedParts(m protoreflect.Message, f func(protoreflect.Message)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		md := validate.FieldMessage(fd)
		if md == nil || md.FullName() == metadataName || md.FullName() == "google.protobuf.Any" {
			return true
		}
		visit := func(child protoreflect.Message) {
			if sourcesOf(child) != nil {
				f(child)
				return
			}
			sourcedParts(child, f)
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message())
			}
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				visit(mv.Message())
				return true
			})
		default:
			visit(v.Message())
		}
		return true
	})
}

// sourcesOf reads the portico.sources metadata of a message, if it has a
// metadata field carrying them.
func sourcesOf(m protoreflect.Message) []string {
	fd := m.Descriptor().Fields().ByName("metadata")
	if fd == nil || fd.Message() == nil || fd.Message().FullName() != metadataName || !m.Has(fd) {
		return nil
	}
	md, ok := m.Get(fd).Message().Interface().(*corev3.Metadata)
	if !ok {
		return nil
	}
	list := translate.UnpackMetadata(md).GetFilterMetadata()["portico"].GetFields()["sources"].GetListValue()
	if list == nil {
		return nil
	}
	out := make([]string, 0, len(list.GetValues()))
	for _, v := range list.GetValues() {
		out = append(out, v.GetStringValue())
	}
	return out
}

// describePart names a part for humans: "route default.r.0", "filter
// chain https.443…", "virtual host a.example.com:80".
func describePart(m protoreflect.Message) string {
	kind := string(m.Descriptor().Name())
	var b strings.Builder
	for i, r := range kind {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	label := strings.ToLower(b.String())
	if fd := m.Descriptor().Fields().ByName("name"); fd != nil && fd.Kind() == protoreflect.StringKind {
		if name := m.Get(fd).String(); name != "" {
			label += " " + name
		}
	}
	return label
}

// invalidParts are the parts of one resource that failed validation.
type invalidParts []*invalidPart

func (e invalidParts) Error() string {
	parts := make([]string, len(e))
	for i, p := range e {
		parts[i] = p.Error()
	}
	return strings.Join(parts, "; ")
}

// Part names the failing part: "route configuration http.80, virtual host
// a.example.com:80, route r".
func (p *Problem) Part() string {
	s := shortType(p.Type) + " " + p.Name
	if p.Where != "" {
		s += ", " + p.Where
	}
	return s
}

// Type URLs of the resources a Problem can be about.
const (
	ClusterType  = resourcev3.ClusterType
	EndpointType = resourcev3.EndpointType
	SecretType   = resourcev3.SecretType
	ListenerType = resourcev3.ListenerType
	RouteType    = resourcev3.RouteType
)
