package xds

import (
	"fmt"
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
// response's route configurations are written from those parts into one
// pooled buffer (sendBuffer), which gRPC returns once the response is
// sent. (Sending the parts themselves as a mem.BufferSlice saved that
// copy, ~2 ms for 14 MB, but made two small objects per virtual host:
// 5 MB of garbage per change at 30,000 routes, a third of the
// controller's.)
//
// The Any of such a route configuration has no value in the response
// message, which exists only to be sent: its value is what pieces holds
// for it. Everything else is gRPC's proto codec's.

// sendBuffer is the buffer pool of the responses serverCodec writes. It
// keeps the last buffer returned, which a collection does not take back:
// gRPC's default pool keeps large buffers in a sync.Pool, which drops
// them at every other collection, and a response of 30,000 routes on one
// port is ~32 MB. Allocated afresh for one change in five, that was 6.5
// MB of garbage per change on average, and the change it fell on waited
// for 32 MB to be zeroed and faulted in. One buffer serves a proxy's
// stream, whose responses go one at a time; responses sent at once to
// several proxies take new buffers. The cost is one response's size kept
// while idle; keeping the last returned rather than the largest lets it
// shrink with the configuration.
type sendBuffer struct {
	mu   sync.Mutex
	free *[]byte
}

// Get returns a buffer of length n: the free one if it is large enough,
// else a new one with an eighth more room, for the next responses to
// grow into.
func (p *sendBuffer) Get(n int) *[]byte {
	p.mu.Lock()
	b := p.free
	if b != nil && cap(*b) >= n {
		p.free = nil
		p.mu.Unlock()
		*b = (*b)[:n]
		return b
	}
	p.mu.Unlock()
	nb := make([]byte, n, n+n/8)
	return &nb
}

// Put keeps b as the free buffer.
func (p *sendBuffer) Put(b *[]byte) {
	p.mu.Lock()
	p.free = b
	p.mu.Unlock()
}

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
	base    encoding.CodecV2
	pieces  *pieceTable
	buffers *sendBuffer
}

func newServerCodec(pieces *pieceTable) serverCodec {
	return serverCodec{base: encoding.GetCodecV2("proto"), pieces: pieces, buffers: &sendBuffer{}}
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
	// Sizes first, so that the response is written into one buffer of
	// its exact size.
	parts := make([]routeParts, len(resp.Resources))
	encoded := make([][]byte, len(resp.Resources)) // a resource, or one without its Any
	resLens := make([]int, len(resp.Resources))
	anyLens := make([]int, len(resp.Resources))
	total := len(head)
	for i, r := range resp.Resources {
		if rcs[i] == nil {
			if encoded[i], err = opts.Marshal(r); err != nil {
				return nil, err
			}
			resLens[i] = len(encoded[i])
		} else {
			if parts[i], err = measureRouteConfiguration(rcs[i], opts); err != nil {
				return nil, err
			}
			// The resource without its Any, then the Any (field 4):
			// type URL, and the value from its parts.
			bare := proto.Clone(r).(*discoveryv3.Resource)
			bare.Resource = nil
			if encoded[i], err = opts.Marshal(bare); err != nil {
				return nil, err
			}
			if typeURL := r.GetResource().GetTypeUrl(); typeURL != "" {
				anyLens[i] += protowire.SizeTag(anyTypeURLField) + protowire.SizeBytes(len(typeURL))
			}
			if parts[i].size > 0 {
				anyLens[i] += protowire.SizeTag(anyValueField) + protowire.SizeBytes(parts[i].size)
			}
			resLens[i] = len(encoded[i]) + protowire.SizeTag(resourceAnyField) + protowire.SizeBytes(anyLens[i])
		}
		total += protowire.SizeTag(deltaResources) + protowire.SizeBytes(resLens[i])
	}
	pool := c.buffers
	bp := pool.Get(total)
	buf := append((*bp)[:0], head...)
	for i, r := range resp.Resources {
		buf = protowire.AppendTag(buf, deltaResources, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(resLens[i]))
		buf = append(buf, encoded[i]...)
		if rcs[i] == nil {
			continue
		}
		buf = protowire.AppendTag(buf, resourceAnyField, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(anyLens[i]))
		if typeURL := r.GetResource().GetTypeUrl(); typeURL != "" {
			buf = protowire.AppendTag(buf, anyTypeURLField, protowire.BytesType)
			buf = protowire.AppendString(buf, typeURL)
		}
		if parts[i].size > 0 {
			buf = protowire.AppendTag(buf, anyValueField, protowire.BytesType)
			buf = protowire.AppendVarint(buf, uint64(parts[i].size))
			buf = appendRouteConfiguration(buf, rcs[i], parts[i])
		}
	}
	if len(buf) != total {
		// Writing within the buffer's capacity never moved it; a size
		// off is a bug, answered as one rather than sent.
		pool.Put(bp)
		return nil, fmt.Errorf("delta response encoded to %d bytes, %d measured", len(buf), total)
	}
	*bp = buf
	// gRPC frees the buffer, back to the pool, once it is sent. (A
	// response under 1 KB is gRPC's to copy, and the buffer garbage.)
	return mem.BufferSlice{mem.NewBuffer(bp, pool)}, nil
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

// routeParts is what measureRouteConfiguration found of a route
// configuration for appendRouteConfiguration to write.
type routeParts struct {
	shell []byte // its fields but the virtual hosts
	// full holds, by position, the encodings of virtual hosts that are
	// not compact stand-ins (nil when all are, the common case).
	full [][]byte
	size int // of the whole encoding
}

// measureRouteConfiguration sizes rc's encoding: its fields but the
// virtual hosts, then each virtual host, a compact stand-in as its name
// and its remembered bytes.
func measureRouteConfiguration(rc *routev3.RouteConfiguration, opts proto.MarshalOptions) (routeParts, error) {
	shell, err := opts.Marshal(shellOf(rc))
	if err != nil {
		return routeParts{}, err
	}
	p := routeParts{shell: shell, size: len(shell)}
	for i, vh := range rc.VirtualHosts {
		n, ok := standInSize(vh, opts)
		if !ok {
			b, err := opts.Marshal(vh)
			if err != nil {
				return routeParts{}, err
			}
			if p.full == nil {
				p.full = make([][]byte, len(rc.VirtualHosts))
			}
			// An empty encoding (nil) and an empty stand-in are written
			// alike: a tag and a zero length.
			p.full[i], n = b, len(b)
		}
		p.size += protowire.SizeTag(routeVHosts) + protowire.SizeBytes(n)
	}
	return p, nil
}

// standInSize is the encoded size of vh if it is a compact stand-in,
// which has its name and unknown bytes and nothing else: exactly when
// its size is theirs. (Size skips unset fields by their Go values;
// ranging over the fields by reflection instead was 20 ms per change at
// 20,000 virtual hosts.)
func standInSize(vh *routev3.VirtualHost, opts proto.MarshalOptions) (int, bool) {
	unknown, n := standInParts(vh)
	return n, len(unknown) > 0 && opts.Size(vh) == n
}

// standInParts is what a stand-in is written as: its name, then its
// unknown bytes (n long in all).
func standInParts(vh *routev3.VirtualHost) (unknown []byte, n int) {
	unknown = vh.ProtoReflect().GetUnknown()
	n = len(unknown)
	if vh.Name != "" {
		n += protowire.SizeTag(vhostName) + protowire.SizeBytes(len(vh.Name))
	}
	return unknown, n
}

// appendRouteConfiguration appends rc's encoding as p measured it.
func appendRouteConfiguration(buf []byte, rc *routev3.RouteConfiguration, p routeParts) []byte {
	buf = append(buf, p.shell...)
	for i, vh := range rc.VirtualHosts {
		buf = protowire.AppendTag(buf, routeVHosts, protowire.BytesType)
		if p.full != nil && p.full[i] != nil {
			buf = protowire.AppendBytes(buf, p.full[i])
			continue
		}
		unknown, n := standInParts(vh)
		buf = protowire.AppendVarint(buf, uint64(n))
		if vh.Name != "" {
			buf = protowire.AppendTag(buf, vhostName, protowire.BytesType)
			buf = protowire.AppendString(buf, vh.Name)
		}
		buf = append(buf, unknown...)
	}
	return buf
}
