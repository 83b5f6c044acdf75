package kube

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/gatewayapi"
)

const provisionObjects = `
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: edge, uid: web-uid}
spec:
  gatewayClassName: portico
  infrastructure: {labels: {team: web}, annotations: {cost-center: "42"}}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: https, port: 443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: a}]}}
  - {name: https-b, port: 443, protocol: HTTPS, hostname: b.example.com, tls: {certificateRefs: [{name: b}]}}
  - {name: mysql, port: 3306, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: attached, namespace: edge, uid: attached-uid, annotations: {portico.io/proxy-selector: istio=ingressgateway}}
spec:
  gatewayClassName: portico
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: edge, uid: foreign-uid}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
`

func provisionedObjects(t *testing.T, c client.Client, ns, name string) (*corev1.ServiceAccount, *appsv1.Deployment, *corev1.Service) {
	t.Helper()
	ctx := context.Background()
	key := types.NamespacedName{Namespace: ns, Name: name}
	sa, d, svc := &corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.Service{}
	for _, o := range []client.Object{sa, d, svc} {
		if err := c.Get(ctx, key, o); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil, nil
			}
			t.Fatal(err)
		}
	}
	return sa, d, svc
}

func servicePorts(svc *corev1.Service) string {
	var out []string
	for _, p := range svc.Spec.Ports {
		out = append(out, fmt.Sprintf("%s:%d/%s", p.Name, p.Port, p.Protocol))
	}
	return strings.Join(out, " ")
}

// Gateways of our classes without a proxy selector get a ServiceAccount,
// Deployment and Service, owned by the Gateway, with the Service's ports
// following the listeners; attached and foreign Gateways get nothing;
// objects are updated only when what was provisioned changes, never when
// they are not ours, and deleted when the Gateway goes.
func TestProvisioner(t *testing.T) {
	objs := gatewayAPIObjects(t, provisionObjects)
	// A Service of the name a Gateway would get, but not ours.
	squatter := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "squat-portico", Namespace: "edge"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 1}}}}
	objs = append(objs, squatter)
	p, c := fakeProvider(t, objs...)
	pr := NewProvisioner(p, logr.Discard(), "")
	ctx := context.Background()
	pr.Reconcile(ctx)

	sa, d, svc := provisionedObjects(t, c, "edge", "web-portico")
	if sa == nil {
		t.Fatal("nothing provisioned for edge/web")
	}
	for _, o := range []client.Object{sa, d, svc} {
		refs := o.GetOwnerReferences()
		if len(refs) != 1 || refs[0].Kind != "Gateway" || refs[0].APIVersion != "gateway.networking.k8s.io/v1" || refs[0].Name != "web" ||
			refs[0].UID != "web-uid" || !ptr.Deref(refs[0].Controller, false) {
			t.Errorf("%T owner references %+v", o, refs)
		}
		if l := o.GetLabels(); l[LabelGatewayName] != "web" || l[LabelManagedBy] != ManagedByValue || l["team"] != "web" || o.GetAnnotations()["cost-center"] != "42" {
			t.Errorf("%T labels %v annotations %v", o, l, o.GetAnnotations())
		}
	}
	if got := servicePorts(svc); got != "status-port:15021/TCP http-80:80/TCP https-443:443/TCP tcp-3306:3306/TCP" {
		t.Errorf("Service ports %s", got)
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || !maps.Equal(svc.Spec.Selector, map[string]string{LabelGatewayName: "web", gatewayapi.GatewayNamespaceLabel: "edge"}) {
		t.Errorf("Service type %s selector %v", svc.Spec.Type, svc.Spec.Selector)
	}
	pod := d.Spec.Template
	if pod.Labels[LabelGatewayName] != "web" || pod.Labels["team"] != "web" || pod.Annotations["cost-center"] != "42" ||
		d.Spec.Selector.MatchLabels[LabelGatewayName] != "web" || pod.Spec.ServiceAccountName != "web-portico" {
		t.Errorf("pod template %+v", pod.ObjectMeta)
	}
	c0 := pod.Spec.Containers[0]
	if !slices.Contains(c0.Args, "--labels=gateway.networking.k8s.io/gateway-name=web,portico.io/gateway-namespace=edge") {
		t.Errorf("the proxy's labels must be its selector: %v", c0.Args)
	}
	role, binding := &rbacv1.Role{}, &rbacv1.RoleBinding{}
	for _, o := range []client.Object{role, binding} {
		if err := c.Get(ctx, types.NamespacedName{Namespace: "edge", Name: "web-portico"}, o); err != nil {
			t.Fatalf("%T: %v", o, err)
		}
		if refs := o.GetOwnerReferences(); len(refs) != 1 || refs[0].UID != "web-uid" {
			t.Errorf("%T owner references %+v", o, refs)
		}
	}
	if len(role.Rules) != 1 || fmt.Sprint(role.Rules[0].Resources, role.Rules[0].Verbs) != "[secrets] [get watch list]" ||
		binding.RoleRef.Name != "web-portico" || len(binding.Subjects) != 1 || binding.Subjects[0].Name != "web-portico" || binding.Subjects[0].Namespace != "edge" {
		t.Errorf("the proxy's service account may not read its namespace's Secrets (no private keys over xDS): %+v %+v", role.Rules, binding)
	}
	for _, other := range []string{"attached-portico", "foreign-portico"} {
		if sa, _, _ := provisionedObjects(t, c, "edge", other); sa != nil {
			t.Errorf("%s provisioned", other)
		}
	}

	// The same Gateways again: nothing is written.
	rv := svc.ResourceVersion
	pr.Reconcile(ctx)
	if _, _, svc2 := provisionedObjects(t, c, "edge", "web-portico"); svc2.ResourceVersion != rv {
		t.Error("an unchanged Service was updated")
	}

	// Listeners change and the Service type is overridden: the Service
	// follows, keeping the node port the API server gave 80.
	svc.Spec.Ports[1].NodePort = 30080
	svc.Spec.ClusterIP = "10.0.0.10"
	if err := c.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	gw := apiObject(t, c, "Gateway", "edge", "web")
	gw.SetAnnotations(map[string]string{AnnotationServiceType: "NodePort"})
	listeners := gw.Object["spec"].(map[string]any)["listeners"].([]any)
	gw.Object["spec"].(map[string]any)["listeners"] = append(listeners[:3], map[string]any{"name": "alt", "port": int64(8080), "protocol": "HTTP"})
	if err := c.Update(ctx, gw); err != nil {
		t.Fatal(err)
	}
	pr.Reconcile(ctx)
	_, d, svc = provisionedObjects(t, c, "edge", "web-portico")
	if got := servicePorts(svc); got != "status-port:15021/TCP http-80:80/TCP https-443:443/TCP http-8080:8080/TCP" ||
		svc.Spec.Type != corev1.ServiceTypeNodePort || svc.Spec.Ports[1].NodePort != 30080 || svc.Spec.ClusterIP != "10.0.0.10" {
		t.Errorf("after the listener change: %s, type %s, node port %d, cluster IP %s", got, svc.Spec.Type, svc.Spec.Ports[1].NodePort, svc.Spec.ClusterIP)
	}
	var containerPorts []int32
	for _, cp := range d.Spec.Template.Spec.Containers[0].Ports {
		containerPorts = append(containerPorts, cp.ContainerPort)
	}
	if fmt.Sprint(containerPorts) != "[80 443 8080 15021]" {
		t.Errorf("container ports %v", containerPorts)
	}

	// A Gateway whose objects' names are taken by someone else's: left alone.
	squat := gatewayAPIObjects(t, "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: squat, namespace: edge, uid: squat-uid}\nspec:\n  gatewayClassName: portico\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n")[0]
	if err := c.Create(ctx, squat); err != nil {
		t.Fatal(err)
	}
	pr.Reconcile(ctx)
	got := &corev1.Service{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: "edge", Name: "squat-portico"}, got); err != nil || servicePorts(got) != ":1/" {
		t.Errorf("someone else's Service was changed: %v %s", err, servicePorts(got))
	}

	// The Gateway goes: so do its objects (the other Gateway's stay).
	if err := c.Delete(ctx, gw); err != nil {
		t.Fatal(err)
	}
	pr.Reconcile(ctx)
	for _, o := range []client.Object{&corev1.ServiceAccount{}, &appsv1.Deployment{}, &corev1.Service{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}} {
		if err := c.Get(ctx, types.NamespacedName{Namespace: "edge", Name: "web-portico"}, o); !apierrors.IsNotFound(err) {
			t.Errorf("%T of the deleted Gateway: %v", o, err)
		}
	}
	// The remaining Gateway's own objects stay.
	if err := c.Get(ctx, types.NamespacedName{Namespace: "edge", Name: "squat-portico"}, &appsv1.Deployment{}); err != nil {
		t.Errorf("the remaining Gateway's Deployment: %v", err)
	}
	if err := c.Get(ctx, types.NamespacedName{Namespace: "edge", Name: "squat-portico"}, &corev1.Service{}); err != nil {
		t.Errorf("someone else's Service was deleted: %v", err)
	}
}

// The provisioned proxy runs as config/deploy's ingress gateway does:
// same image, command, flags (but its own labels and cluster name),
// probe, resources and security settings, and the xDS credentials.
func TestProvisionedProxyMatchesTheManifest(t *testing.T) {
	want := testenv.ManifestContainer(t, "../../../config/deploy/ingressgateway/deployment.yaml", "istio-ingressgateway", "istio-proxy")
	gw := gatewayAPIObjects(t, provisionObjects)[2]
	p, c := fakeProvider(t, gatewayAPIObjects(t, provisionObjects)[0], gw)
	NewProvisioner(p, logr.Discard(), "").Reconcile(context.Background())
	_, d, _ := provisionedObjects(t, c, "edge", "web-portico")
	if d == nil {
		t.Fatal("not provisioned")
	}
	got := d.Spec.Template.Spec.Containers[0]
	strip := func(args []string) []string {
		return slices.DeleteFunc(slices.Clone(args), func(a string) bool {
			return strings.HasPrefix(a, "--labels=") || strings.HasPrefix(a, "--service-cluster=")
		})
	}
	if got.Image != want.Image || fmt.Sprint(got.Command) != fmt.Sprint(want.Command) || fmt.Sprint(strip(got.Args)) != fmt.Sprint(strip(want.Args)) {
		t.Errorf("image/command/args\n got %s %v %v\nwant %s %v %v", got.Image, got.Command, strip(got.Args), want.Image, want.Command, strip(want.Args))
	}
	if fmt.Sprint(got.ReadinessProbe) != fmt.Sprint(want.ReadinessProbe) || fmt.Sprint(got.SecurityContext) != fmt.Sprint(want.SecurityContext) ||
		fmt.Sprint(got.Resources) != fmt.Sprint(want.Resources) || fmt.Sprint(got.Env) != fmt.Sprint(want.Env) {
		t.Errorf("probe/security/resources/env differ from the manifest's")
	}
	for _, m := range got.VolumeMounts {
		if !slices.ContainsFunc(want.VolumeMounts, func(w corev1.VolumeMount) bool { return fmt.Sprint(w) == fmt.Sprint(m) }) {
			t.Errorf("mount %+v is not the manifest's", m)
		}
	}
	for _, need := range []string{"/var/run/secrets/tokens", "/var/run/secrets/portico"} {
		if !slices.ContainsFunc(got.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == need }) {
			t.Errorf("no mount at %s (xDS credentials)", need)
		}
	}
}
