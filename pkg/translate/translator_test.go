package translate_test

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/portico-gateway/portico/internal/scale"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/translate"
)

// TestTranslatorReusesOnlyWhatDidNotChange: after one VirtualService
// changes, a Translator's output equals a fresh translation, the changed
// virtual host is new, and every other virtual host and cluster is the
// very message of the previous build.
func TestTranslatorReusesOnlyWhatDidNotChange(t *testing.T) {
	ingress := map[string]string{"istio": "ingressgateway"}
	o := scale.Options{VirtualServices: 30}
	bind := func(rev int) *ir.Proxy {
		docs := o.Shared()
		for i := 0; i < o.VirtualServices; i++ {
			r := 0
			if i == 7 {
				r = rev
			}
			docs = append(docs, o.Service(i, r)...)
		}
		res, err := scale.Decode(docs)
		if err != nil {
			t.Fatal(err)
		}
		return gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}}).Proxy(ingress)
	}
	tr := translate.NewTranslator(translate.Options{})
	first, err := tr.Translate(bind(0))
	if err != nil {
		t.Fatal(err)
	}
	p := bind(1)
	second, err := tr.Translate(p)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := translate.Translate(p, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Routes) != len(fresh.Routes) || len(second.Clusters) != len(fresh.Clusters) {
		t.Fatalf("counts differ from a fresh translation")
	}
	for i := range fresh.Routes {
		if !proto.Equal(second.Routes[i], fresh.Routes[i]) {
			t.Errorf("route configuration %s differs from a fresh translation", fresh.Routes[i].Name)
		}
	}
	for i := range fresh.Clusters {
		if !proto.Equal(second.Clusters[i], fresh.Clusters[i]) {
			t.Errorf("cluster %s differs from a fresh translation", fresh.Clusters[i].Name)
		}
		if second.Clusters[i] != first.Clusters[i] {
			t.Errorf("unchanged cluster %s was translated again", fresh.Clusters[i].Name)
		}
	}
	previous := map[string]*routev3.VirtualHost{}
	for _, rc := range first.Routes {
		for _, vh := range rc.VirtualHosts {
			previous[rc.Name+"/"+vh.Name] = vh
		}
	}
	changed := o.Host(7) + ":"
	for _, rc := range second.Routes {
		for _, vh := range rc.VirtualHosts {
			same := previous[rc.Name+"/"+vh.Name] == vh
			isChanged := len(vh.Name) > len(changed) && vh.Name[:len(changed)] == changed
			if isChanged && same {
				t.Errorf("%s changed but its old virtual host was reused", vh.Name)
			}
			if !isChanged && !same {
				t.Errorf("%s did not change but was translated again", vh.Name)
			}
		}
	}
}
