package translate

import (
	"reflect"
	"slices"
	"testing"

	"github.com/portico-gateway/portico/pkg/ir"
)

// sameVirtualHost must see a change to any field of ir.VirtualHost: each
// field in turn is changed on a copy and must make the two differ, so a
// field added later without being compared fails here.
func TestSameVirtualHostCoversEveryField(t *testing.T) {
	base := &ir.VirtualHost{Name: "a:80", Domains: []string{"a"}, Routes: []*ir.Route{{Name: "r"}},
		Sources: []ir.Ref{{Kind: "VirtualService", Namespace: "ns", Name: "a"}}}
	same := *base
	same.Domains = slices.Clone(base.Domains)
	same.Routes = slices.Clone(base.Routes)
	if !sameVirtualHost(base, &same) {
		t.Fatal("equal virtual hosts (copied slices) compare different")
	}
	typ := reflect.TypeOf(ir.VirtualHost{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		changed := *base
		v := reflect.ValueOf(&changed).Elem().Field(i)
		switch f.Type.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Pointer:
			v.Set(reflect.New(f.Type.Elem()))
		case reflect.Slice:
			v.Set(reflect.Append(reflect.MakeSlice(f.Type, 0, v.Len()+1), reflect.New(f.Type.Elem()).Elem()))
			if f.Type.Elem().Kind() == reflect.Pointer {
				v.Index(0).Set(reflect.New(f.Type.Elem().Elem()))
			}
		default:
			t.Fatalf("field %s of kind %s: teach this test how to change it", f.Name, f.Type.Kind())
		}
		if sameVirtualHost(base, &changed) {
			t.Errorf("a change to field %s is not seen", f.Name)
		}
	}
}
