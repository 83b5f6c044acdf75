package resource

import (
	"strings"
	"testing"
	"time"

	networking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestFromObjects(t *testing.T) {
	meta := func(ns, name string, age int) metav1.ObjectMeta {
		return metav1.ObjectMeta{Namespace: ns, Name: name,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(age) * time.Hour))}
	}
	cases := []struct {
		name string
		objs []Object
		want []string // keys in All's order, when no error
		err  string   // substring of the error
	}{
		{"nothing", nil, nil, ""},
		{"each kind to its list, sorted",
			[]Object{
				&corev1.Service{ObjectMeta: meta("b", "a", 0)},
				&gwv1.Gateway{ObjectMeta: meta("default", "kube", 0)},
				// Istio's kinds tie-break by name before namespace,
				// the others by namespace before name.
				&networking.VirtualService{ObjectMeta: meta("a", "z", 0)},
				&corev1.Service{ObjectMeta: meta("a", "b", 0)},
				&networking.VirtualService{ObjectMeta: meta("b", "y", 0)},
				&networking.Gateway{ObjectMeta: meta("istio-system", "new", 1)},
				&networking.Gateway{ObjectMeta: meta("istio-system", "old", 0)},
				&corev1.Service{ObjectMeta: meta("a", "a", 1)},
			},
			[]string{
				"Gateway istio-system/old", "Gateway istio-system/new",
				"VirtualService b/y", "VirtualService a/z",
				"Service a/b", "Service b/a", "Service a/a",
				"Gateway.gateway.networking.k8s.io default/kube",
			}, ""},
		{"duplicates are kept",
			[]Object{&corev1.Secret{ObjectMeta: meta("ns", "s", 0)}, &corev1.Secret{ObjectMeta: meta("ns", "s", 0)}},
			[]string{"Secret ns/s", "Secret ns/s"}, ""},
		{"a full Pod is not stored (only its metadata is)",
			[]Object{&corev1.Service{ObjectMeta: meta("ns", "web", 0)}, &corev1.Pod{ObjectMeta: meta("ns", "web-0", 0)}},
			nil, "Pod ns/web-0: unsupported object type *v1.Pod"},
		{"a kind Portico does not read",
			[]Object{&corev1.ServiceAccount{ObjectMeta: meta("ns", "web", 0)}},
			nil, "*v1.ServiceAccount ns/web: unsupported object type *v1.ServiceAccount"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := FromObjects(tc.objs)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				if res != nil {
					t.Errorf("partial snapshot %+v returned with the error", res)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range res.All() {
				got = append(got, KeyOf(o).String())
			}
			if strings.Join(got, ", ") != strings.Join(tc.want, ", ") {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, ", "), strings.Join(tc.want, ", "))
			}
		})
	}
}
