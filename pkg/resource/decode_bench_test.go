package resource_test

import (
	"testing"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/resource"
)

// BenchmarkDecode decodes what a cold start reads: the bench generator's
// service files (a VirtualService, a DestinationRule, a Service, an
// EndpointSlice and two Pods each), one kind at a time and whole files.
func BenchmarkDecode(b *testing.B) {
	o := scale.Options{VirtualServices: 100}
	byKind := map[string][][]byte{}
	var files [][]byte
	var size int64
	for i := range o.VirtualServices {
		docs := o.Service(i, 0)
		for _, d := range docs {
			byKind[d.Kind] = append(byKind[d.Kind], []byte(d.YAML))
		}
		f := []byte(scale.Join(docs))
		files = append(files, f)
		size += int64(len(f))
	}
	for _, kind := range []string{"VirtualService", "DestinationRule", "Service", "EndpointSlice", "Pod"} {
		docs := byKind[kind]
		b.Run(kind, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, errs := resource.Decode(docs[i%len(docs)], "bench.yaml"); len(errs) > 0 {
					b.Fatal(errs[0])
				}
			}
		})
	}
	b.Run("service-file", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(size / int64(len(files)))
		for i := 0; b.Loop(); i++ {
			objs, errs := resource.Decode(files[i%len(files)], "bench.yaml")
			if len(errs) > 0 || len(objs) != 6 {
				b.Fatal(len(objs), errs)
			}
		}
	})
}
