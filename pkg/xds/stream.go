package xds

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"

	"github.com/portico-gateway/portico/pkg/translate"
	"github.com/portico-gateway/portico/pkg/xds/validate"
)

// Stream prepares a class's new virtual hosts, clusters and load
// assignments while they are translated (translate.Stream): each is
// encoded, hashed and validated as soon as its batch is full and replaced
// by its compact stand-in, so that a cold start of thousands of
// VirtualServices never holds all full Envoy messages, their encodings
// and their stand-ins at once (which made the peak of a cold start about
// twice its steady heap). What it prepared is what the snapshot builder
// would have computed for the same messages; PrepareStream uses it.
// Not safe for concurrent use (the translator calls it from one
// goroutine; each batch is spread over the CPUs).
type Stream struct {
	prev *memo
	opts proto.MarshalOptions
	pre  map[proto.Message]*prepared
	// valid validates, memoising the packed messages found valid; the
	// snapshot built from the stream goes on with it.
	valid *validate.Validator
}

// Stream returns a Stream for a class's next build.
func (s *Server) Stream(class string) *Stream {
	s.mu.Lock()
	prev := s.memos[class]
	s.mu.Unlock()
	return NewStream(prev)
}

// streamParallelFrom is the batch size from which a batch is prepared on
// every CPU.
const streamParallelFrom = 64

// Compact is a translate.Stream.
func (st *Stream) Compact(batch []proto.Message) {
	results := make([]prepared, len(batch))
	out := make([]proto.Message, len(batch))
	one := func(i int) {
		m, r := batch[i], &results[i]
		out[i] = m
		bytes, err := st.opts.Marshal(m)
		if err != nil {
			r.err = err
			return
		}
		r.hash = contentHash(bytes)
		if _, ok := st.prev.of(typeOf(m)).valid[r.hash]; !ok {
			r.checked, r.invalid = true, st.valid.Deep(expand(m))
		}
		if _, ok := compactFields(m); !ok || isCompact(m) {
			return
		}
		if cl, ok := m.(*clusterv3.Cluster); ok {
			r.refs, r.hasRefs = clusterRefs(cl), true
		}
		r.wire = bytes
		out[i] = compactOf(m, bytes)
	}
	if len(batch) >= streamParallelFrom {
		inParallel(len(batch), one)
	} else {
		for i := range batch {
			one(i)
		}
	}
	for i, m := range out {
		st.pre[m] = &results[i]
		batch[i] = m
	}
}

// PrepareStream is Prepare for resources translated with st.Compact as
// their stream (st from Stream for the same class, before translating).
func (s *Server) PrepareStream(class string, res *translate.Resources, st *Stream) (*Prepared, error) {
	s.mu.Lock()
	prev := s.memos[class]
	s.mu.Unlock()
	snap, next, err := newSnapshot(res, prev, st)
	if err != nil {
		return nil, fmt.Errorf("class %s: %w", class, err)
	}
	return &Prepared{class: class, snap: snap, next: next}, nil
}

// NewStream is a Stream preparing against prev, a memo NewSnapshot
// returned (nil for none): for building snapshots without a Server.
func NewStream(prev *memo) *Stream {
	if prev == nil {
		prev = newMemo(nil)
	}
	return &Stream{prev: prev, opts: proto.MarshalOptions{Deterministic: true}, pre: map[proto.Message]*prepared{}, valid: validate.NewValidator()}
}

// NewSnapshotStream is NewSnapshot for resources translated with
// st.Compact as their stream (st from NewStream(prev)).
func NewSnapshotStream(res *translate.Resources, prev *memo, st *Stream) (*Snapshot, *memo, error) {
	return newSnapshot(res, prev, st)
}
