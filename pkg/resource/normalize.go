package resource

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// normalizeMessage checks a generic JSON value against a protobuf message
// descriptor and returns the value protojson can read. Istio's own
// unmarshalers ignore unknown fields; we report them, because a typo such as
// "retryon" silently dropping a retry policy is exactly the kind of surprise
// users of a gateway do not forgive.
func normalizeMessage(v any, md protoreflect.MessageDescriptor, path string) (any, error) {
	if wk, ok := wellKnown(md); ok {
		return wk(v, path)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		if v == nil {
			return nil, nil
		}
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected an object, got %s", jsonType(v))}
	}
	out := make(map[string]any, len(obj))
	oneofs := map[protoreflect.FullName]string{}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fields := md.Fields()
	for _, k := range keys {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k))
		}
		fpath := path + "." + k
		if fd == nil {
			return nil, &FieldError{Path: fpath, Msg: "unknown field" + suggest(k, fields)}
		}
		val := obj[k]
		if val == nil {
			continue
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if prev, dup := oneofs[od.FullName()]; dup {
				return nil, &FieldError{Path: fpath, Msg: fmt.Sprintf("only one of %q and %q may be set", prev, k)}
			}
			oneofs[od.FullName()] = k
		}
		nv, err := normalizeField(val, fd, fpath)
		if err != nil {
			return nil, err
		}
		out[fd.JSONName()] = nv
	}
	return out, nil
}

func normalizeField(v any, fd protoreflect.FieldDescriptor, path string) (any, error) {
	switch {
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected a map, got %s", jsonType(v))}
		}
		out := make(map[string]any, len(obj))
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys) // with several bad entries, the error names the first by key, not by map order
		for _, k := range keys {
			item := obj[k]
			nv, err := normalizeSingular(item, fd.MapValue(), fmt.Sprintf("%s[%s]", path, k))
			if err != nil {
				return nil, err
			}
			out[k] = nv
		}
		return out, nil
	case fd.IsList():
		arr, ok := v.([]any)
		if !ok {
			return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected a list, got %s", jsonType(v))}
		}
		out := make([]any, len(arr))
		for i, item := range arr {
			nv, err := normalizeSingular(item, fd, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = nv
		}
		return out, nil
	}
	return normalizeSingular(v, fd, path)
}

func normalizeSingular(v any, fd protoreflect.FieldDescriptor, path string) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return normalizeMessage(v, fd.Message(), path)
	case protoreflect.StringKind:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected a string, got %s", jsonType(v))}
	case protoreflect.BoolKind:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected true or false, got %s", jsonType(v))}
	case protoreflect.EnumKind:
		ed := fd.Enum()
		switch x := v.(type) {
		case string:
			if ed.Values().ByName(protoreflect.Name(x)) != nil {
				return x, nil
			}
			return nil, &FieldError{Path: path, Msg: fmt.Sprintf("unknown value %q (one of %s)", x, enumNames(ed))}
		case json.Number:
			n, err := x.Int64()
			if err == nil && ed.Values().ByNumber(protoreflect.EnumNumber(n)) != nil {
				return x, nil
			}
		}
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected one of %s, got %s", enumNames(ed), jsonValue(v))}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return intValue(v, path, math.MinInt32, math.MaxInt32)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return intValue(v, path, 0, math.MaxUint32)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return intValue(v, path, math.MinInt64, math.MaxInt64)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return intValue(v, path, 0, math.MaxInt64)
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if n, ok := v.(json.Number); ok {
			if _, err := n.Float64(); err == nil {
				return n, nil
			}
		}
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected a number, got %s", jsonType(v))}
	case protoreflect.BytesKind:
		if s, ok := v.(string); ok {
			if _, err := base64.StdEncoding.DecodeString(s); err == nil {
				return s, nil
			}
			// Users write plain text bodies (directResponse.body.bytes);
			// accept them as the bytes they are.
			return base64.StdEncoding.EncodeToString([]byte(s)), nil
		}
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected a string, got %s", jsonType(v))}
	}
	return nil, &FieldError{Path: path, Msg: fmt.Sprintf("unsupported field kind %s", fd.Kind())}
}

func intValue(v any, path string, lo, hi float64) (any, error) {
	n, ok := v.(json.Number)
	if !ok {
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected an integer, got %s", jsonType(v))}
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f != math.Trunc(f) {
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected an integer, got %s", n)}
	}
	if f < lo || f > hi {
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("%s is out of range [%.0f, %.0f]", n, lo, hi)}
	}
	return json.Number(strconv.FormatFloat(f, 'f', -1, 64)), nil
}

type wellKnownFunc func(v any, path string) (any, error)

func wellKnown(md protoreflect.MessageDescriptor) (wellKnownFunc, bool) {
	switch md.FullName() {
	case "google.protobuf.Duration":
		return normalizeDuration, true
	case "google.protobuf.BoolValue":
		return func(v any, p string) (any, error) {
			if b, ok := v.(bool); ok {
				return b, nil
			}
			return nil, &FieldError{Path: p, Msg: fmt.Sprintf("expected true or false, got %s", jsonType(v))}
		}, true
	case "google.protobuf.UInt32Value":
		return func(v any, p string) (any, error) { return intValue(v, p, 0, math.MaxUint32) }, true
	case "google.protobuf.Int32Value":
		return func(v any, p string) (any, error) { return intValue(v, p, math.MinInt32, math.MaxInt32) }, true
	case "google.protobuf.UInt64Value", "google.protobuf.Int64Value":
		return func(v any, p string) (any, error) { return intValue(v, p, math.MinInt64, math.MaxInt64) }, true
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue":
		return func(v any, p string) (any, error) {
			if n, ok := v.(json.Number); ok {
				return n, nil
			}
			return nil, &FieldError{Path: p, Msg: fmt.Sprintf("expected a number, got %s", jsonType(v))}
		}, true
	case "google.protobuf.StringValue":
		return func(v any, p string) (any, error) {
			if s, ok := v.(string); ok {
				return s, nil
			}
			return nil, &FieldError{Path: p, Msg: fmt.Sprintf("expected a string, got %s", jsonType(v))}
		}, true
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any":
		return func(v any, _ string) (any, error) { return v, nil }, true
	case "google.protobuf.Timestamp":
		return func(v any, p string) (any, error) {
			s, ok := v.(string)
			if !ok {
				return nil, &FieldError{Path: p, Msg: fmt.Sprintf("expected an RFC 3339 timestamp, got %s", jsonType(v))}
			}
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				return nil, &FieldError{Path: p, Msg: fmt.Sprintf("invalid timestamp %q", s)}
			}
			return s, nil
		}, true
	}
	return nil, false
}

// normalizeDuration accepts what Istio users write: Go durations ("5s",
// "3m", "1h30m", "250ms") as well as protobuf's JSON form ("1.5s"), and
// returns protobuf's form.
func normalizeDuration(v any, path string) (any, error) {
	s, ok := v.(string)
	if !ok {
		return nil, &FieldError{Path: path, Msg: fmt.Sprintf("expected a duration such as \"5s\", got %s", jsonType(v))}
	}
	d, err := ParseDuration(s)
	if err != nil {
		return nil, &FieldError{Path: path, Msg: err.Error()}
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s", nil
}

// ParseDuration parses a duration as Istio accepts it.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (write e.g. \"5s\", \"250ms\", \"3m\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	return d, nil
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	names := make([]string, 0, vals.Len())
	for i := 0; i < vals.Len(); i++ {
		names = append(names, string(vals.Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case json.Number:
		return "number " + string(x)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func jsonValue(v any) string { return jsonType(v) }

// suggest proposes the closest known field name for a misspelt one.
func suggest(name string, fields protoreflect.FieldDescriptors) string {
	best, bestDist := "", 3
	lname := strings.ToLower(name)
	for i := 0; i < fields.Len(); i++ {
		cand := fields.Get(i).JSONName()
		if d := levenshtein(lname, strings.ToLower(cand)); d < bestDist {
			best, bestDist = cand, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
