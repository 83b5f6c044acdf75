package translate

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// randomFields makes distinct keys (that sort differently as bytes and
// as runes, and the empty key) with values of every kind, nested.
func randomFields(rng *rand.Rand, depth int) []mdField {
	keys := []string{"", "a", "b", "B", "config", "services", "sources", "subset", "workload", "é", "z\x00", "host", "name", "namespace", "labels", "10", "9"}
	var fields []mdField
	seen := map[string]bool{}
	for range rng.IntN(6) {
		k := keys[rng.IntN(len(keys))]
		if rng.IntN(4) == 0 {
			k = fmt.Sprintf("k%d", rng.IntN(1000))
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		fields = append(fields, mdField{k, randomValue(rng, depth)})
	}
	return fields
}

func randomValue(rng *rand.Rand, depth int) mdValue {
	switch n := rng.IntN(4); {
	case n == 1 && depth > 0:
		var items []mdValue
		for range rng.IntN(4) {
			items = append(items, randomValue(rng, depth-1))
		}
		return mdList(items...)
	case n == 2 && depth > 0:
		return mdStruct(randomFields(rng, depth-1)...)
	default:
		return mdString(string(bytes.Repeat([]byte("x"), rng.IntN(200))))
	}
}

// structOf and valueOf are the google.protobuf.Struct values fields
// stand for.
func structOf(fields []mdField) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, f := range fields {
		s.Fields[f.key] = valueOf(f.val)
	}
	return s
}

func valueOf(v mdValue) *structpb.Value {
	switch v.kind {
	case mdListKind:
		l := &structpb.ListValue{}
		for _, item := range v.list {
			l.Values = append(l.Values, valueOf(item))
		}
		return structpb.NewListValue(l)
	case mdStructKind:
		return structpb.NewStructValue(structOf(v.fields))
	}
	return structpb.NewStringValue(v.str)
}

// TestPackedMetadataEncodesAsProtobufGo checks on random metadata that a
// packed Metadata encodes byte for byte as proto.Marshal with
// Deterministic encodes the same Struct values, and that UnpackMetadata
// reads them back.
func TestPackedMetadataEncodesAsProtobufGo(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	det := proto.MarshalOptions{Deterministic: true}
	for i := range 5000 {
		var filters []mdField
		want := &corev3.Metadata{}
		for _, f := range randomFields(rng, 3) {
			if f.val.kind != mdStructKind {
				continue // filter_metadata maps names to structs
			}
			filters = append(filters, f)
			if want.FilterMetadata == nil {
				want.FilterMetadata = map[string]*structpb.Struct{}
			}
			want.FilterMetadata[f.key] = structOf(f.val.fields)
		}
		wantBytes, err := det.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		packed := packMetadata(filters...)
		got, err := det.Marshal(packed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, wantBytes) {
			t.Fatalf("case %d: %v encodes as\n%x\nwant\n%x", i, want, got, wantBytes)
		}
		if len(wantBytes) > 0 && len(packed.GetFilterMetadata()) > 0 {
			t.Fatalf("case %d: packed metadata has fields of its own", i)
		}
		if un := UnpackMetadata(packed); !proto.Equal(un, want) {
			t.Fatalf("case %d: unpacked %v, want %v", i, un, want)
		}
	}
	if UnpackMetadata(nil) != nil {
		t.Error("nil metadata unpacked to something")
	}
	plain := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"a": {}}}
	if UnpackMetadata(plain) != plain {
		t.Error("metadata that is not packed was not returned as it is")
	}
}
