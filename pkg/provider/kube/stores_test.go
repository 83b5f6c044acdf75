package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portico-gateway/portico/pkg/resource"
)

// A snapshot read from the informers' stores (each kind's part reused
// until an event on that kind) equals one listed through the cache, after
// every step of random creates, edits and deletes (some of them invalid),
// and an object no step touched keeps its identity from one snapshot to
// the next. The stores are kept the way informers keep
// theirs: each write's stored result put in, each delete taken out.
func TestSnapshotFromStoresEqualsListed(t *testing.T) {
	ctx := context.Background()
	p, c := fakeProvider(t, istioObject(t, gatewayYAML))
	vsGVK, gwGVK := istioGVK(resource.KindVirtualService), istioGVK(resource.KindGateway)
	stores := map[string]toolscache.Store{}
	for _, k := range []string{"vs", "gw", "svc", "slice", "pod"} {
		stores[k] = toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	}
	gw := &unstructured.Unstructured{}
	gw.SetGroupVersionKind(gwGVK)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "istio-system", Name: "gw"}, gw); err != nil {
		t.Fatal(err)
	}
	stores["gw"].Add(gw)
	gvkOf := map[string]schema.GroupVersionKind{"vs": vsGVK, "gw": gwGVK, "svc": serviceGVK, "slice": endpointSliceGVK, "pod": podGVK}
	p.stores = map[schema.GroupVersionKind]toolscache.Store{}
	for name, gvk := range gvkOf {
		p.stores[gvk] = stores[name]
	}
	// Istio kinds without a store (security kinds) are listed on both
	// sides: the mixed case a later-found Gateway API kind is in.

	rng := rand.New(rand.NewPCG(19, 3))
	const n = 6
	exists := map[string]bool{}
	// put writes obj (create or update) and puts the stored version into
	// store, as the informer would.
	put := func(store string, obj client.Object, fresh client.Object) {
		t.Helper()
		key := store + "/" + obj.GetName()
		if exists[key] {
			cur := fresh
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
				t.Fatal(err)
			}
			obj.SetResourceVersion(cur.GetResourceVersion())
			obj.SetUID(cur.GetUID())
			if err := c.Update(ctx, obj); err != nil {
				t.Fatal(err)
			}
		} else if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		exists[key] = true
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), fresh); err != nil {
			t.Fatal(err)
		}
		if err := stores[store].Update(fresh); err != nil {
			t.Fatal(err)
		}
		p.markDirty(gvkOf[store]) // what the informer's handler does, after its store
	}
	del := func(store string, obj client.Object) {
		t.Helper()
		key := store + "/" + obj.GetName()
		if !exists[key] {
			return
		}
		if err := c.Delete(ctx, obj); err != nil {
			t.Fatal(err)
		}
		delete(exists, key)
		if err := stores[store].Delete(obj); err != nil {
			t.Fatal(err)
		}
		p.markDirty(gvkOf[store])
	}
	var prev *resource.Resources
	for step := range 150 {
		i := rng.IntN(n)
		name := fmt.Sprintf("s%d", i)
		touched := ""
		switch kind := rng.IntN(4); {
		case rng.IntN(4) == 0:
			// A delete of any kind.
			touched = name
			switch kind {
			case 0:
				u := &unstructured.Unstructured{}
				u.SetGroupVersionKind(vsGVK)
				u.SetNamespace("default")
				u.SetName(name)
				del("vs", u)
			case 1:
				del("svc", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}})
			case 2:
				del("slice", &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}})
			case 3:
				del("pod", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}})
			}
		case kind == 0:
			touched = name
			attempts := "2"
			if rng.IntN(5) == 0 {
				attempts = "two" // invalid for Portico, taken by the API server
			}
			u := istioObject(t, fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s, namespace: default}
spec:
  hosts: [h%d-%d.example.com]
  gateways: [istio-system/gw]
  http: [{retries: {attempts: %s}, route: [{destination: {host: %s}}]}]
`, name, i, step, attempts, name))
			u.SetUID(types.UID("vs-" + name))
			fresh := &unstructured.Unstructured{}
			fresh.SetGroupVersionKind(vsGVK)
			put("vs", u, fresh)
		case kind == 1:
			touched = name
			put("svc", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("svc-" + name)},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: int32(80 + step)}}}}, &corev1.Service{})
		case kind == 2:
			touched = name
			put("slice", &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("slice-" + name),
				Labels: map[string]string{discoveryv1.LabelServiceName: name}}, AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.0.%d.%d", i, step%250)}}}}, &discoveryv1.EndpointSlice{})
		case kind == 3:
			touched = name
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("pod-" + name),
				Labels: map[string]string{"app": name, "step": fmt.Sprint(step)}}}
			fresh := &metav1.PartialObjectMetadata{}
			fresh.SetGroupVersionKind(podGVK)
			put("pod", pod, fresh)
		}

		got, err := p.snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		saved := p.stores
		p.stores = nil
		want, err := p.snapshot(ctx)
		p.stores = saved
		if err != nil {
			t.Fatal(err)
		}
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		if string(gj) != string(wj) {
			t.Fatalf("step %d: the snapshot from the stores differs from a listed one:\n%s\n%s", step, gj, wj)
		}
		if prev != nil {
			for _, s := range got.Services {
				if s.Name == touched {
					continue
				}
				for _, ps := range prev.Services {
					if ps.Name == s.Name && ps != s {
						t.Fatalf("step %d: untouched Service %s got a new identity", step, s.Name)
					}
				}
			}
		}
		prev = got
	}
}
