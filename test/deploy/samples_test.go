package deploy

import (
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// TestKubernetesSamples: each sample in config/samples/kubernetes, as
// kustomize renders it, binds cleanly for the ingress gateway — every
// Istio resource Accepted with all references resolved — once its
// Deployments' pods are running (simulated here: a Pod and an endpoint
// per Deployment, as the endpoints controller would write them).
func TestKubernetesSamples(t *testing.T) {
	for _, sample := range []string{"seed001", "seed002", "seed004"} {
		t.Run(sample, func(t *testing.T) {
			r := build(t, "../../config/samples/kubernetes/"+sample)
			res := &resource.Resources{}
			var deployments []*appsv1.Deployment
			for key, o := range r {
				if o.GetKind() == "Deployment" {
					d := &appsv1.Deployment{}
					if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, d); err != nil {
						t.Fatal(err)
					}
					deployments = append(deployments, d)
					continue
				}
				js, err := json.Marshal(o.Object)
				if err != nil {
					t.Fatal(err)
				}
				objs, err := resource.DecodeJSON(js)
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				for _, obj := range objs {
					res.Add(obj)
				}
			}
			addPods(t, res, deployments)
			res.Sort()
			ingress := map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}
			result := gateway.Build(res, gateway.Options{Classes: []map[string]string{ingress}})
			if len(result.Statuses) == 0 {
				t.Fatal("no Istio resources")
			}
			for _, st := range result.Statuses {
				for _, c := range st.Conditions {
					if c.Status != "True" {
						t.Errorf("%s: %s %s: %s", st.Key, c.Type, c.Reason, c.Message)
					}
				}
				for _, m := range st.Messages {
					if m.Level == status.Error {
						t.Errorf("%s: %s", st.Key, m.Message)
					}
				}
			}
			p := result.Proxy(ingress)
			if p == nil || len(p.Listeners) == 0 {
				t.Fatal("nothing bound to the ingress gateway")
			}
			for _, c := range p.Clusters {
				if len(c.Endpoints) == 0 && c.Discovery == "EDS" {
					t.Errorf("cluster %s has no endpoints", c.Name)
				}
			}
		})
	}
}

// addPods adds a Pod per Deployment and, for every Service, the
// EndpointSlice the endpoints controller would write.
func addPods(t *testing.T, res *resource.Resources, deployments []*appsv1.Deployment) {
	t.Helper()
	type pod struct {
		meta *metav1.PartialObjectMetadata
		ip   string
	}
	var pods []pod
	for i, d := range deployments {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-0", Namespace: d.Namespace, Labels: d.Spec.Template.Labels}}
		pods = append(pods, pod{resource.PodMetadata(p), fmt.Sprintf("10.244.0.%d", i+10)})
		res.Add(pods[len(pods)-1].meta)
	}
	for _, svc := range res.Services {
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-x", Namespace: svc.Namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}}, AddressType: discoveryv1.AddressTypeIPv4}
		for _, sp := range svc.Spec.Ports {
			es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To(sp.Name), Port: ptr.To(sp.TargetPort.IntVal)})
		}
		for _, p := range pods {
			if p.meta.Namespace == svc.Namespace && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.meta.Labels)) {
				es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.ip},
					TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.meta.Namespace, Name: p.meta.Name}})
			}
		}
		if len(es.Endpoints) == 0 {
			t.Errorf("Service %s/%s selects no Deployment's pods", svc.Namespace, svc.Name)
		}
		res.Add(es)
	}
}
