package translate

import (
	"math"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Filter metadata (istio.config, istio.services, istio.workload,
// portico.sources) is on every route, cluster and endpoint: at 5,000
// VirtualServices it is half the bytes of the clusters, load assignments
// and route configurations, and encoding it was three quarters of the
// time spent encoding them (protobuf-go sorts each map's keys through
// reflection to encode deterministically: 0.5 s of a cold start's CPU).
// So translation emits metadata already encoded: packMetadata writes a
// Metadata's deterministic encoding by hand and returns a Metadata
// carrying those bytes as unknown fields, which protobuf-go writes out
// as they are. The bytes are exactly what proto.Marshal with
// Deterministic would write (TestPackedMetadataEncodesAsProtobufGo), so
// hashes, versions and what proxies receive are unchanged; anything that
// reads metadata from translated messages rather than from their
// encoding goes through UnpackMetadata.

// packMetadata returns md encoded, as a Metadata whose only content is
// its encoding (nil for nil).
func packMetadata(md *corev3.Metadata) *corev3.Metadata {
	if md == nil {
		return nil
	}
	b, ok := appendMetadata(nil, md)
	if !ok {
		return md
	}
	packed := &corev3.Metadata{}
	if len(b) > 0 {
		packed.ProtoReflect().SetUnknown(b[:len(b):len(b)])
	}
	return packed
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
	valueNull              = 1
	valueNumber            = 2
	valueString            = 3
	valueBool              = 4
	valueStruct            = 5
	valueList              = 6
	listValues             = 1
)

// appendMetadata appends md's deterministic encoding; ok is false for
// what it does not write by hand (typed filter metadata, unknown fields),
// which stays as it is.
func appendMetadata(b []byte, md *corev3.Metadata) ([]byte, bool) {
	if md == nil || len(md.GetTypedFilterMetadata()) > 0 || len(md.ProtoReflect().GetUnknown()) > 0 {
		return b, false
	}
	for _, k := range sortedKeys(md.GetFilterMetadata()) {
		s := md.GetFilterMetadata()[k]
		if s != nil && len(s.ProtoReflect().GetUnknown()) > 0 {
			return b, false
		}
		b = protowire.AppendTag(b, metadataFilterMetadata, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(mapEntrySize(k, sizeStruct(s))))
		b = appendMapKey(b, k)
		b = protowire.AppendTag(b, mapValue, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeStruct(s)))
		var ok bool
		if b, ok = appendStruct(b, s); !ok {
			return b, false
		}
	}
	return b, true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// mapEntrySize is the size of a map entry of a string key and a message
// value of n bytes; protobuf-go writes both always.
func mapEntrySize(key string, n int) int {
	return protowire.SizeTag(mapKey) + protowire.SizeBytes(len(key)) + protowire.SizeTag(mapValue) + protowire.SizeBytes(n)
}

func appendMapKey(b []byte, key string) []byte {
	b = protowire.AppendTag(b, mapKey, protowire.BytesType)
	return protowire.AppendString(b, key)
}

func sizeStruct(s *structpb.Struct) int {
	n := 0
	for k, v := range s.GetFields() {
		n += protowire.SizeTag(structFields) + protowire.SizeBytes(mapEntrySize(k, sizeValue(v)))
	}
	return n
}

func appendStruct(b []byte, s *structpb.Struct) ([]byte, bool) {
	for _, k := range sortedKeys(s.GetFields()) {
		v := s.GetFields()[k]
		if v != nil && len(v.ProtoReflect().GetUnknown()) > 0 {
			return b, false
		}
		n := sizeValue(v)
		b = protowire.AppendTag(b, structFields, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(mapEntrySize(k, n)))
		b = appendMapKey(b, k)
		b = protowire.AppendTag(b, mapValue, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		var ok bool
		if b, ok = appendValue(b, v); !ok {
			return b, false
		}
	}
	return b, true
}

// sizeValue is the size of v's encoding (0 for nil or no kind, which
// protobuf-go writes as an empty message).
func sizeValue(v *structpb.Value) int {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return protowire.SizeTag(valueNull) + protowire.SizeVarint(uint64(k.NullValue))
	case *structpb.Value_NumberValue:
		return protowire.SizeTag(valueNumber) + protowire.SizeFixed64()
	case *structpb.Value_StringValue:
		return protowire.SizeTag(valueString) + protowire.SizeBytes(len(k.StringValue))
	case *structpb.Value_BoolValue:
		return protowire.SizeTag(valueBool) + protowire.SizeVarint(protowire.EncodeBool(k.BoolValue))
	case *structpb.Value_StructValue:
		return protowire.SizeTag(valueStruct) + protowire.SizeBytes(sizeStruct(k.StructValue))
	case *structpb.Value_ListValue:
		n := 0
		for _, item := range k.ListValue.GetValues() {
			n += protowire.SizeTag(listValues) + protowire.SizeBytes(sizeValue(item))
		}
		return protowire.SizeTag(valueList) + protowire.SizeBytes(n)
	}
	return 0
}

func appendValue(b []byte, v *structpb.Value) ([]byte, bool) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		b = protowire.AppendTag(b, valueNull, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(k.NullValue))
	case *structpb.Value_NumberValue:
		b = protowire.AppendTag(b, valueNumber, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(k.NumberValue))
	case *structpb.Value_StringValue:
		b = protowire.AppendTag(b, valueString, protowire.BytesType)
		b = protowire.AppendString(b, k.StringValue)
	case *structpb.Value_BoolValue:
		b = protowire.AppendTag(b, valueBool, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(k.BoolValue))
	case *structpb.Value_StructValue:
		if k.StructValue != nil && len(k.StructValue.ProtoReflect().GetUnknown()) > 0 {
			return b, false
		}
		b = protowire.AppendTag(b, valueStruct, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeStruct(k.StructValue)))
		return appendStruct(b, k.StructValue)
	case *structpb.Value_ListValue:
		if k.ListValue != nil && len(k.ListValue.ProtoReflect().GetUnknown()) > 0 {
			return b, false
		}
		n := 0
		for _, item := range k.ListValue.GetValues() {
			n += protowire.SizeTag(listValues) + protowire.SizeBytes(sizeValue(item))
		}
		b = protowire.AppendTag(b, valueList, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		for _, item := range k.ListValue.GetValues() {
			if item != nil && len(item.ProtoReflect().GetUnknown()) > 0 {
				return b, false
			}
			b = protowire.AppendTag(b, listValues, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(sizeValue(item)))
			var ok bool
			if b, ok = appendValue(b, item); !ok {
				return b, false
			}
		}
	}
	return b, true
}
