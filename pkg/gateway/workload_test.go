package gateway

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWorkloadName(t *testing.T) {
	yes := true
	owner := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &yes}}
	}
	tests := []struct {
		name   string
		pod    metav1.ObjectMeta
		want   string
		shared bool // the pod's own map is returned
	}{
		{"deployment", metav1.ObjectMeta{Name: "reviews-v1-7d9f8-x2x", Labels: map[string]string{"pod-template-hash": "7d9f8"}, OwnerReferences: owner("ReplicaSet", "reviews-v1-7d9f8")}, "reviews-v1", false},
		{"replicaset without the hash label", metav1.ObjectMeta{Name: "p", OwnerReferences: owner("ReplicaSet", "rs-abc")}, "rs-abc", false},
		{"statefulset", metav1.ObjectMeta{Name: "db-0", OwnerReferences: owner("StatefulSet", "db")}, "db", false},
		{"non-controller owner ignored", metav1.ObjectMeta{Name: "solo", OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "x"}}}, "solo", false},
		{"bare pod", metav1.ObjectMeta{Name: "solo"}, "solo", false},
		{"label wins", metav1.ObjectMeta{Name: "p", Labels: map[string]string{WorkloadNameLabel: "given"}, OwnerReferences: owner("StatefulSet", "db")}, "given", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &metav1.PartialObjectMetadata{ObjectMeta: tc.pod}
			before := len(p.Labels)
			got := withWorkloadName(p)
			if got[WorkloadNameLabel] != tc.want {
				t.Errorf("workload %q, want %q", got[WorkloadNameLabel], tc.want)
			}
			if len(p.Labels) != before {
				t.Error("the pod's labels were modified")
			}
			for k, v := range p.Labels {
				if got[k] != v {
					t.Errorf("label %s lost", k)
				}
			}
		})
	}
}
