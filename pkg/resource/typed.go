package resource

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Kubernetes kinds (Services, EndpointSlices, Pods, …) are decoded into
// their Go types strictly, as the API server's decoder would: exact field
// names, an unknown field is an error. sigs.k8s.io/json does that from
// JSON text, so a document parsed into a tree was printed as JSON and
// parsed again: at 5,000 VirtualServices with their Services, slices and
// Pods that was ~0.8 s of a cold start's CPU. setTyped sets the Go value
// from the tree directly, by encoding/json's rules, for everything that
// decodes without error; wherever the JSON decoder would fail, judge, or
// do something rarely seen (numbers into strings, the ",string" option,
// interfaces, []byte, arrays, text-unmarshalled keys or values) it
// reports false and the caller decodes the JSON way, so objects and
// error messages are those of sigs.k8s.io/json.
// TestFastDecodeEqualsPlainDecode compares both ways on random documents
// of every kind and TestSetTypedEqualsStrictJSON on random values of the
// Go types.

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	numberType      = reflect.TypeFor[json.Number]()
)

// setTyped sets dst (settable, zero) from a tree value (see jsonable). On
// false, dst may be partly set and must be zeroed before another try.
func setTyped(v any, dst reflect.Value) bool {
	if dst.Kind() == reflect.Pointer {
		if v == nil {
			dst.SetZero()
			return true
		}
		if dst.IsNil() {
			dst.Set(reflect.New(dst.Type().Elem()))
		}
		return setTyped(v, dst.Elem())
	}
	if dst.CanAddr() {
		switch unmarshalerOf(dst.Type()) {
		case ownJSON:
			// Times, quantities, int-or-strings: their own decoder, on
			// the bytes the JSON way would have handed it.
			b, err := json.Marshal(v)
			if err != nil {
				return false
			}
			return dst.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(b) == nil
		case ownText:
			return false
		}
	}
	if v == nil {
		switch dst.Kind() {
		case reflect.Map, reflect.Slice, reflect.Interface:
			dst.SetZero()
		}
		return true // null leaves anything else as it is
	}
	switch dst.Kind() {
	case reflect.String:
		s, ok := v.(string)
		if !ok || dst.Type() == numberType || !utf8.ValidString(s) {
			return false // (encoding/json would replace invalid UTF-8)
		}
		dst.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return false
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || dst.OverflowInt(i) {
			return false
		}
		dst.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		u, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil || dst.OverflowUint(u) {
			return false
		}
		dst.SetUint(u)
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		f, err := strconv.ParseFloat(string(n), dst.Type().Bits())
		if err != nil || dst.OverflowFloat(f) {
			return false
		}
		dst.SetFloat(f)
	case reflect.Slice:
		items, ok := v.([]any)
		if !ok || dst.Type().Elem().Kind() == reflect.Uint8 {
			return false // []byte is base64 text: the JSON way
		}
		s := reflect.MakeSlice(dst.Type(), len(items), len(items))
		for i, item := range items {
			if !setTyped(item, s.Index(i)) {
				return false
			}
		}
		dst.Set(s)
	case reflect.Map:
		obj, ok := v.(map[string]any)
		kt := dst.Type().Key()
		if !ok || kt.Kind() != reflect.String || unmarshalerOf(kt) != byFields {
			return false
		}
		m := reflect.MakeMapWithSize(dst.Type(), len(obj))
		et := dst.Type().Elem()
		for k, item := range obj {
			e := reflect.New(et).Elem()
			if !utf8.ValidString(k) || !setTyped(item, e) {
				return false
			}
			m.SetMapIndex(reflect.ValueOf(k).Convert(kt), e)
		}
		dst.Set(m)
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return false
		}
		fields := jsonFields(dst.Type())
		for k, item := range obj {
			index, ok := fields[k]
			if !ok {
				return false // unknown (or differently cased): an error the JSON way
			}
			f, ok := fieldByIndex(dst, index)
			if !ok || !setTyped(item, f) {
				return false
			}
		}
	default: // interfaces, arrays, channels, funcs, complex numbers
		return false
	}
	return true
}

// How a type decodes itself, if it does.
const (
	byFields = iota + 1
	ownJSON  // *T implements json.Unmarshaler
	ownText  // *T implements encoding.TextUnmarshaler
)

// unmarshalers memoises unmarshalerOf (Implements is slow, and asked for
// every value).
var unmarshalers sync.Map // reflect.Type → int

func unmarshalerOf(t reflect.Type) int {
	if v, ok := unmarshalers.Load(t); ok {
		return v.(int)
	}
	u := byFields
	switch pt := reflect.PointerTo(t); {
	case pt.Implements(jsonUnmarshaler):
		u = ownJSON
	case pt.Implements(textUnmarshaler):
		u = ownText
	}
	unmarshalers.Store(t, u)
	return u
}

// fieldByIndex is v.FieldByIndex, allocating embedded pointers on the way
// as encoding/json does; false for an unexported embedded pointer.
func fieldByIndex(v reflect.Value, index []int) (reflect.Value, bool) {
	for i, x := range index {
		if i > 0 && v.Kind() == reflect.Pointer {
			if v.IsNil() {
				if !v.CanSet() {
					return reflect.Value{}, false
				}
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v, v.CanSet()
}

// typeFields memoises jsonFields per struct type.
var typeFields sync.Map // reflect.Type → map[string][]int

// jsonFields returns the JSON names of a struct type's fields with their
// index paths, by encoding/json's rules: embedded structs without a name
// are promoted, a shallower field hides a deeper one, and of fields at
// the same depth a tagged one wins or, failing that, none. A field with
// the ",string" option is left out, so its key goes the JSON way.
func jsonFields(t reflect.Type) map[string][]int {
	if v, ok := typeFields.Load(t); ok {
		return v.(map[string][]int)
	}
	type field struct {
		index  []int
		tagged bool
		quoted bool
	}
	byName := map[string][]field{}
	type level struct {
		t     reflect.Type
		index []int
	}
	current, visited := []level{{t: t}}, map[reflect.Type]bool{}
	for len(current) > 0 {
		var next []level
		found := map[string]bool{}
		for _, l := range current {
			if visited[l.t] {
				continue
			}
			visited[l.t] = true
			for i := 0; i < l.t.NumField(); i++ {
				sf := l.t.Field(i)
				ft := sf.Type
				if sf.Anonymous {
					if ft.Kind() == reflect.Pointer {
						ft = ft.Elem()
					}
					if !sf.IsExported() && ft.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, opts, _ := strings.Cut(tag, ",")
				index := append(append([]int(nil), l.index...), i)
				if name == "" && sf.Anonymous && ft.Kind() == reflect.Struct {
					next = append(next, level{t: ft, index: index})
					continue
				}
				tagged := name != ""
				if name == "" {
					name = sf.Name
				}
				quoted := false
				for o := range strings.SplitSeq(opts, ",") {
					quoted = quoted || o == "string"
				}
				if !found[name] && len(byName[name]) > 0 {
					continue // hidden by a shallower field
				}
				found[name] = true
				byName[name] = append(byName[name], field{index: index, tagged: tagged, quoted: quoted})
			}
		}
		current = next
	}
	out := make(map[string][]int, len(byName))
	for name, fs := range byName {
		var win *field
		if len(fs) == 1 {
			win = &fs[0]
		} else {
			for i := range fs {
				if fs[i].tagged {
					if win != nil {
						win = nil
						break
					}
					win = &fs[i]
				}
			}
		}
		if win != nil && !win.quoted {
			out[name] = win.index
		}
	}
	typeFields.Store(t, out)
	return out
}
