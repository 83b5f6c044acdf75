// Package validate checks Envoy resources the way Envoy would before
// accepting them: every message's protoc-gen-validate rules (ValidateAll),
// including messages packed in Any fields (typed_config and friends), which
// ValidateAll alone does not look into.
package validate

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	// Register every extension type pkg/translate packs into Any fields.
	_ "github.com/portico-gateway/portico/pkg/envoytypes"
)

type validator interface{ ValidateAll() error }

// Deep validates m and every message packed in its Any fields.
func Deep(m proto.Message) error {
	return tree(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().FullName()))
}

// tree validates a message with ValidateAll, which checks the whole tree
// of embedded messages but does not look inside Any fields; those are
// then found, unpacked and validated the same way. (Calling ValidateAll
// at every level instead would validate each subtree once per ancestor.)
func tree(m protoreflect.Message, path string) error {
	if v, ok := m.Interface().(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return anys(m, path)
}

// anys walks a message for Any fields and validates what they hold.
func anys(m protoreflect.Message, path string) error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: cannot unpack %s: %w", path, a.GetTypeUrl(), err)
		}
		return tree(inner.ProtoReflect(), path+"<"+string(inner.ProtoReflect().Descriptor().FullName())+">")
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		fpath := path + "." + string(fd.Name())
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() != protoreflect.MessageKind {
				return true
			}
			val.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				err = anys(v.Message(), fmt.Sprintf("%s[%v]", fpath, k.Interface()))
				return err == nil
			})
		case fd.IsList():
			l := val.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = anys(l.Get(i).Message(), fmt.Sprintf("%s[%d]", fpath, i))
			}
		default:
			err = anys(val.Message(), fpath)
		}
		return err == nil
	})
	return err
}
