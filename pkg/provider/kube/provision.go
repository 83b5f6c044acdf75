package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/gatewayapi"
	portico "github.com/portico-gateway/portico/pkg/resource"
)

const (
	// LabelManagedBy marks what the controller provisioned: it never
	// updates or deletes an object without it, and caches only those
	// Deployments and ServiceAccounts.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is its value.
	ManagedByValue = "portico-gateway-controller"
	// AnnotationServiceType on a Gateway sets the provisioned Service's
	// type (Istio's annotation): LoadBalancer (default), NodePort,
	// ClusterIP.
	AnnotationServiceType = "networking.istio.io/service-type"
	// annotationSpecHash records the hash of what was last provisioned:
	// the API server defaults many fields, so comparing specs would see
	// a difference every time.
	annotationSpecHash = "portico.io/provisioned-spec"
	// LabelGatewayClassName is set on provisioned objects too.
	LabelGatewayClassName = "gateway.networking.k8s.io/gateway-class-name"

	// DefaultProxyImage and DefaultXDSAddress are config/deploy's (the
	// ingress gateway's image and the controller Service).
	DefaultProxyImage = "ghcr.io/portico-gateway/portico:latest"
	DefaultXDSAddress = "portico-controller.portico-system.svc:15010"
)

// Provisioner gives every Gateway API Gateway of this controller's
// GatewayClasses that names no proxy selector (see proxySelector) its own
// edge proxy: a ServiceAccount, a Deployment run like config/deploy's
// ingress gateway and a Service whose ports follow the listeners, in the
// Gateway's namespace, owned by it, and deleted by the controller when
// the Gateway goes (the garbage collector may not run, and should not
// be needed). Run by the elected replica only.
type Provisioner struct {
	p              *Provider
	log            logr.Logger
	controllerName string
	// Image, XDSAddress: of the proxies (defaults DefaultProxyImage,
	// DefaultXDSAddress).
	Image      string
	XDSAddress string
}

// NewProvisioner returns a provisioner; controllerName "" is
// DefaultControllerName.
func NewProvisioner(p *Provider, log logr.Logger, controllerName string) *Provisioner {
	if controllerName == "" {
		controllerName = DefaultControllerName
	}
	return &Provisioner{p: p, log: log, controllerName: controllerName, Image: DefaultProxyImage, XDSAddress: DefaultXDSAddress}
}

// ProvisionedName is the name of a Gateway's provisioned objects:
// "<gateway>-portico", shortened with a hash to fit a Service name.
func ProvisionedName(gw metav1.Object) string {
	name := gw.GetName() + "-portico"
	if len(name) <= 63 {
		return name
	}
	sum := sha256.Sum256([]byte(gw.GetName()))
	return strings.TrimRight(gw.GetName()[:63-len("-portico")-9], "-.") + "-" + hex.EncodeToString(sum[:4]) + "-portico"
}

// provisioned is what one Gateway should have.
type provisioned struct {
	gw      *gwv1.Gateway
	sa      *corev1.ServiceAccount
	role    *rbacv1.Role
	binding *rbacv1.RoleBinding
	deploy  *appsv1.Deployment
	svc     *corev1.Service
}

// Reconcile creates, updates and deletes provisioned objects so they are
// exactly those the current Gateways need.
func (pr *Provisioner) Reconcile(ctx context.Context) {
	gvk, ok := pr.p.APIGVK(portico.KindGateway)
	if !ok {
		return
	}
	classes := map[string]*gwv1.GatewayClass{}
	if cgvk, ok := pr.p.APIGVK(portico.KindGatewayClass); ok {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(cgvk.GroupVersion().WithKind("GatewayClassList"))
		if err := pr.p.cached.List(ctx, list); err != nil {
			pr.log.Error(err, "listing GatewayClasses")
			return
		}
		for i := range list.Items {
			c := &gwv1.GatewayClass{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, c); err == nil {
				classes[c.Name] = c
			}
		}
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind("GatewayList"))
	if err := pr.p.cached.List(ctx, list); err != nil {
		pr.log.Error(err, "listing Gateways")
		return
	}
	want := map[types.UID]bool{}
	for i := range list.Items {
		gw := &gwv1.Gateway{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, gw); err != nil {
			continue // reported by the binder
		}
		class := classes[string(gw.Spec.GatewayClassName)]
		if class == nil || string(class.Spec.ControllerName) != pr.controllerName || gw.DeletionTimestamp != nil {
			continue
		}
		selector, prov := gatewayapi.ProxySelector(gw, class, nil) // Kubernetes mode: no default proxies
		if !prov {
			continue
		}
		want[gw.UID] = true
		d := pr.desired(gw, class, selector)
		for _, obj := range []client.Object{d.sa, d.role, d.binding, d.deploy, d.svc} {
			if err := pr.apply(ctx, gw, obj); err != nil {
				if ctx.Err() != nil {
					return
				}
				pr.log.Error(err, "provisioning the proxy of a Gateway", "gateway", gw.Namespace+"/"+gw.Name,
					"kind", fmt.Sprintf("%T", obj), "name", obj.GetName())
			}
		}
	}
	pr.cleanup(ctx, want)
}

// ownerUID is the UID of the Gateway controlling obj, if any.
func ownerUID(obj metav1.Object) types.UID {
	for _, ref := range obj.GetOwnerReferences() {
		if ref.Kind == "Gateway" && strings.HasPrefix(ref.APIVersion, gwv1.GroupName+"/") && ptr.Deref(ref.Controller, false) {
			return ref.UID
		}
	}
	return ""
}

// cleanup deletes provisioned objects whose Gateway is gone (or no
// longer wants them: it gained a proxy selector, changed class).
func (pr *Provisioner) cleanup(ctx context.Context, want map[types.UID]bool) {
	managed := client.MatchingLabels{LabelManagedBy: ManagedByValue}
	var objs []client.Object
	var deps appsv1.DeploymentList
	if err := pr.p.cached.List(ctx, &deps, managed); err == nil {
		for i := range deps.Items {
			objs = append(objs, &deps.Items[i])
		}
	}
	var svcs corev1.ServiceList
	if err := pr.p.cached.List(ctx, &svcs, managed); err == nil {
		for i := range svcs.Items {
			objs = append(objs, &svcs.Items[i])
		}
	}
	var sas corev1.ServiceAccountList
	if err := pr.p.cached.List(ctx, &sas, managed); err == nil {
		for i := range sas.Items {
			objs = append(objs, &sas.Items[i])
		}
	}
	var roles rbacv1.RoleList
	if err := pr.p.cached.List(ctx, &roles, managed); err == nil {
		for i := range roles.Items {
			objs = append(objs, &roles.Items[i])
		}
	}
	var bindings rbacv1.RoleBindingList
	if err := pr.p.cached.List(ctx, &bindings, managed); err == nil {
		for i := range bindings.Items {
			objs = append(objs, &bindings.Items[i])
		}
	}
	for _, obj := range objs {
		uid := ownerUID(obj)
		if uid == "" || want[uid] {
			continue
		}
		err := pr.p.api.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			pr.log.Error(err, "deleting the provisioned proxy of a deleted Gateway", "kind", fmt.Sprintf("%T", obj), "object", obj.GetNamespace()+"/"+obj.GetName())
			continue
		}
		pr.log.Info("deleted the provisioned proxy object of a Gateway that is gone", "kind", fmt.Sprintf("%T", obj), "object", obj.GetNamespace()+"/"+obj.GetName())
	}
}

// apply creates obj, or updates the existing one when what was
// provisioned changed. An object of that name the controller did not
// create is left alone, with an error.
func (pr *Provisioner) apply(ctx context.Context, gw *gwv1.Gateway, obj client.Object) error {
	existing := obj.DeepCopyObject().(client.Object)
	err := pr.p.cached.Get(ctx, client.ObjectKeyFromObject(obj), existing)
	if apierrors.IsNotFound(err) {
		if err := pr.p.api.Create(ctx, obj, client.FieldOwner("portico")); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		pr.log.Info("provisioned", "gateway", gw.Namespace+"/"+gw.Name, "kind", fmt.Sprintf("%T", obj), "name", obj.GetName())
		return nil
	}
	if err != nil {
		return err
	}
	if existing.GetLabels()[LabelManagedBy] != ManagedByValue || ownerUID(existing) != gw.UID {
		return fmt.Errorf("%s/%s exists and is not this Gateway's provisioned object; not touching it", obj.GetNamespace(), obj.GetName())
	}
	if existing.GetAnnotations()[annotationSpecHash] == obj.GetAnnotations()[annotationSpecHash] {
		return nil
	}
	// Keep what the API server allocated for a Service.
	if svc, ok := obj.(*corev1.Service); ok {
		old := existing.(*corev1.Service)
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = old.Spec.ClusterIP, old.Spec.ClusterIPs
		for i := range svc.Spec.Ports {
			for _, op := range old.Spec.Ports {
				if op.Port == svc.Spec.Ports[i].Port && op.Protocol == svc.Spec.Ports[i].Protocol && svc.Spec.Type != corev1.ServiceTypeClusterIP {
					svc.Spec.Ports[i].NodePort = op.NodePort
				}
			}
		}
	}
	obj.SetResourceVersion(existing.GetResourceVersion())
	if err := pr.p.api.Update(ctx, obj, client.FieldOwner("portico")); err != nil {
		if apierrors.IsConflict(err) {
			return nil // the next build tries again
		}
		return err
	}
	pr.log.Info("updated a provisioned proxy object", "gateway", gw.Namespace+"/"+gw.Name, "kind", fmt.Sprintf("%T", obj), "name", obj.GetName())
	return nil
}

// desired builds a Gateway's objects.
func (pr *Provisioner) desired(gw *gwv1.Gateway, class *gwv1.GatewayClass, selector map[string]string) provisioned {
	name := ProvisionedName(gw)
	labels := map[string]string{}
	annotations := map[string]string{}
	if inf := gw.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Labels {
			labels[string(k)] = string(v)
		}
		for k, v := range inf.Annotations {
			annotations[string(k)] = string(v)
		}
	}
	maps.Copy(labels, selector)
	labels[LabelManagedBy] = ManagedByValue
	labels[LabelGatewayClassName] = class.Name
	owner := metav1.OwnerReference{APIVersion: gwv1.GroupVersion.String(), Kind: "Gateway", Name: gw.Name, UID: gw.UID, Controller: ptr.To(true)}
	meta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: gw.Namespace, Labels: maps.Clone(labels), Annotations: maps.Clone(annotations),
			OwnerReferences: []metav1.OwnerReference{owner}}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: meta(), AutomountServiceAccountToken: ptr.To(false)}
	// The xDS server gives a proxy the private keys of its listeners
	// only if its service account may read Secrets in its namespace
	// (Istio's rule; see config/deploy's istio-ingressgateway-sds).
	role := &rbacv1.Role{ObjectMeta: meta(), Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "watch", "list"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: meta(), RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: gw.Namespace}}}

	ports := gatewayListenerPorts(gw)
	var selectorArg []string
	for _, k := range slices.Sorted(maps.Keys(selector)) {
		selectorArg = append(selectorArg, k+"="+selector[k])
	}
	container := corev1.Container{
		Name:    "istio-proxy",
		Image:   pr.Image,
		Command: []string{"/usr/local/bin/edge-proxy"},
		Args: []string{
			"--xds-address=" + pr.XDSAddress,
			"--xds-ca-file=/var/run/secrets/portico/root-cert.pem",
			"--xds-token-file=/var/run/secrets/tokens/portico-token",
			"--labels=" + strings.Join(selectorArg, ","),
			"--service-cluster=" + name,
			"--admin-address=127.0.0.1:15000",
			"--status-address=:15021",
			"--termination-drain-duration=5s",
			"--drain-time=45s",
			"--log-json",
		},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(15021)}},
			PeriodSeconds: 2, FailureThreshold: 2},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
		},
		SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "portico-token", MountPath: "/var/run/secrets/tokens", ReadOnly: true},
			{Name: "portico-ca-root-cert", MountPath: "/var/run/secrets/portico", ReadOnly: true},
		},
	}
	for _, p := range ports {
		container.Ports = append(container.Ports, corev1.ContainerPort{Name: p.Name, ContainerPort: p.Port, Protocol: p.Protocol})
	}
	container.Ports = append(container.Ports, corev1.ContainerPort{Name: "status-port", ContainerPort: 15021, Protocol: corev1.ProtocolTCP})
	podAnnotations := maps.Clone(annotations)
	podAnnotations["prometheus.io/scrape"] = "true"
	podAnnotations["prometheus.io/port"] = "15021"
	podAnnotations["prometheus.io/path"] = "/stats/prometheus"
	deploy := &appsv1.Deployment{
		ObjectMeta: meta(),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: maps.Clone(selector)},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxSurge: ptr.To(intstr.FromInt32(1)), MaxUnavailable: ptr.To(intstr.FromInt32(0))}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: maps.Clone(labels), Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					ServiceAccountName:            name,
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						Sysctls:        []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}},
					Containers: []corev1.Container{container},
					Volumes: []corev1.Volume{
						{Name: "portico-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
							{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "portico", ExpirationSeconds: ptr.To[int64](43200), Path: "portico-token"}}}}}},
						{Name: "portico-ca-root-cert", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: "portico-ca-root-cert"}}}},
					},
				},
			},
		},
	}
	svcType := corev1.ServiceTypeLoadBalancer
	switch t := gw.Annotations[AnnotationServiceType]; t {
	case "":
	case string(corev1.ServiceTypeLoadBalancer), string(corev1.ServiceTypeNodePort), string(corev1.ServiceTypeClusterIP):
		svcType = corev1.ServiceType(t)
	default:
		pr.log.Error(fmt.Errorf("annotation %s: %q is not LoadBalancer, NodePort or ClusterIP", AnnotationServiceType, t),
			"using LoadBalancer", "gateway", gw.Namespace+"/"+gw.Name)
	}
	svc := &corev1.Service{ObjectMeta: meta(), Spec: corev1.ServiceSpec{Type: svcType, Selector: maps.Clone(selector)}}
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "status-port", Port: 15021, TargetPort: intstr.FromInt32(15021), Protocol: corev1.ProtocolTCP})
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.Name, Port: p.Port, TargetPort: intstr.FromInt32(p.Port), Protocol: p.Protocol})
	}
	for _, obj := range []client.Object{sa, role, binding, deploy, svc} {
		stampHash(obj)
	}
	return provisioned{gw: gw, sa: sa, role: role, binding: binding, deploy: deploy, svc: svc}
}

// stampHash records the hash of obj's content (before the API server
// defaults anything) in an annotation.
func stampHash(obj client.Object) {
	b, _ := json.Marshal(obj)
	sum := sha256.Sum256(b)
	a := obj.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[annotationSpecHash] = hex.EncodeToString(sum[:8])
	obj.SetAnnotations(a)
}

type gatewayPort struct {
	Name     string
	Port     int32
	Protocol corev1.Protocol
}

// gatewayListenerPorts are the distinct ports of a Gateway's listeners, named
// after their protocol as Istio names gateway Service ports.
func gatewayListenerPorts(gw *gwv1.Gateway) []gatewayPort {
	seen := map[int32]bool{}
	var out []gatewayPort
	for _, l := range gw.Spec.Listeners {
		port := int32(l.Port)
		if seen[port] || port == 0 {
			continue
		}
		seen[port] = true
		proto, name := corev1.ProtocolTCP, "tcp"
		switch l.Protocol {
		case gwv1.HTTPProtocolType:
			name = "http"
		case gwv1.HTTPSProtocolType:
			name = "https"
		case gwv1.TLSProtocolType:
			name = "tls"
		case gwv1.UDPProtocolType:
			name, proto = "udp", corev1.ProtocolUDP
		}
		out = append(out, gatewayPort{Name: fmt.Sprintf("%s-%d", name, port), Port: port, Protocol: proto})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out
}
