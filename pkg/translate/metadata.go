package translate

import (
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Filter metadata (istio.config, istio.services, istio.workload,
// portico.sources) is on every route, cluster and endpoint: at 5,000
// VirtualServices it is half the bytes of the clusters, load assignments
// and route configurations, and encoding it was three quarters of the
// time spent encoding them (protobuf-go sorts each map's keys through
// reflection to encode deterministically: 0.5 s of a cold start's CPU).
// Building it as google.protobuf.Struct values first was 75 MB of
// garbage. So translation describes metadata as plain values (mdValue)
// and emits it already encoded: packMetadata writes the deterministic
// encoding by hand, into a buffer of its exact size, and returns a
// Metadata carrying those bytes as unknown fields, which protobuf-go
// writes out as they are. The bytes are exactly what proto.Marshal with
// Deterministic writes for the same Struct values
// (TestPackedMetadataEncodesAsProtobufGo), so hashes, versions and what
// proxies receive are unchanged; anything that reads metadata from
// translated messages rather than from their encoding goes through
// UnpackMetadata.

// mdValue is a value in filter metadata as translation writes it: a
// string, a list or a struct (google.protobuf.Value's string_value,
// list_value and struct_value).
type mdValue struct {
	kind   mdKind
	str    string
	list   []mdValue
	fields []mdField
}

type mdKind uint8

const (
	mdStringKind mdKind = iota
	mdListKind
	mdStructKind
)

// mdField is a key of a struct and its value; a struct's keys are
// distinct.
type mdField struct {
	key string
	val mdValue
}

func mdString(s string) mdValue          { return mdValue{kind: mdStringKind, str: s} }
func mdList(items ...mdValue) mdValue    { return mdValue{kind: mdListKind, list: items} }
func mdStruct(fields ...mdField) mdValue { return mdValue{kind: mdStructKind, fields: fields} }

// packMetadata returns a Metadata whose filter_metadata holds filters
// (filter name → struct), carried as its encoding. It sorts the fields
// of filters and of their structs in place.
func packMetadata(filters ...mdField) *corev3.Metadata {
	sortFields(filters)
	n := 0
	for _, f := range filters {
		if f.val.kind != mdStructKind {
			panic("translate: filter metadata " + f.key + " is not a struct")
		}
		n += protowire.SizeTag(metadataFilterMetadata) + protowire.SizeBytes(mapEntrySize(f.key, sizeStruct(f.val.fields)))
	}
	b := make([]byte, 0, n)
	for _, f := range filters {
		b = protowire.AppendTag(b, metadataFilterMetadata, protowire.BytesType)
		b = appendEntry(b, f.key, f.val.fields)
	}
	md := &corev3.Metadata{}
	if len(b) > 0 {
		md.ProtoReflect().SetUnknown(b)
	}
	return md
}

func sortFields(fields []mdField) {
	slices.SortFunc(fields, func(a, b mdField) int { return strings.Compare(a.key, b.key) })
	for _, f := range fields {
		sortValue(f.val)
	}
}

func sortValue(v mdValue) {
	switch v.kind {
	case mdListKind:
		for _, item := range v.list {
			sortValue(item)
		}
	case mdStructKind:
		sortFields(v.fields)
	}
}

// UnpackMetadata returns the metadata a packed Metadata carries, decoded
// (md itself if it is not packed).
func UnpackMetadata(md *corev3.Metadata) *corev3.Metadata {
	if md == nil {
		return nil
	}
	unknown := md.ProtoReflect().GetUnknown()
	if len(unknown) == 0 || len(md.GetFilterMetadata()) > 0 || len(md.GetTypedFilterMetadata()) > 0 {
		return md
	}
	full := &corev3.Metadata{}
	if err := proto.Unmarshal(unknown, full); err != nil {
		return md
	}
	return full
}

// Field numbers of envoy.config.core.v3.Metadata and of the
// google.protobuf.Struct family.
const (
	metadataFilterMetadata = 1
	mapKey, mapValue       = 1, 2
	structFields           = 1
	valueString            = 3
	valueStruct            = 5
	valueList              = 6
	listValues             = 1
)

// mapEntrySize is the size of a map entry of a string key and a message
// value of n bytes; protobuf-go writes both always.
func mapEntrySize(key string, n int) int {
	return protowire.SizeTag(mapKey) + protowire.SizeBytes(len(key)) + protowire.SizeTag(mapValue) + protowire.SizeBytes(n)
}

// appendEntry appends a map entry of a string key and a struct value
// (filter_metadata's and Struct.fields' entries), after its tag.
func appendEntry(b []byte, key string, fields []mdField) []byte {
	n := sizeStruct(fields)
	b = protowire.AppendVarint(b, uint64(mapEntrySize(key, n)))
	b = protowire.AppendTag(b, mapKey, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, mapValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	return appendStruct(b, fields)
}

func sizeStruct(fields []mdField) int {
	n := 0
	for _, f := range fields {
		n += protowire.SizeTag(structFields) + protowire.SizeBytes(mapEntrySize(f.key, sizeValue(f.val)))
	}
	return n
}

func appendStruct(b []byte, fields []mdField) []byte {
	for _, f := range fields {
		n := sizeValue(f.val)
		b = protowire.AppendTag(b, structFields, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(mapEntrySize(f.key, n)))
		b = protowire.AppendTag(b, mapKey, protowire.BytesType)
		b = protowire.AppendString(b, f.key)
		b = protowire.AppendTag(b, mapValue, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = appendValue(b, f.val)
	}
	return b
}

func sizeList(items []mdValue) int {
	n := 0
	for _, item := range items {
		n += protowire.SizeTag(listValues) + protowire.SizeBytes(sizeValue(item))
	}
	return n
}

func sizeValue(v mdValue) int {
	switch v.kind {
	case mdListKind:
		return protowire.SizeTag(valueList) + protowire.SizeBytes(sizeList(v.list))
	case mdStructKind:
		return protowire.SizeTag(valueStruct) + protowire.SizeBytes(sizeStruct(v.fields))
	}
	return protowire.SizeTag(valueString) + protowire.SizeBytes(len(v.str))
}

func appendValue(b []byte, v mdValue) []byte {
	switch v.kind {
	case mdListKind:
		b = protowire.AppendTag(b, valueList, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeList(v.list)))
		for _, item := range v.list {
			b = protowire.AppendTag(b, listValues, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(sizeValue(item)))
			b = appendValue(b, item)
		}
	case mdStructKind:
		b = protowire.AppendTag(b, valueStruct, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeStruct(v.fields)))
		b = appendStruct(b, v.fields)
	default:
		b = protowire.AppendTag(b, valueString, protowire.BytesType)
		b = protowire.AppendString(b, v.str)
	}
	return b
}
