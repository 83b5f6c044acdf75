package resource

import (
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// A cold start of 5,000 VirtualServices and as many DestinationRules spent
// a third of its decoding in normalizeMessage and setMessage: the first
// copies the spec's whole generic value into a normalized one (a map per
// object, its keys sorted, a path string per field, a map per oneof), the
// second walks that copy to set the message's fields, and durations and
// wrappers went through JSON text and protojson each. quickMessage does
// both in one walk over the parsed value, with the same functions for
// every scalar (normalizeSingular, then scalar), so what it sets is what
// the two passes set. Whatever would end in an error or in protojson's
// judgement (an unknown field, a field given twice, a bad value, a null
// in a list) makes it return false; the caller then resets the message
// and goes the two-pass way, which words the error. Durations, the field
// every route and pool has, are set directly from their protobuf JSON
// form when it has the plain "<seconds>[.<up to 9 digits>]s" shape.
// TestFastDecodeEqualsPlainDecode compares the result with the plain
// JSON-text way on random and mutated documents.

// quickMessage sets m, a fresh message, from v; false means "take the
// two-pass way" and leaves m partly set.
func quickMessage(v any, m protoreflect.Message) bool {
	md := m.Descriptor()
	if wk, ok := wellKnown(md); ok {
		norm, err := wk(v, "")
		if err != nil {
			return false
		}
		return quickWellKnown(norm, m)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return false
	}
	fields := md.Fields()
	// The fields set so far: a field named twice (its JSON and its proto
	// name) or two members of one oneof are for the two-pass way to
	// decide and report.
	var setBuf [16]protoreflect.FieldDescriptor
	set := setBuf[:0]
	for k, val := range obj {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k))
		}
		if fd == nil {
			return false
		}
		if val == nil {
			continue
		}
		od := fd.ContainingOneof()
		for _, prev := range set {
			if prev == fd || od != nil && !od.IsSynthetic() && prev.ContainingOneof() == od {
				return false
			}
		}
		set = append(set, fd)
		if !quickField(m, fd, val) {
			return false
		}
	}
	return true
}

func quickField(m protoreflect.Message, fd protoreflect.FieldDescriptor, v any) bool {
	return setFieldWith(m, fd, v, quickMessage, quickScalar)
}

// quickScalar is normalizeSingular followed by scalar, as the two passes
// do them.
func quickScalar(v any, fd protoreflect.FieldDescriptor) (protoreflect.Value, bool) {
	norm, err := normalizeSingular(v, fd, "")
	if err != nil || norm == nil {
		return protoreflect.Value{}, false
	}
	return scalar(norm, fd)
}

// quickWellKnown sets a well-known message from its normalized value:
// durations and the integer, boolean and string wrappers directly, the
// rest through protojson as setMessageValue does.
func quickWellKnown(norm any, m protoreflect.Message) bool {
	md := m.Descriptor()
	switch md.FullName() {
	case "google.protobuf.Duration":
		if s, ok := norm.(string); ok {
			if secs, nanos, ok := plainDuration(s); ok {
				if secs != 0 {
					m.Set(md.Fields().ByNumber(1), protoreflect.ValueOfInt64(secs))
				}
				if nanos != 0 {
					m.Set(md.Fields().ByNumber(2), protoreflect.ValueOfInt32(nanos))
				}
				return true
			}
		}
	case "google.protobuf.BoolValue", "google.protobuf.StringValue",
		"google.protobuf.UInt32Value", "google.protobuf.Int32Value",
		"google.protobuf.UInt64Value", "google.protobuf.Int64Value":
		fd := md.Fields().ByNumber(1)
		if pv, ok := scalar(norm, fd); ok {
			m.Set(fd, pv)
			return true
		}
	}
	return norm != nil && setMessageValue(norm, m)
}

// plainDuration reads a duration's protobuf JSON form as normalizeDuration
// prints it ("5s", "0.25s"): ok is false for anything else (an exponent,
// more than nine fractional digits), which protojson then reads. A Go
// duration (at most 292 years) is always within protobuf's bound.
func plainDuration(s string) (secs int64, nanos int32, ok bool) {
	num, found := strings.CutSuffix(s, "s")
	if !found || num == "" {
		return 0, 0, false
	}
	whole, frac, _ := strings.Cut(num, ".")
	if whole == "" || len(frac) > 9 || !allDigits(whole) || !allDigits(frac) {
		return 0, 0, false
	}
	secs, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	n := 0
	for i := 0; i < 9; i++ {
		n *= 10
		if i < len(frac) {
			n += int(frac[i] - '0')
		}
	}
	return secs, int32(n), true
}
