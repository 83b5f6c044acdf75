package validate

import (
	"errors"
	"strings"
	"unicode"
)

// pgvError is what protoc-gen-validate's generated errors implement.
type pgvError interface {
	Field() string
	Reason() string
	Cause() error
}

type multiError interface{ AllErrors() []error }

// Describe splits a validation error into the path of the offending field
// in Envoy's spelling ("routes[0].request_headers_to_add[0].header.value",
// Any contents shown as <type>) and the rule it breaks ("value length must
// be at most 16384 bytes"). Only the first violation is described. For an
// error not from validation, path is empty and rule is the error's text.
func Describe(err error) (path, rule string) {
	var parts []string
	var pe *pathError
	if errors.As(err, &pe) {
		// The path is outermost last; its last element is the root type.
		for i := len(pe.path) - 2; i >= 0; i-- {
			parts = append(parts, strings.TrimPrefix(pe.path[i], "."))
		}
		err = pe.err
	}
	for err != nil {
		if m, ok := err.(multiError); ok {
			all := m.AllErrors()
			if len(all) == 0 {
				break
			}
			err = all[0]
			continue
		}
		v, ok := err.(pgvError)
		if !ok {
			break
		}
		if f := v.Field(); f != "" {
			parts = append(parts, snake(f))
		}
		if v.Cause() == nil {
			return strings.Join(parts, "."), v.Reason()
		}
		err = v.Cause()
	}
	if err == nil {
		return strings.Join(parts, "."), ""
	}
	return strings.Join(parts, "."), err.Error()
}

// snake turns protoc-gen-validate's Go field names ("RequestHeadersToAdd[0]")
// into the proto names Envoy's documentation uses
// ("request_headers_to_add[0]").
func snake(field string) string {
	name, index, _ := strings.Cut(field, "[")
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	if index != "" {
		b.WriteString("[" + index)
	}
	return b.String()
}
