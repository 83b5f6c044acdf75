package translate

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// randomStruct makes a Struct of every kind of value, nested, with keys
// that sort differently as bytes and as runes, empty keys and values, and
// nil entries.
func randomStruct(rng *rand.Rand, depth int) *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range rng.IntN(6) {
		s.Fields[randomKey(rng)] = randomValue(rng, depth)
	}
	return s
}

func randomKey(rng *rand.Rand) string {
	keys := []string{"", "a", "b", "B", "config", "services", "sources", "subset", "workload", "é", "z\x00", "host", "name", "namespace", "labels", "app", "version", "10", "9"}
	if rng.IntN(4) == 0 {
		return fmt.Sprintf("k%d", rng.IntN(1000))
	}
	return keys[rng.IntN(len(keys))]
}

func randomValue(rng *rand.Rand, depth int) *structpb.Value {
	switch n := rng.IntN(9); {
	case n == 0:
		return nil
	case n == 1:
		return &structpb.Value{}
	case n == 2:
		return structpb.NewNullValue()
	case n == 3:
		return structpb.NewNumberValue([]float64{0, -0.5, 1e300, 3}[rng.IntN(4)])
	case n == 4:
		return structpb.NewBoolValue(rng.IntN(2) == 0)
	case n == 5 && depth > 0:
		return structpb.NewStructValue(randomStruct(rng, depth-1))
	case n == 6 && depth > 0:
		l := &structpb.ListValue{}
		for range rng.IntN(4) {
			v := randomValue(rng, depth-1)
			if v == nil {
				v = &structpb.Value{}
			}
			l.Values = append(l.Values, v)
		}
		return structpb.NewListValue(l)
	default:
		return structpb.NewStringValue(string(bytes.Repeat([]byte("x"), rng.IntN(200))))
	}
}

func randomMetadata(rng *rand.Rand) *corev3.Metadata {
	md := &corev3.Metadata{}
	if rng.IntN(8) > 0 {
		md.FilterMetadata = map[string]*structpb.Struct{}
		for range rng.IntN(4) {
			if rng.IntN(10) == 0 {
				md.FilterMetadata[randomKey(rng)] = nil
				continue
			}
			md.FilterMetadata[randomKey(rng)] = randomStruct(rng, 3)
		}
	}
	return md
}

// TestPackedMetadataEncodesAsProtobufGo checks that the hand-written
// encoding of random metadata is byte for byte what proto.Marshal with
// Deterministic writes, that a packed Metadata encodes to those bytes,
// and that UnpackMetadata gives back what was packed.
func TestPackedMetadataEncodesAsProtobufGo(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	det := proto.MarshalOptions{Deterministic: true}
	for i := range 5000 {
		md := randomMetadata(rng)
		want, err := det.Marshal(md)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendMetadata(nil, md)
		if !ok {
			t.Fatalf("case %d: not encoded by hand: %v", i, md)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d: encoding differs for %v\ngot  %x\nwant %x", i, md, got, want)
		}
		packed := packMetadata(md)
		if b, err := det.Marshal(packed); err != nil || !bytes.Equal(b, want) {
			t.Fatalf("case %d: packed metadata encodes as %x (%v), want %x", i, b, err, want)
		}
		if len(want) > 0 && len(packed.GetFilterMetadata()) > 0 {
			t.Fatalf("case %d: packed metadata still has its fields", i)
		}
		// Decoding normalises nil values to empty ones, as a proxy sees them.
		var decoded corev3.Metadata
		if err := proto.Unmarshal(want, &decoded); err != nil {
			t.Fatal(err)
		}
		if un := UnpackMetadata(packed); !proto.Equal(un, &decoded) {
			t.Fatalf("case %d: unpacked %v, want %v", i, un, &decoded)
		}
	}
	// What is not written by hand stays as it is.
	typed := &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{"x": {TypeUrl: "t"}}}
	if packMetadata(typed) != typed {
		t.Error("metadata with typed filter metadata was packed")
	}
	if packMetadata(nil) != nil || UnpackMetadata(nil) != nil {
		t.Error("nil metadata packed or unpacked to something")
	}
}
