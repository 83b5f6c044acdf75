package tracing

import (
	"strings"
	"testing"
)

type hdr map[string]string

func (h hdr) Get(n string) string { return h[n] }
func (h hdr) Set(n, v string)     { h[n] = v }
func (h hdr) Del(n string)        { delete(h, n) }

func TestExtract(t *testing.T) {
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	cases := []struct {
		name    string
		h       hdr
		ok      bool
		trace   string
		sampled int
	}{
		{"w3c sampled", hdr{"traceparent": "00-" + tid + "-" + sid + "-01"}, true, tid, SampledYes},
		{"w3c not sampled", hdr{"traceparent": "00-" + tid + "-" + sid + "-00"}, true, tid, SampledNo},
		{"w3c future version with extra field", hdr{"traceparent": "cc-" + tid + "-" + sid + "-01-what"}, true, tid, SampledYes},
		{"w3c version 00 with extra field", hdr{"traceparent": "00-" + tid + "-" + sid + "-01-what"}, false, "", SampledUnknown},
		{"w3c version ff", hdr{"traceparent": "ff-" + tid + "-" + sid + "-01"}, false, "", SampledUnknown},
		{"w3c zero trace", hdr{"traceparent": "00-" + strings.Repeat("0", 32) + "-" + sid + "-01"}, false, "", SampledUnknown},
		{"w3c zero span", hdr{"traceparent": "00-" + tid + "-" + strings.Repeat("0", 16) + "-01"}, false, "", SampledUnknown},
		{"w3c upper-case hex", hdr{"traceparent": "00-" + strings.ToUpper(tid) + "-" + sid + "-01"}, true, tid, SampledYes},
		{"w3c wins over b3", hdr{"traceparent": "00-" + tid + "-" + sid + "-01", "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"}, true, tid, SampledYes},
		{"bad w3c falls back to b3", hdr{"traceparent": "junk", "x-b3-traceid": tid, "x-b3-spanid": sid, "x-b3-sampled": "0"}, true, tid, SampledNo},
		{"b3 single", hdr{"b3": tid + "-" + sid + "-1-" + sid}, true, tid, SampledYes},
		{"b3 single debug", hdr{"b3": tid + "-" + sid + "-d"}, true, tid, SampledYes},
		{"b3 single no decision", hdr{"b3": tid + "-" + sid}, true, tid, SampledUnknown},
		{"b3 single deny only", hdr{"b3": "0"}, false, "", SampledNo},
		{"b3 single bad sampling", hdr{"b3": tid + "-" + sid + "-x"}, false, "", SampledUnknown},
		{"b3 multi 64-bit", hdr{"x-b3-traceid": "a3ce929d0e0e4736", "x-b3-spanid": sid, "x-b3-sampled": "1"}, true, "0000000000000000a3ce929d0e0e4736", SampledYes},
		{"b3 multi flags", hdr{"x-b3-traceid": tid, "x-b3-spanid": sid, "x-b3-flags": "1"}, true, tid, SampledYes},
		{"b3 multi sampled only", hdr{"x-b3-sampled": "0"}, false, "", SampledNo},
		{"b3 multi bad span", hdr{"x-b3-traceid": tid, "x-b3-spanid": "zz", "x-b3-sampled": "1"}, false, "", SampledYes},
		{"nothing", hdr{}, false, "", SampledUnknown},
	}
	for _, c := range cases {
		sc, ok := Extract(c.h)
		if ok != c.ok || sc.Sampled != c.sampled || (c.ok && sc.TraceID.String() != c.trace) {
			t.Errorf("%s: got ok=%v sampled=%d trace=%s, want ok=%v sampled=%d trace=%s", c.name, ok, sc.Sampled, sc.TraceID, c.ok, c.sampled, c.trace)
		}
	}
}

func TestInjectRoundTrips(t *testing.T) {
	sc := SpanContext{TraceID: newTraceID(), SpanID: newSpanID(), Sampled: SampledYes, TraceState: "a=b"}
	parent := newSpanID()
	h := hdr{"b3": "stale", "x-b3-flags": "1"}
	Inject(h, sc, parent)
	if _, ok := h["b3"]; ok {
		t.Errorf("stale b3 kept")
	}
	w, ok := ParseTraceparent(h["traceparent"])
	if !ok || w.TraceID != sc.TraceID || w.SpanID != sc.SpanID || w.Sampled != SampledYes {
		t.Errorf("traceparent %q", h["traceparent"])
	}
	delete(h, "traceparent")
	b, ok := Extract(h)
	if !ok || b.TraceID != sc.TraceID || b.SpanID != sc.SpanID || h["x-b3-parentspanid"] != parent.String() {
		t.Errorf("b3 %v", h)
	}
}

// FuzzExtract: any header values parse without panicking, and what
// parses re-injects to the same IDs.
func FuzzExtract(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1", "a3ce929d0e0e4736", "e457b5a2e4d86bd1", "1")
	f.Add("", "0", "", "", "")
	f.Add("00--", "--", "x", "y", "z")
	f.Fuzz(func(t *testing.T, tp, b3, tid, sid, s string) {
		sc, ok := Extract(hdr{"traceparent": tp, "b3": b3, "x-b3-traceid": tid, "x-b3-spanid": sid, "x-b3-sampled": s})
		if !ok {
			return
		}
		if !sc.TraceID.IsValid() || !sc.SpanID.IsValid() {
			t.Fatalf("invalid IDs accepted: %+v", sc)
		}
		if sc.Sampled == SampledUnknown {
			sc.Sampled = SampledNo
		}
		h := hdr{}
		Inject(h, sc, SpanID{})
		back, ok := Extract(h)
		if !ok || back.TraceID != sc.TraceID || back.SpanID != sc.SpanID || back.Sampled != sc.Sampled {
			t.Fatalf("round trip %+v -> %v -> %+v", sc, h, back)
		}
	})
}

func TestSamplingFollowsRequestID(t *testing.T) {
	tr := &Tracer{cfg: &Config{Sampling: 2500}}
	n := 0
	for i := 0; i < 4000; i++ {
		id := "req-" + string(rune('a'+i%26)) + strings.Repeat("x", i%7) + string(rune(i))
		a, b := tr.Start(hdr{}, id, zeroTime).Sampled(), tr.Start(hdr{}, id, zeroTime).Sampled()
		if a != b {
			t.Fatalf("request %q sampled differently twice", id)
		}
		if a {
			n++
		}
	}
	if n < 800 || n > 1200 {
		t.Errorf("%d of 4000 sampled at 25%%", n)
	}
}
