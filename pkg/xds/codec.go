package xds

import (
	"runtime"
	"sync"
	"weak"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// Registers the proto codec that serverCodec falls back to.
	_ "google.golang.org/grpc/encoding/proto"
)

// The xDS server's gRPC codec.
//
// Why: a delta response carrying a route configuration was marshalled
// into one new buffer per push (the whole route configuration: 1.5 MB at
// 3,000 routes, 10 MB at 30,000, and one per port when a change touches
// an HTTP and an HTTPS port), only for gRPC to copy it once more into its
// frames. That was half of all the controller allocated per change, so
// half of its garbage collections. The parts of a published route
// configuration already are bytes: its virtual hosts are compact
// stand-ins holding their remembered encodings (compact.go). So a delta
// response's route configurations are sent as lists of those parts
// (mem.BufferSlice), and the one copy left is gRPC's into its frames.
//
// The Any of such a route configuration has no value in the response
// message, which exists only to be sent: its value is what pieces holds
// for it. Everything else is gRPC's proto codec's.

// pieceTable maps the Anys of delta responses whose values the codec
// writes from their parts to the route configurations they hold. An
// entry goes when its Any is collected.
type pieceTable struct{ m sync.Map } // weak.Pointer[anypb.Any] → *routev3.RouteConfiguration

// add makes a an Any of rc whose value the codec writes from rc's parts.
func (t *pieceTable) add(a *anypb.Any, rc *routev3.RouteConfiguration) {
	k := weak.Make(a)
	t.m.Store(k, rc)
	runtime.AddCleanup(a, func(k weak.Pointer[anypb.Any]) { t.m.Delete(k) }, k)
}

// get returns the route configuration a holds, if it is one of add's.
func (t *pieceTable) get(a *anypb.Any) (*routev3.RouteConfiguration, bool) {
	if t == nil || a == nil || len(a.Value) > 0 {
		return nil, false
	}
	v, ok := t.m.Load(weak.Make(a))
	if !ok {
		return nil, false
	}
	return v.(*routev3.RouteConfiguration), true
}

// serverCodec is gRPC's proto codec, except for delta responses holding
// Anys of the piece table.
type serverCodec struct {
	base   encoding.CodecV2
	pieces *pieceTable
}

func newServerCodec(pieces *pieceTable) serverCodec {
	return serverCodec{base: encoding.GetCodecV2("proto"), pieces: pieces}
}

func (c serverCodec) Name() string { return c.base.Name() }

func (c serverCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.base.Unmarshal(data, v) }

func (c serverCodec) Marshal(v any) (mem.BufferSlice, error) {
	resp, ok := v.(*discoveryv3.DeltaDiscoveryResponse)
	if !ok {
		return c.base.Marshal(v)
	}
	rcs := make([]*routev3.RouteConfiguration, len(resp.Resources))
	pieced := false
	for i, r := range resp.Resources {
		if rc, ok := c.pieces.get(r.GetResource()); ok {
			rcs[i], pieced = rc, true
		}
	}
	if !pieced {
		return c.base.Marshal(v)
	}
	// The response without its resources, then each resource as field 2:
	// fields may come in any order, and the proxy's decoder and Envoy's
	// both take them so.
	opts := proto.MarshalOptions{Deterministic: true}
	top := proto.Clone(resp).(*discoveryv3.DeltaDiscoveryResponse)
	top.Resources = nil
	head, err := opts.Marshal(top)
	if err != nil {
		return nil, err
	}
	// The values first: their pieces size the response's list.
	values := make([]pieceWriter, len(resp.Resources))
	pieces := 1
	for i, rc := range rcs {
		if rc != nil {
			if err := values[i].routeConfiguration(rc, opts); err != nil {
				return nil, err
			}
			values[i].flush()
			pieces += len(values[i].out) + 1
		}
	}
	w := pieceWriter{out: make(mem.BufferSlice, 0, pieces), buf: head}
	for i, r := range resp.Resources {
		if rcs[i] == nil {
			b, err := opts.Marshal(r)
			if err != nil {
				return nil, err
			}
			w.buf = protowire.AppendTag(w.buf, deltaResources, protowire.BytesType)
			w.buf = protowire.AppendBytes(w.buf, b)
			continue
		}
		// The resource without its Any, then the Any (field 4): type URL,
		// and the value from its parts.
		bare := proto.Clone(r).(*discoveryv3.Resource)
		bare.Resource = nil
		rb, err := opts.Marshal(bare)
		if err != nil {
			return nil, err
		}
		value := &values[i]
		valueLen := value.out.Len()
		typeURL := r.GetResource().GetTypeUrl()
		anyLen := 0
		if typeURL != "" {
			anyLen += protowire.SizeTag(anyTypeURLField) + protowire.SizeBytes(len(typeURL))
		}
		if valueLen > 0 {
			anyLen += protowire.SizeTag(anyValueField) + protowire.SizeBytes(valueLen)
		}
		resLen := len(rb) + protowire.SizeTag(resourceAnyField) + protowire.SizeBytes(anyLen)
		w.buf = protowire.AppendTag(w.buf, deltaResources, protowire.BytesType)
		w.buf = protowire.AppendVarint(w.buf, uint64(resLen))
		w.buf = append(w.buf, rb...)
		w.buf = protowire.AppendTag(w.buf, resourceAnyField, protowire.BytesType)
		w.buf = protowire.AppendVarint(w.buf, uint64(anyLen))
		if typeURL != "" {
			w.buf = protowire.AppendTag(w.buf, anyTypeURLField, protowire.BytesType)
			w.buf = protowire.AppendString(w.buf, typeURL)
		}
		if valueLen > 0 {
			w.buf = protowire.AppendTag(w.buf, anyValueField, protowire.BytesType)
			w.buf = protowire.AppendVarint(w.buf, uint64(valueLen))
			w.flush()
			w.out = append(w.out, value.out...)
		}
	}
	w.flush()
	return w.out, nil
}

// Field numbers of the messages the codec writes.
const (
	deltaResources   = 2 // DeltaDiscoveryResponse.resources
	resourceAnyField = 2 // Resource.resource
	anyTypeURLField  = 1 // Any.type_url
	anyValueField    = 2 // Any.value
	routeVHosts      = 2 // RouteConfiguration.virtual_hosts
	vhostName        = 1 // VirtualHost.name
)

// pieceWriter builds a mem.BufferSlice of bytes it writes (buf) and
// bytes it refers to without copying.
type pieceWriter struct {
	out   mem.BufferSlice
	buf   []byte
	start int // where buf's bytes not yet in out begin
}

// flush moves what was written to buf since the last flush into out.
// The piece's capacity ends at its length, so later writes to buf never
// reach into it.
func (w *pieceWriter) flush() {
	if len(w.buf) > w.start {
		w.out = append(w.out, mem.SliceBuffer(w.buf[w.start:len(w.buf):len(w.buf)]))
		w.start = len(w.buf)
	}
}

// refer appends b to the output without copying it.
func (w *pieceWriter) refer(b []byte) {
	if len(b) == 0 {
		return
	}
	w.flush()
	w.out = append(w.out, mem.SliceBuffer(b))
}

// routeConfiguration writes rc's encoding, as the first thing w writes:
// its fields but the virtual hosts, then each virtual host, a compact
// stand-in as its name and a reference to its remembered bytes.
func (w *pieceWriter) routeConfiguration(rc *routev3.RouteConfiguration, opts proto.MarshalOptions) error {
	b, err := opts.Marshal(shellOf(rc))
	if err != nil {
		return err
	}
	// Room for every virtual host's head and reference, so that neither
	// list grows step by step.
	room := len(b)
	for _, vh := range rc.VirtualHosts {
		room += len(vh.Name) + 16
	}
	w.buf = append(make([]byte, 0, room), b...)
	w.out = make(mem.BufferSlice, 0, 2*len(rc.VirtualHosts)+1)
	for _, vh := range rc.VirtualHosts {
		unknown := vh.ProtoReflect().GetUnknown()
		n := len(unknown)
		if vh.Name != "" {
			n += protowire.SizeTag(vhostName) + protowire.SizeBytes(len(vh.Name))
		}
		// A compact stand-in has its name and unknown bytes and nothing
		// else, which is exactly when its size is theirs. (Size skips
		// unset fields by their Go values; ranging over the fields by
		// reflection instead was 20 ms per change at 20,000 virtual hosts.)
		if len(unknown) == 0 || opts.Size(vh) != n {
			b, err := opts.Marshal(vh)
			if err != nil {
				return err
			}
			w.buf = protowire.AppendTag(w.buf, routeVHosts, protowire.BytesType)
			w.buf = protowire.AppendBytes(w.buf, b)
			continue
		}
		w.buf = protowire.AppendTag(w.buf, routeVHosts, protowire.BytesType)
		w.buf = protowire.AppendVarint(w.buf, uint64(n))
		if vh.Name != "" {
			w.buf = protowire.AppendTag(w.buf, vhostName, protowire.BytesType)
			w.buf = protowire.AppendString(w.buf, vh.Name)
		}
		w.refer(unknown)
	}
	return nil
}
