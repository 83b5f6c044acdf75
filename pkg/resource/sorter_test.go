package resource

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	networking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSorterEqualsSort drives a Sorter through random edits of two lists
// as providers make them — an object replaced by a new version (same or
// new creation time), added, deleted, the list handed over in another
// order, the provider's array reused and changed in place — and checks
// every result against Sort on a copy. VirtualServices take the copying
// path, Services the in-place one.
func TestSorterEqualsSort(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		stamp := func() metav1.Time { return metav1.NewTime(base.Add(time.Duration(rng.IntN(4)) * time.Second)) }
		// Few namespaces and creation times: ties are the common case.
		key := func() (string, string) { return fmt.Sprintf("o-%d", rng.IntN(200)), fmt.Sprintf("ns-%d", rng.IntN(3)) }
		newVS := func(name, ns string, at metav1.Time) *networking.VirtualService {
			vs := &networking.VirtualService{}
			vs.Name, vs.Namespace, vs.CreationTimestamp = name, ns, at
			return vs
		}
		newSvc := func(name, ns string, at metav1.Time) *corev1.Service {
			s := &corev1.Service{}
			s.Name, s.Namespace, s.CreationTimestamp = name, ns, at
			return s
		}
		in := &Resources{}
		for range rng.IntN(20) {
			name, ns := key()
			in.VirtualServices = addNew(in.VirtualServices, newVS(name, ns, stamp()))
			name, ns = key()
			in.Services = addNew(in.Services, newSvc(name, ns, stamp()))
		}
		in.Sort() // providers hand the in-place kinds over sorted, most of the time
		var s Sorter
		for step := range 60 {
			in.VirtualServices = editList(rng, in.VirtualServices, func(o *networking.VirtualService, sameTime bool) *networking.VirtualService {
				if o == nil {
					name, ns := key()
					return newVS(name, ns, stamp())
				}
				if sameTime {
					return newVS(o.Name, o.Namespace, o.CreationTimestamp)
				}
				return newVS(o.Name, o.Namespace, stamp())
			})
			in.Services = editList(rng, in.Services, func(o *corev1.Service, sameTime bool) *corev1.Service {
				if o == nil {
					name, ns := key()
					return newSvc(name, ns, stamp())
				}
				if sameTime {
					return newSvc(o.Name, o.Namespace, o.CreationTimestamp)
				}
				return newSvc(o.Name, o.Namespace, stamp())
			})
			want := &Resources{VirtualServices: slices.Clone(in.VirtualServices), Services: slices.Clone(in.Services)}
			want.Sort()
			got := s.SortedCopy(in)
			if !slices.Equal(got.VirtualServices, want.VirtualServices) || !slices.Equal(got.Services, want.Services) {
				t.Fatalf("seed %d, step %d: the Sorter's order differs from Sort's", seed, step)
			}
		}
	}
}

// addNew appends o unless its namespace/name is listed.
func addNew[T metav1.Object](list []T, o T) []T {
	for _, x := range list {
		if x.GetName() == o.GetName() && x.GetNamespace() == o.GetNamespace() {
			return list
		}
	}
	return append(list, o)
}

// editList makes one random edit; make(nil, _) is a new object, make(o,
// sameTime) a new version of o.
func editList[T metav1.Object](rng *rand.Rand, list []T, make func(o T, sameTime bool) T) []T {
	var zero T
	switch op := rng.IntN(8); {
	case op == 0 && len(list) > 0: // a new version, in the provider's array
		i := rng.IntN(len(list))
		list[i] = make(list[i], true)
	case op == 1 && len(list) > 0: // deleted and created again
		list = slices.Clone(list)
		i := rng.IntN(len(list))
		list[i] = make(list[i], false)
	case op == 2:
		list = addNew(slices.Clone(list), make(zero, false))
	case op == 3 && len(list) > 0:
		i := rng.IntN(len(list))
		list = slices.Delete(slices.Clone(list), i, i+1)
	case op == 4:
		list = slices.Clone(list)
		rng.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	case op == 5 && len(list) > 1: // two swapped in the provider's array
		i, j := rng.IntN(len(list)), rng.IntN(len(list))
		list[i], list[j] = list[j], list[i]
	}
	return list
}

// TestSorterSortsEveryList fills every list of a snapshot with objects
// in reverse order: SortedCopy must sort each as Sort does, so a kind
// added to Sort but not to the Sorter fails here.
func TestSorterSortsEveryList(t *testing.T) {
	in := &Resources{}
	v := reflect.ValueOf(in).Elem()
	lists := 0
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() != reflect.Slice || f.Type().Elem().Kind() != reflect.Pointer {
			continue
		}
		if _, ok := reflect.New(f.Type().Elem().Elem()).Interface().(metav1.Object); !ok {
			continue
		}
		lists++
		for _, name := range []string{"c", "b", "a"} {
			o := reflect.New(f.Type().Elem().Elem())
			o.Interface().(metav1.Object).SetName(name)
			o.Interface().(metav1.Object).SetNamespace("ns")
			f.Set(reflect.Append(f, o))
		}
	}
	if lists < 20 {
		t.Fatalf("found only %d object lists in Resources", lists)
	}
	want := *in
	cp := reflect.ValueOf(&want).Elem()
	for i := range cp.NumField() { // Sort works in place: give it copies
		if f := cp.Field(i); f.Kind() == reflect.Slice && !f.IsNil() {
			c := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
			reflect.Copy(c, f)
			f.Set(c)
		}
	}
	want.Sort()
	var s Sorter
	for round := range 2 { // the second from the memo
		if got := s.SortedCopy(in); !reflect.DeepEqual(got, &want) {
			t.Fatalf("round %d: SortedCopy differs from Sort", round)
		}
	}
}
