package h2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// randomHeaderStream writes HEADERS (with CONTINUATIONs) and other frames
// the way hostile and ordinary peers do: field names in upper case or
// with invalid bytes, control characters in values, pseudo-fields after
// regular ones, repeated or unknown or mixed pseudo-fields, lists over
// the size limit, blocks cut at random points, raw garbage instead of
// HPACK, and the dynamic table in use across blocks.
func randomHeaderStream(rng *rand.Rand, maxList uint32) []byte {
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	names := []string{":method", ":path", ":scheme", ":authority", ":status", ":protocol", ":bogus",
		"user-agent", "accept", "x-trace", "Upper-Case", "bad name", "cookie", "content-length", ""}
	values := []string{"GET", "/", "https", "a.example", "200", "v", "", "x\x00y", "tab\tok", "line\nbreak",
		string(bytes.Repeat([]byte("z"), int(maxList/4)))}
	id := uint32(1)
	for blocks := 2 + rng.IntN(8); blocks > 0; blocks-- {
		hbuf.Reset()
		switch mode := rng.IntN(10); {
		case mode < 6: // an ordinary request, sometimes with a long value
			for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/"}, {":authority", "a.example"}} {
				enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			for n := rng.IntN(6); n > 0; n-- {
				v := values[rng.IntN(3)]
				if rng.IntN(3) == 0 {
					v = values[len(values)-1]
				}
				enc.WriteField(hpack.HeaderField{Name: names[7+rng.IntN(3)], Value: v, Sensitive: rng.IntN(8) == 0})
			}
		default: // anything
			for n := rng.IntN(12); n > 0; n-- {
				enc.WriteField(hpack.HeaderField{Name: names[rng.IntN(len(names))], Value: values[rng.IntN(len(values))],
					Sensitive: rng.IntN(8) == 0})
			}
		}
		block := append([]byte(nil), hbuf.Bytes()...)
		if rng.IntN(30) == 0 { // not HPACK at all
			block = []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
		}
		if rng.IntN(30) == 0 && len(block) > 1 { // cut short
			block = block[:rng.IntN(len(block))]
		}
		// Cut the block into a HEADERS frame and CONTINUATIONs.
		var cuts []int
		for c := rng.IntN(4) - 1; c > 0 && len(block) > 0; c-- {
			cuts = append(cuts, rng.IntN(len(block)+1))
		}
		slicesSort(cuts)
		prev, parts := 0, [][]byte{}
		for _, c := range cuts {
			parts = append(parts, block[prev:c])
			prev = c
		}
		parts = append(parts, block[prev:])
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: parts[0],
			EndStream: rng.IntN(2) == 0, EndHeaders: len(parts) == 1})
		for i, p := range parts[1:] {
			fr.WriteContinuation(id, i == len(parts)-2, p)
		}
		if rng.IntN(4) == 0 {
			fr.WritePing(false, [8]byte{byte(blocks)})
		}
		id += 2
	}
	return out.Bytes()
}

func slicesSort(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// outcome is what reading one frame gave, in comparable form.
func outcome(f http2.Frame, err error) string {
	if err != nil {
		var ce http2.ConnectionError
		var se http2.StreamError
		switch {
		case errors.As(err, &ce):
			return fmt.Sprintf("connection error %v", http2.ErrCode(ce))
		case errors.As(err, &se):
			return fmt.Sprintf("stream %d error %v", se.StreamID, se.Code)
		}
		return "error " + err.Error()
	}
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return fmt.Sprintf("headers stream %d end %v truncated %v fields %q", f.StreamID, f.StreamEnded(), f.Truncated, f.Fields)
	case *http2.PingFrame:
		return fmt.Sprintf("ping %v", f.Data)
	}
	return fmt.Sprintf("%T", f)
}

// TestFrameReaderMatchesXNet: the frame reader that reuses its frame and
// fields reads every stream of frames as x/net's Framer with
// ReadMetaHeaders does, frame by frame: the same fields, truncation, and
// connection or stream errors — across blocks, so the HPACK dynamic
// table is checked to stay in step, and through fields reused from
// earlier blocks.
func TestFrameReaderMatchesXNet(t *testing.T) {
	seen := map[string]int{}
	for _, maxList := range []uint32{256, 4096} {
		for seed := uint64(0); seed < 1500; seed++ {
			rng := rand.New(rand.NewPCG(seed, uint64(maxList)))
			wire := randomHeaderStream(rng, maxList)

			ref := http2.NewFramer(nil, bytes.NewReader(wire))
			ref.MaxHeaderListSize = maxList
			ref.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			var cr countingReader
			got := newFrameReader(&cr, bytes.NewReader(wire), maxList)
			for i := 0; i < 100; i++ {
				want := outcome(ref.ReadFrame())
				have := outcome(got.ReadFrame())
				if want != have {
					t.Fatalf("maxList %d seed %d frame %d:\n got %s\nwant %s", maxList, seed, i, have, want)
				}
				kind, _, _ := strings.Cut(want, " ")
				if strings.Contains(want, "truncated true") {
					kind = "truncated"
				}
				seen[kind]++
				if strings.HasPrefix(want, "error") || strings.HasPrefix(want, "connection") {
					break
				}
			}
		}
	}
	// The generator must reach every outcome, or the comparison proves
	// little.
	for _, kind := range []string{"headers", "truncated", "stream", "connection", "ping", "error"} {
		if seen[kind] < 20 {
			t.Errorf("only %d frames read as %q: %v", seen[kind], kind, seen)
		}
	}
	t.Logf("outcomes: %v", seen)
}

// BenchmarkReadHeaderBlock: a browser-like request's header block, read
// by x/net's Framer and by the frame reader.
func BenchmarkReadHeaderBlock(b *testing.B) {
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "books.example.com"},
		{":path", "/book/1"}, {"user-agent", "bench"}, {"accept", "*/*"}, {"accept-encoding", "gzip"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
	frame := wire.Bytes()
	r := bytes.NewReader(nil)
	b.Run("x/net", func(b *testing.B) {
		ref := http2.NewFramer(nil, r)
		ref.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			r.Reset(frame)
			if _, err := ref.ReadFrame(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("frameReader", func(b *testing.B) {
		var cr countingReader
		got := newFrameReader(&cr, r, 60<<10)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			r.Reset(frame)
			cr.n = 0
			if _, err := got.ReadFrame(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
