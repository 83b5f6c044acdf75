package resource

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"

	yaml2 "go.yaml.in/yaml/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A cold start decodes tens of thousands of documents, and the plain way
// (YAML → JSON text → typeMeta, metadata, a generic value for the spec →
// JSON text again → protojson) parses each document four or five times.
// decodeYAML parses a document once into the generic value
// sigs.k8s.io/yaml's YAMLToJSON would print, reads kind and metadata from
// it, normalizes an Istio spec from it and sets the message's fields
// directly; only Kubernetes kinds, which need strict decoding into their
// Go types, are printed as JSON once. Anything unusual (a syntax error,
// keys that are not strings, kinds and Lists the plain way handles
// specially, a value protojson would have to judge) makes it step aside
// for the plain way, so both give the same objects and the same errors;
// TestFastDecodeEqualsPlainDecode checks that on random documents.

// decodeYAML decodes a document the fast way; ok is false when the
// document must go the plain way.
func decodeYAML(data []byte) (objs []Object, err error, ok bool) {
	store := treeStores.Get().(*treeStore)
	defer treeStores.Put(store)
	return decodeYAMLIn(data, store)
}

// decodeYAMLIn is decodeYAML with the tree built from store.
func decodeYAMLIn(data []byte, store *treeStore) (objs []Object, err error, ok bool) {
	doc, fast := parseFastYAMLIn(data, store)
	if fast {
		// Nothing decoded keeps the tree's maps or sequences (see
		// treeStore).
		defer store.release(doc)
	} else if doc, ok = parseYAMLv2Tree(data); !ok {
		return nil, nil, false
	}
	tm, ok := typeMetaOf(doc)
	if !ok {
		return nil, nil, false
	}
	objs, err = decodeObject(tm, &source{tree: doc})
	return objs, err, true
}

// parseYAMLv2Tree parses a document by yaml.v2 into the value
// encoding/json (with UseNumber) would decode from YAMLToJSON's output,
// as parseFastYAML does the plain subset configuration files use; ok is
// false if yaml.v2 fails or the value is not a mapping with string keys
// only.
func parseYAMLv2Tree(data []byte) (map[string]any, bool) {
	var y any
	if yaml2.Unmarshal(data, &y) != nil {
		return nil, false
	}
	t, ok := jsonable(y)
	if !ok {
		return nil, false
	}
	doc, ok := t.(map[string]any)
	return doc, ok
}

// jsonable converts what yaml.v2 decodes into what encoding/json (with
// UseNumber) decodes from YAMLToJSON's output: string keys, numbers as
// json.Number spelt as encoding/json prints them. It reports false for
// what YAMLToJSON converts in ways not worth repeating here (non-string
// keys) or fails on (NaN, infinities).
func jsonable(v any) (any, bool) {
	switch x := v.(type) {
	case nil, string, bool:
		return x, true
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, item := range x {
			ks, ok := k.(string)
			if !ok {
				return nil, false
			}
			c, ok := jsonable(item)
			if !ok {
				return nil, false
			}
			out[ks] = c
		}
		return out, true
	case []any:
		out := make([]any, len(x))
		for i, item := range x {
			c, ok := jsonable(item)
			if !ok {
				return nil, false
			}
			out[i] = c
		}
		return out, true
	case int:
		return json.Number(strconv.Itoa(x)), true
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), true
	case uint64:
		return json.Number(strconv.FormatUint(x, 10)), true
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, false
		}
		b, err := json.Marshal(x)
		if err != nil {
			return nil, false
		}
		return json.Number(b), true
	}
	return nil, false
}

// typeMetaOf reads apiVersion, kind and metadata as decoding JSON into
// typeMeta would. encoding/json matches field names case-insensitively
// and decodes items of Lists; documents that need either go the plain
// way.
func typeMetaOf(doc map[string]any) (typeMeta, bool) {
	var tm typeMeta
	for k := range doc {
		switch k {
		case "apiVersion", "kind", "metadata":
			continue
		}
		for _, f := range []string{"apiVersion", "kind", "metadata", "items"} {
			if len(k) == len(f) && equalFoldASCII(k, f) {
				return tm, false
			}
		}
	}
	var ok bool
	if tm.APIVersion, ok = optionalString(doc, "apiVersion"); !ok {
		return tm, false
	}
	if tm.Kind, ok = optionalString(doc, "kind"); !ok {
		return tm, false
	}
	if tm.Kind == "" || tm.APIVersion == "" || tm.Kind == "List" || len(tm.Kind) > 4 && tm.Kind[len(tm.Kind)-4:] == "List" {
		return tm, false
	}
	if meta, present := doc["metadata"]; present {
		if m, ok := objectMetaOf(meta); ok {
			tm.meta = m
			return tm, true
		}
		b, err := json.Marshal(meta)
		if err != nil {
			return tm, false
		}
		tm.Metadata = b
	}
	return tm, true
}

// objectMetaOf reads metadata that has only a name, a namespace, labels
// and annotations, all strings, as strict JSON decoding into ObjectMeta
// would; anything else (other fields, other types, null) is left to that
// decoding and its errors.
func objectMetaOf(v any) (*metav1.ObjectMeta, bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	meta := &metav1.ObjectMeta{}
	for k, item := range obj {
		switch k {
		case "name", "namespace":
			s, ok := item.(string)
			if !ok {
				return nil, false
			}
			if k == "name" {
				meta.Name = s
			} else {
				meta.Namespace = s
			}
		case "labels", "annotations":
			m, ok := stringMap(item)
			if !ok {
				return nil, false
			}
			if k == "labels" {
				meta.Labels = m
			} else {
				meta.Annotations = m
			}
		default:
			return nil, false
		}
	}
	return meta, true
}

func stringMap(v any) (map[string]string, bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	m := make(map[string]string, len(obj))
	for k, item := range obj {
		s, ok := item.(string)
		if !ok {
			return nil, false
		}
		m[k] = s
	}
	return m, true
}

func optionalString(doc map[string]any, key string) (string, bool) {
	v, present := doc[key]
	if !present || v == nil {
		return "", true
	}
	s, ok := v.(string)
	return s, ok
}

func equalFoldASCII(a, b string) bool {
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// source is a document being decoded: its JSON text, or its parsed value
// (printed as JSON only if a Kubernetes kind needs the text).
type source struct {
	js   []byte
	tree map[string]any
}

func (s *source) json() ([]byte, error) {
	if s.js == nil {
		b, err := json.Marshal(s.tree)
		if err != nil {
			return nil, err
		}
		s.js = b
	}
	return s.js, nil
}

// setMessage sets m's fields from a normalized value (see
// normalizeMessage), as protojson would from its JSON text. It reports
// false where it would have to judge something normalization left to
// protojson; the caller then decodes the plain way.
func setMessage(obj map[string]any, m protoreflect.Message) bool {
	fields := m.Descriptor().Fields()
	for k, v := range obj {
		fd := fields.ByJSONName(k)
		if fd == nil || !setField(m, fd, v) {
			return false
		}
	}
	return true
}

func isMessage(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind
}

func setField(m protoreflect.Message, fd protoreflect.FieldDescriptor, v any) bool {
	return setFieldWith(m, fd, v, setMessageValue, scalar)
}

// setFieldWith sets a field from v, its message values with setMsg and
// its scalars with toScalar: the two-pass way sets a normalized value
// (setMessageValue, scalar), quickField the parsed one (quickMessage,
// quickScalar).
func setFieldWith(m protoreflect.Message, fd protoreflect.FieldDescriptor, v any,
	setMsg func(any, protoreflect.Message) bool, toScalar func(any, protoreflect.FieldDescriptor) (protoreflect.Value, bool)) bool {
	switch {
	case fd.IsList():
		arr, ok := v.([]any)
		if !ok {
			return false
		}
		if len(arr) == 0 {
			return true
		}
		l := m.Mutable(fd).List()
		for _, item := range arr {
			if item == nil {
				return false
			}
			if isMessage(fd) {
				e := l.NewElement()
				if !setMsg(item, e.Message()) {
					return false
				}
				l.Append(e)
				continue
			}
			pv, ok := toScalar(item, fd)
			if !ok {
				return false
			}
			l.Append(pv)
		}
		return true
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok || fd.MapKey().Kind() != protoreflect.StringKind {
			return false
		}
		if len(obj) == 0 {
			return true
		}
		mp := m.Mutable(fd).Map()
		vd := fd.MapValue()
		for k, item := range obj {
			if item == nil {
				return false
			}
			mk := protoreflect.ValueOfString(k).MapKey()
			if isMessage(vd) {
				mv := mp.NewValue()
				if !setMsg(item, mv.Message()) {
					return false
				}
				mp.Set(mk, mv)
				continue
			}
			pv, ok := toScalar(item, vd)
			if !ok {
				return false
			}
			mp.Set(mk, pv)
		}
		return true
	case isMessage(fd):
		return setMsg(v, m.Mutable(fd).Message())
	}
	pv, ok := toScalar(v, fd)
	if ok {
		m.Set(fd, pv)
	}
	return ok
}

// setMessageValue sets a message field's value. Well-known types
// (durations, wrappers, Struct, Any) are small and have JSON forms of
// their own: protojson reads them from their own text.
func setMessageValue(v any, m protoreflect.Message) bool {
	if _, wk := wellKnown(m.Descriptor()); wk {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		return protojson.Unmarshal(b, m.Interface()) == nil
	}
	obj, ok := v.(map[string]any)
	return ok && setMessage(obj, m)
}

// scalar converts a normalized scalar as protojson reads its JSON form.
func scalar(v any, fd protoreflect.FieldDescriptor) (protoreflect.Value, bool) {
	num := func() (string, bool) { n, ok := v.(json.Number); return string(n), ok }
	switch fd.Kind() {
	case protoreflect.StringKind:
		s, ok := v.(string)
		return protoreflect.ValueOfString(s), ok
	case protoreflect.BoolKind:
		b, ok := v.(bool)
		return protoreflect.ValueOfBool(b), ok
	case protoreflect.EnumKind:
		switch x := v.(type) {
		case string:
			if ev := fd.Enum().Values().ByName(protoreflect.Name(x)); ev != nil {
				return protoreflect.ValueOfEnum(ev.Number()), true
			}
		case json.Number:
			if n, err := strconv.ParseInt(string(x), 10, 32); err == nil {
				return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n)), true
			}
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if s, ok := num(); ok {
			if n, err := strconv.ParseInt(s, 10, 32); err == nil {
				return protoreflect.ValueOfInt32(int32(n)), true
			}
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if s, ok := num(); ok {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return protoreflect.ValueOfInt64(n), true
			}
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if s, ok := num(); ok {
			if n, err := strconv.ParseUint(s, 10, 32); err == nil {
				return protoreflect.ValueOfUint32(uint32(n)), true
			}
		}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if s, ok := num(); ok {
			if n, err := strconv.ParseUint(s, 10, 64); err == nil {
				return protoreflect.ValueOfUint64(n), true
			}
		}
	case protoreflect.FloatKind:
		if s, ok := num(); ok {
			if f, err := strconv.ParseFloat(s, 32); err == nil {
				return protoreflect.ValueOfFloat32(float32(f)), true
			}
		}
	case protoreflect.DoubleKind:
		if s, ok := num(); ok {
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				return protoreflect.ValueOfFloat64(f), true
			}
		}
	case protoreflect.BytesKind:
		if s, ok := v.(string); ok {
			if b, err := base64.StdEncoding.DecodeString(s); err == nil {
				return protoreflect.ValueOfBytes(b), true
			}
		}
	}
	return protoreflect.Value{}, false
}
