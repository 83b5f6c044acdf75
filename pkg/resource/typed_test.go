package resource

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/randfill"
)

// treeOf parses JSON text into the tree setTyped reads (jsonable's form).
func treeOf(t *testing.T, js []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("re-reading %s: %v", js, err)
	}
	return v
}

// oddLeaves are values of every JSON type, put where another belongs.
var oddLeaves = []string{`null`, `""`, `"x"`, `"80"`, `"1.5Gi"`, `0`, `-1`, `1.5`, `1e3`, `99999999999999999999`, `4294967296`, `2147483648`, `-2147483649`, `1.0`,
	`true`, `false`, `[]`, `["a", 1]`, `{}`, `{"a": "b"}`, `"2026-11-29T05:00:00Z"`, `"not-a-time"`, `"aGVsbG8="`}

// oddLeaf is a fresh odd value (the tree is changed in place).
func oddLeaf(rng *rand.Rand) any {
	dec := json.NewDecoder(bytes.NewReader([]byte(oddLeaves[rng.IntN(len(oddLeaves))])))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		panic(err)
	}
	return v
}

// mutateTree makes one random change to a tree: a value replaced by one
// of another type, an unknown or re-cased key, a key removed.
func mutateTree(rng *rand.Rand, v any) any {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 || rng.IntN(8) == 0 {
			switch rng.IntN(3) {
			case 0:
				x["bogus"] = oddLeaf(rng)
			case 1:
				for k, item := range x {
					delete(x, k)
					x[string(bytes.ToUpper([]byte(k)))+"\xff"[:rng.IntN(2)]] = item // sometimes not UTF-8
					break
				}
			default:
				for k := range x {
					delete(x, k)
					break
				}
			}
			return x
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		k := keys[rng.IntN(len(keys))]
		x[k] = mutateTree(rng, x[k])
		return x
	case []any:
		if len(x) > 0 && rng.IntN(3) != 0 {
			i := rng.IntN(len(x))
			x[i] = mutateTree(rng, x[i])
			return x
		}
	}
	return oddLeaf(rng)
}

// TestSetTypedEqualsStrictJSON fills the Kubernetes kinds Portico reads
// with random values, prints them as JSON and checks that setTyped on
// the parsed tree gives exactly what sigs.k8s.io/json's strict decoding
// gives — on the tree as printed, and after random changes (values of
// the wrong type, unknown and re-cased keys): wherever setTyped answers,
// the JSON way must succeed with a deeply equal object. It must answer
// on most unchanged trees, or the fast way would be dead code.
func TestSetTypedEqualsStrictJSON(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	quantities := []string{"1", "100m", "1.5Gi", "2e3", "500Mi"}
	f := randfill.NewWithSeed(int64(seed)).NilChance(0.3).NumElements(0, 3).MaxDepth(12).Funcs(
		func(q *resource.Quantity, c randfill.Continue) {
			*q = resource.MustParse(quantities[c.Intn(len(quantities))])
		},
		func(v *intstr.IntOrString, c randfill.Continue) {
			if c.Bool() {
				*v = intstr.FromInt32(c.Int31())
			} else {
				*v = intstr.FromString(c.String(5))
			}
		},
		func(tm *metav1.Time, c randfill.Continue) {
			*tm = metav1.Unix(c.Int63n(1<<32), 0)
		},
		func(fv *metav1.FieldsV1, c randfill.Continue) {
			fv.SetRawBytes([]byte(`{"f:metadata":{}}`))
		},
		func(tm *metav1.MicroTime, c randfill.Continue) {
			*tm = metav1.NewMicroTime(time.Unix(c.Int63n(1<<32), 0))
		},
	)
	kinds := []func() any{
		func() any { return &corev1.Service{} },
		func() any { return &corev1.Pod{} },
		func() any { return &discoveryv1.EndpointSlice{} },
		func() any { return &corev1.ConfigMap{} },
		func() any { return &corev1.Namespace{} },
	}
	answered, clean, compared := 0, 0, 0
	for i := range 600 {
		newObj := kinds[i%len(kinds)]
		src := newObj()
		f.Fill(src)
		js, err := json.Marshal(src)
		if err != nil {
			t.Fatalf("printing a random %T: %v", src, err)
		}
		for m := range 6 {
			tree := treeOf(t, js)
			for range m {
				tree = mutateTree(rng, tree)
			}
			mjs, err := json.Marshal(tree)
			if err != nil {
				t.Fatal(err)
			}
			fast, plain := newObj(), newObj()
			ok := setTyped(tree, reflect.ValueOf(fast).Elem())
			perr := strictUnmarshal(mjs, plain)
			compared++
			if m == 0 {
				clean++
				if ok {
					answered++
				}
			}
			if !ok {
				continue
			}
			if perr != nil {
				t.Fatalf("%T, %d mutations: setTyped answered where the JSON way fails (%v):\n%s", fast, m, perr, mjs)
			}
			if path := firstDifference(reflect.ValueOf(fast), reflect.ValueOf(plain), ""); path != "" || !reflect.DeepEqual(fast, plain) {
				t.Fatalf("%T, %d mutations: setTyped differs from the JSON way at %s\nJSON: %s", fast, m, path, mjs)
			}
		}
	}
	if answered < clean*3/4 {
		t.Fatalf("setTyped answered on %d of %d unchanged trees: it steps aside too often", answered, clean)
	}
	t.Logf("%d trees compared; setTyped answered on %d of %d unchanged ones", compared, answered, clean)
}

// firstDifference is where a and b stop being deeply equal ("" if they
// are), with both values there.
func firstDifference(a, b reflect.Value, path string) string {
	if a.Kind() != b.Kind() || a.Type() != b.Type() {
		return fmt.Sprintf("%s: types %v, %v", path, a.Type(), b.Type())
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return fmt.Sprintf("%s: nil %v, %v", path, a.IsNil(), b.IsNil())
			}
			return ""
		}
		return firstDifference(a.Elem(), b.Elem(), path)
	case reflect.Struct:
		for i := range a.NumField() {
			if d := firstDifference(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); d != "" {
				return d
			}
		}
		return ""
	case reflect.Slice, reflect.Map:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return fmt.Sprintf("%s: nil %v, %v; length %d, %d", path, a.IsNil(), b.IsNil(), a.Len(), b.Len())
		}
		if a.Kind() == reflect.Map {
			for _, k := range a.MapKeys() {
				bv := b.MapIndex(k)
				if !bv.IsValid() {
					return fmt.Sprintf("%s: key %q only in the first", path, k)
				}
				if d := firstDifference(a.MapIndex(k), bv, fmt.Sprintf("%s[%q]", path, k)); d != "" {
					return d
				}
			}
			return ""
		}
		for i := range a.Len() {
			if d := firstDifference(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
		return ""
	}
	if a.CanInterface() && b.CanInterface() && !reflect.DeepEqual(a.Interface(), b.Interface()) {
		return fmt.Sprintf("%s: %#v, %#v", path, a.Interface(), b.Interface())
	}
	if !a.CanInterface() && !reflect.DeepEqual(fmt.Sprint(a), fmt.Sprint(b)) {
		return fmt.Sprintf("%s: %v, %v", path, a, b)
	}
	return ""
}
