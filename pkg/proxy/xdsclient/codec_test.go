package xdsclient

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// randomDeltaResponse is a response with every field of the message set
// at random, resources with and without Anys (empty values too).
func randomDeltaResponse(rng *rand.Rand) *discoveryv3.DeltaDiscoveryResponse {
	resp := &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: fmt.Sprintf("v%d", rng.IntN(100)),
		TypeUrl:           "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
		Nonce:             fmt.Sprint(rng.Uint64()),
	}
	if rng.IntN(3) == 0 {
		resp.ControlPlane = &corev3.ControlPlane{Identifier: "portico"}
	}
	for i := range rng.IntN(3) {
		resp.RemovedResources = append(resp.RemovedResources, fmt.Sprintf("gone-%d", i))
	}
	for i := range rng.IntN(6) {
		r := &discoveryv3.Resource{Name: fmt.Sprintf("r-%d", i), Version: fmt.Sprintf("%x", rng.Uint32())}
		if rng.IntN(4) != 0 {
			value := make([]byte, rng.IntN(300))
			for j := range value {
				value[j] = byte(rng.Uint32())
			}
			r.Resource = &anypb.Any{TypeUrl: resp.TypeUrl, Value: value}
			if rng.IntN(5) == 0 {
				r.Resource.TypeUrl = ""
			}
		}
		if rng.IntN(4) == 0 {
			r.Aliases = []string{"alias-" + r.Name}
		}
		if rng.IntN(4) == 0 {
			r.Ttl = durationpb.New(time.Duration(rng.IntN(100)) * time.Second)
		}
		resp.Resources = append(resp.Resources, r)
	}
	return resp
}

// decodeBoth decodes b by hand and with proto.Unmarshal; it fails the test
// unless both fail or both give equal messages.
func decodeBoth(t testing.TB, b []byte) *discoveryv3.DeltaDiscoveryResponse {
	t.Helper()
	want := &discoveryv3.DeltaDiscoveryResponse{}
	wantErr := proto.Unmarshal(b, want)
	got := &discoveryv3.DeltaDiscoveryResponse{}
	gotErr := unmarshalDeltaResponse(append([]byte(nil), b...), got)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("decoding %x: error %v, proto.Unmarshal's %v", b, gotErr, wantErr)
	}
	if gotErr == nil && !proto.Equal(got, want) {
		t.Fatalf("decoding %x:\n got %v\nwant %v", b, got, want)
	}
	return got
}

// TestUnmarshalDeltaResponseEqualsProto: random responses, and random
// damage to their encodings (bytes changed, cut, repeated, spliced, an
// Any with a field of its own, a resource with two Anys), decode exactly
// as proto.Unmarshal decodes them; and a well-formed response's values
// alias the buffer they arrived in, so the fast path is the one taken.
func TestUnmarshalDeltaResponseEqualsProto(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 5))
	aliased := 0
	for range 3000 {
		resp := randomDeltaResponse(rng)
		b, err := proto.MarshalOptions{Deterministic: rng.IntN(2) == 0}.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		// Aliasing, on the decoder's own buffer.
		got := &discoveryv3.DeltaDiscoveryResponse{}
		buf := append([]byte(nil), b...)
		if err := unmarshalDeltaResponse(buf, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, resp) {
			t.Fatalf("seed %d: got %v, want %v", seed, got, resp)
		}
		for _, r := range got.Resources {
			if v := r.GetResource().GetValue(); len(v) > 0 {
				start := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
				p := uintptr(unsafe.Pointer(unsafe.SliceData(v)))
				if p < start || p >= start+uintptr(len(buf)) {
					t.Fatalf("seed %d: resource %s's value was copied, not aliased", seed, r.Name)
				}
				aliased++
			}
		}
		damaged := append([]byte(nil), b...)
		switch rng.IntN(6) {
		case 0:
			if len(damaged) > 0 {
				damaged[rng.IntN(len(damaged))] = byte(rng.Uint32())
			}
		case 1:
			damaged = damaged[:rng.IntN(len(damaged)+1)]
		case 2:
			damaged = append(damaged, b...)
		case 3: // an Any with a field of its own
			a := protowire.AppendTag(nil, anyTypeURL, protowire.BytesType)
			a = protowire.AppendString(a, "type.googleapis.com/x")
			if rng.IntN(2) == 0 {
				a = protowire.AppendVarint(protowire.AppendTag(a, 3, protowire.VarintType), 7)
			} else {
				a = protowire.AppendString(protowire.AppendTag(a, 3, protowire.BytesType), "unknown")
			}
			r := protowire.AppendTag(nil, resourceResource, protowire.BytesType)
			r = protowire.AppendBytes(r, a)
			damaged = protowire.AppendTag(damaged, deltaResponseResources, protowire.BytesType)
			damaged = protowire.AppendBytes(damaged, r)
		case 4: // a resource with two Anys, which proto merges
			a1 := protowire.AppendBytes(protowire.AppendTag(nil, anyValue, protowire.BytesType), []byte("one"))
			a2 := protowire.AppendString(protowire.AppendTag(nil, anyTypeURL, protowire.BytesType), "type.googleapis.com/y")
			r := protowire.AppendBytes(protowire.AppendTag(nil, resourceResource, protowire.BytesType), a1)
			r = protowire.AppendBytes(protowire.AppendTag(r, resourceResource, protowire.BytesType), a2)
			damaged = protowire.AppendBytes(protowire.AppendTag(damaged, deltaResponseResources, protowire.BytesType), r)
		default: // resources sent with the wrong wire type
			damaged = protowire.AppendVarint(protowire.AppendTag(damaged, deltaResponseResources, protowire.VarintType), 1)
		}
		decodeBoth(t, damaged)
	}
	if aliased == 0 {
		t.Fatal("no resource value was checked for aliasing")
	}
}

// FuzzDeltaResponseDecode: any bytes decode as proto.Unmarshal decodes
// them, or both fail.
func FuzzDeltaResponseDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		b, err := proto.Marshal(randomDeltaResponse(rng))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeBoth(t, b)
	})
}
