package xdsclient

import (
	"fmt"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// The proto codec this one defers to for everything else.
	_ "google.golang.org/grpc/encoding/proto"
)

// aliasingCodec is gRPC's proto codec, except that a delta response's
// resources keep their bytes where they arrived. gRPC's codec gathers a
// message into one buffer and proto.Unmarshal then copies every bytes
// field out of it, so each resource was copied twice on its way in: at
// 30,000 routes on one port, two route configurations of ~10 MB each per
// change, about half of the proxy's CPU for that change. Here the message
// is gathered into a buffer the response owns, and each resource's Any
// value is a slice of it. Everything other than the resources' Anys is
// decoded by proto.Unmarshal; anything the fast path does not expect (an
// Any with other fields, a resource with two, malformed wire) is decoded
// by proto.Unmarshal whole, so the result always equals proto.Unmarshal's.
type aliasingCodec struct {
	proto encoding.CodecV2 // gRPC's, for everything else
}

func newAliasingCodec() aliasingCodec {
	return aliasingCodec{proto: encoding.GetCodecV2("proto")}
}

// Name is the proto codec's: the content type on the wire is unchanged.
func (aliasingCodec) Name() string { return "proto" }

func (c aliasingCodec) Marshal(v any) (mem.BufferSlice, error) {
	return c.proto.Marshal(v)
}

func (c aliasingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*discoveryv3.DeltaDiscoveryResponse)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	return unmarshalDeltaResponse(data.Materialize(), resp)
}

// Field numbers of the messages decoded by hand.
const (
	deltaResponseResources = 2 // DeltaDiscoveryResponse.resources
	resourceResource       = 2 // Resource.resource
	anyTypeURL             = 1 // Any.type_url
	anyValue               = 2 // Any.value
)

// unmarshalDeltaResponse decodes b into resp as proto.Unmarshal would,
// with every resource's Any value aliasing b (which the caller must not
// reuse).
func unmarshalDeltaResponse(b []byte, resp *discoveryv3.DeltaDiscoveryResponse) error {
	resources, rest, ok := splitField(b, deltaResponseResources)
	if !ok {
		return proto.Unmarshal(b, resp)
	}
	parsed := make([]*discoveryv3.Resource, 0, len(resources))
	for _, rb := range resources {
		r, ok := decodeResource(rb)
		if !ok {
			return proto.Unmarshal(b, resp)
		}
		parsed = append(parsed, r)
	}
	if err := proto.Unmarshal(rest, resp); err != nil {
		return fmt.Errorf("decoding delta response: %w", err)
	}
	resp.Resources = parsed
	return nil
}

// decodeResource decodes one Resource, its Any by hand.
func decodeResource(b []byte) (*discoveryv3.Resource, bool) {
	anys, rest, ok := splitField(b, resourceResource)
	if !ok || len(anys) > 1 { // two would merge: proto.Unmarshal's job
		return nil, false
	}
	r := &discoveryv3.Resource{}
	if err := proto.Unmarshal(rest, r); err != nil {
		return nil, false
	}
	if len(anys) == 1 {
		a, ok := decodeAny(anys[0])
		if !ok {
			return nil, false
		}
		r.Resource = a
	}
	return r, true
}

// decodeAny decodes an Any holding a type URL and a value, at most once
// each; its value aliases b.
func decodeAny(b []byte) (*anypb.Any, bool) {
	a := &anypb.Any{}
	seen := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return nil, false
		}
		b = b[n:]
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return nil, false
		}
		b = b[m:]
		switch {
		case num == anyTypeURL && seen&1 == 0:
			if !utf8.Valid(v) {
				return nil, false
			}
			a.TypeUrl = string(v)
			seen |= 1
		case num == anyValue && seen&2 == 0:
			if len(v) > 0 {
				a.Value = v[:len(v):len(v)]
			}
			seen |= 2
		default:
			return nil, false
		}
	}
	return a, true
}

// splitField returns the payloads of every occurrence of field num (which
// must be length-delimited) and b without them.
func splitField(b []byte, num protowire.Number) (payloads [][]byte, rest []byte, ok bool) {
	rest = make([]byte, 0, 256)
	for len(b) > 0 {
		n, typ, tagLen := protowire.ConsumeTag(b)
		if tagLen < 0 {
			return nil, nil, false
		}
		fieldLen := protowire.ConsumeFieldValue(n, typ, b[tagLen:])
		if fieldLen < 0 {
			return nil, nil, false
		}
		if n == num {
			if typ != protowire.BytesType {
				return nil, nil, false
			}
			v, _ := protowire.ConsumeBytes(b[tagLen:])
			payloads = append(payloads, v)
		} else {
			rest = append(rest, b[:tagLen+fieldLen]...)
		}
		b = b[tagLen+fieldLen:]
	}
	return payloads, rest, true
}
