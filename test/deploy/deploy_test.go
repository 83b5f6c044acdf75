// Package deploy checks the manifests in config/deploy as kustomize
// renders them: what `kubectl apply -k` would create, that the pieces
// point at each other (Service names, ports, labels), and that the stock
// Envoy bootstrap is valid Envoy configuration. The e2e tests apply the
// same manifests to a real API server (server-side dry run) and run the
// controller with their RBAC.
package deploy

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	grpccredv3 "github.com/envoyproxy/go-control-plane/envoy/config/grpc_credential/v3"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/internal/manifests"
	_ "github.com/portico-gateway/portico/pkg/envoytypes"
	"github.com/portico-gateway/portico/pkg/xds"
	"github.com/portico-gateway/portico/pkg/xds/auth"
	"github.com/portico-gateway/portico/pkg/xds/validate"
)

type rendered map[string]*unstructured.Unstructured // "Kind/ns/name"

func build(t *testing.T, dir string) rendered {
	t.Helper()
	objs, err := manifests.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := rendered{}
	for _, o := range objs {
		key := o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
		if _, dup := out[key]; dup {
			t.Errorf("%s: %s twice", dir, key)
		}
		out[key] = o
	}
	return out
}

func (r rendered) get(t *testing.T, key string, into any) {
	t.Helper()
	o, ok := r[key]
	if !ok {
		t.Fatalf("%s not rendered; have %v", key, slices.Sorted(maps.Keys(r)))
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// controllerXDS is the address proxies must dial: the controller Service.
func controllerXDS(t *testing.T, r rendered) (host string, port int32) {
	var svc corev1.Service
	r.get(t, "Service/portico-system/portico-controller", &svc)
	for _, p := range svc.Spec.Ports {
		if p.Name == "grpc-xds" {
			return svc.Name + "." + svc.Namespace + ".svc", p.Port
		}
	}
	t.Fatal("the controller Service has no grpc-xds port")
	return "", 0
}

func TestDefaultDeployment(t *testing.T) {
	r := build(t, "../../config/deploy")
	for key := range r {
		if strings.HasPrefix(key, "CustomResourceDefinition/") {
			t.Errorf("%s: config/deploy must not replace CRDs (Istio's may be installed)", key)
		}
	}
	for _, key := range []string{
		"Namespace//portico-system", "Namespace//istio-system",
		"ServiceAccount/portico-system/portico-controller",
		"ClusterRole//portico-controller", "ClusterRoleBinding//portico-controller",
		"Role/portico-system/portico-controller-leader-election",
		"Role/portico-system/portico-controller-ca", "RoleBinding/portico-system/portico-controller-ca",
		"Role/istio-system/istio-ingressgateway-sds", "RoleBinding/istio-system/istio-ingressgateway-sds",
		"Role/istio-system/istio-egressgateway-sds", "RoleBinding/istio-system/istio-egressgateway-sds",
		"RoleBinding/portico-system/portico-controller-leader-election",
		"Deployment/portico-system/portico-controller",
		"Deployment/istio-system/istio-ingressgateway", "Service/istio-system/istio-ingressgateway",
		"PodDisruptionBudget/istio-system/istio-ingressgateway",
		"Deployment/istio-system/istio-egressgateway", "Service/istio-system/istio-egressgateway",
	} {
		if _, ok := r[key]; !ok {
			t.Errorf("%s is not deployed", key)
		}
	}
	host, port := controllerXDS(t, r)

	for _, gw := range []struct{ name, istio string }{{"istio-ingressgateway", "ingressgateway"}, {"istio-egressgateway", "egressgateway"}} {
		var d appsv1.Deployment
		r.get(t, "Deployment/istio-system/"+gw.name, &d)
		var svc corev1.Service
		r.get(t, "Service/istio-system/"+gw.name, &svc)
		c := d.Spec.Template.Spec.Containers[0]
		if got, want := flagValue(c.Args, "--xds-address"), net.JoinHostPort(host, fmt.Sprint(port)); got != want {
			t.Errorf("%s dials %q, the controller Service is %q", gw.name, got, want)
		}
		podLabels := d.Spec.Template.Labels
		if podLabels["istio"] != gw.istio {
			t.Errorf("%s pods are labelled %v; Gateways select istio: %s", gw.name, podLabels, gw.istio)
		}
		for k, v := range svc.Spec.Selector {
			if podLabels[k] != v {
				t.Errorf("Service %s selects %v, which the pods (%v) lack", gw.name, svc.Spec.Selector, podLabels)
			}
		}
		if svc.Annotations["portico.io/manage-ports"] != "true" {
			t.Errorf("Service %s does not let the controller manage its ports", gw.name)
		}
		checkXDSCredentials(t, gw.name, d.Spec.Template.Spec, flagValue(c.Args, "--xds-ca-file"), flagValue(c.Args, "--xds-token-file"))
		if p := d.Spec.Template.Spec.Containers[0].ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz/ready" ||
			flagValue(c.Args, "--status-address") != ":"+p.HTTPGet.Port.String() {
			t.Errorf("%s: the readiness probe must hit /healthz/ready on the --status-address port", gw.name)
		}
	}

	var role rbacv1.ClusterRole
	r.get(t, "ClusterRole//portico-controller", &role)
	for _, need := range []struct{ group, resource, verb string }{
		{"authentication.k8s.io", "tokenreviews", "create"}, {"authorization.k8s.io", "subjectaccessreviews", "create"},
		{"", "pods", "get"}, {"", "namespaces", "watch"}, {"", "configmaps", "create"}, {"", "configmaps", "update"},
	} {
		if !allows(role.Rules, need.group, need.resource, need.verb) {
			t.Errorf("the controller may not %s %s.%s (xDS security needs it)", need.verb, need.resource, need.group)
		}
	}
	var caRole rbacv1.Role
	r.get(t, "Role/portico-system/portico-controller-ca", &caRole)
	if !allows(caRole.Rules, "", "secrets", "create") {
		t.Error("the controller may not create its CA Secret")
	}
	var sds rbacv1.Role
	r.get(t, "Role/istio-system/istio-ingressgateway-sds", &sds)
	if !allows(sds.Rules, "", "secrets", "list") {
		t.Error("the ingress gateway's service account must be allowed to list Secrets in its namespace, or it gets no private keys (Istio's rule)")
	}

	var ingress corev1.Service
	r.get(t, "Service/istio-system/istio-ingressgateway", &ingress)
	nodePorts := map[int32]int32{}
	for _, p := range ingress.Spec.Ports {
		nodePorts[p.Port] = p.NodePort
	}
	if ingress.Spec.Type != corev1.ServiceTypeNodePort || nodePorts[80] != 31380 || nodePorts[443] != 31390 || nodePorts[3306] != 31400 {
		t.Errorf("the ingress Service must be a NodePort with 80→31380, 443→31390, 3306→31400: %s %v", ingress.Spec.Type, nodePorts)
	}
}

// TestEnvoyDeployment: the alternative ingress gateway runs stock Envoy
// with a bootstrap that is valid, dials the controller's ADS, identifies
// with the pod's labels and keeps the admin interface on 127.0.0.1:15000.
func TestEnvoyDeployment(t *testing.T) {
	r := build(t, "../../config/deploy/envoy")
	var d appsv1.Deployment
	r.get(t, "Deployment/istio-system/istio-ingressgateway", &d)
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	if !strings.HasPrefix(c.Image, "envoyproxy/envoy:") {
		t.Fatalf("image %s", c.Image)
	}
	if flagValue(c.Args, "--service-node") != "$(POD_NAME)" || !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAME" }) {
		t.Errorf("the node id must be the pod name: args %v", c.Args)
	}
	var cm corev1.ConfigMap
	r.get(t, "ConfigMap/istio-system/istio-ingressgateway-envoy-bootstrap", &cm)
	js, err := yaml.YAMLToJSON([]byte(cm.Data["envoy.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if err := validate.Deep(&bs); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	// Stock Envoy must accept the regexes the binder accepts, and shed
	// connections at a cap as the Go proxy does.
	var re2 float64
	for _, l := range bs.GetLayeredRuntime().GetLayers() {
		re2 = max(re2, l.GetStaticLayer().GetFields()["re2.max_program_size.error_level"].GetNumberValue())
	}
	if re2 < 32768 {
		t.Errorf("re2.max_program_size.error_level = %v: Envoy would refuse regexes the controller accepts (up to 32768)", re2)
	}
	if m := bs.GetOverloadManager().GetResourceMonitors(); len(m) == 0 || m[0].GetName() != "envoy.resource_monitors.global_downstream_max_connections" {
		t.Errorf("no global downstream connection cap in the overload manager: %v", m)
	}
	host, port := controllerXDS(t, r)
	// ADS over TLS with the pod's token, the way Envoy can attach one:
	// google_grpc with the file_based_metadata call credentials.
	g := bs.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetGoogleGrpc()
	if want := net.JoinHostPort(host, fmt.Sprint(port)); g.GetTargetUri() != want {
		t.Errorf("ADS dials %q, the controller Service is %q", g.GetTargetUri(), want)
	}
	caFile := g.GetChannelCredentials().GetSslCredentials().GetRootCerts().GetFilename()
	var tokenFile string
	for _, cc := range g.GetCallCredentials() {
		p := cc.GetFromPlugin()
		var md grpccredv3.FileBasedMetadataConfig
		if p.GetName() != "envoy.grpc_credentials.file_based_metadata" || p.GetTypedConfig().UnmarshalTo(&md) != nil {
			continue
		}
		if md.GetHeaderKey() != "authorization" || md.GetHeaderPrefix() != "Bearer " {
			t.Errorf("the token must go as 'authorization: Bearer …', not %q %q", md.GetHeaderKey(), md.GetHeaderPrefix())
		}
		tokenFile = md.GetSecretData().GetFilename()
	}
	if g.GetCredentialsFactoryName() != "envoy.grpc_credentials.file_based_metadata" {
		t.Errorf("credentials_factory_name %q: the plugin is only applied by its own factory", g.GetCredentialsFactoryName())
	}
	checkXDSCredentials(t, "envoy", spec, caFile, tokenFile)
	labels := map[string]string{}
	for k, v := range bs.GetNode().GetMetadata().GetFields()[xds.MetadataLabels].GetStructValue().GetFields() {
		labels[k] = v.GetStringValue()
	}
	if !maps.Equal(labels, d.Spec.Template.Labels) {
		t.Errorf("node metadata %s %v differs from the pod labels %v", xds.MetadataLabels, labels, d.Spec.Template.Labels)
	}
	admin := bs.GetAdmin().GetAddress().GetSocketAddress()
	if admin.GetAddress() != "127.0.0.1" || admin.GetPortValue() != 15000 {
		t.Errorf("admin on %s:%d", admin.GetAddress(), admin.GetPortValue())
	}
	var status bool
	for _, l := range bs.GetStaticResources().GetListeners() {
		if p := c.ReadinessProbe; p != nil && strconv.Itoa(int(l.GetAddress().GetSocketAddress().GetPortValue())) == p.HTTPGet.Port.String() {
			status = true
		}
	}
	if !status {
		t.Error("no static listener serves the readiness probe's port")
	}
	vols := map[string]bool{}
	for _, v := range spec.Volumes {
		vols[v.Name] = true
	}
	for _, m := range c.VolumeMounts {
		if !vols[m.Name] {
			t.Errorf("volume mount %s has no volume", m.Name)
		}
	}
	if !vols["envoy-bootstrap"] || !vols["ingressgateway-certs"] {
		t.Errorf("volumes %v: want the bootstrap and seed 001's certificate mounts", vols)
	}
}

// checkXDSCredentials: the files a proxy authenticates with are mounted
// from what the controller expects: the CA from the ConfigMap the
// controller publishes, the token projected for audience portico.
func checkXDSCredentials(t *testing.T, who string, spec corev1.PodSpec, caFile, tokenFile string) {
	t.Helper()
	if caFile == "" || tokenFile == "" {
		t.Errorf("%s: no xDS CA file (%q) or token file (%q)", who, caFile, tokenFile)
		return
	}
	vol := func(file string) *corev1.Volume {
		for _, m := range spec.Containers[0].VolumeMounts {
			if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
				for i := range spec.Volumes {
					if spec.Volumes[i].Name == m.Name {
						return &spec.Volumes[i]
					}
				}
			}
		}
		return nil
	}
	if v := vol(caFile); v == nil || v.ConfigMap == nil || v.ConfigMap.Name != "portico-ca-root-cert" || !strings.HasSuffix(caFile, "/root-cert.pem") {
		t.Errorf("%s: %s is not root-cert.pem of ConfigMap portico-ca-root-cert: %+v", who, caFile, v)
	}
	v := vol(tokenFile)
	if v == nil || v.Projected == nil {
		t.Fatalf("%s: %s is not a projected token: %+v", who, tokenFile, v)
	}
	var ok bool
	for _, src := range v.Projected.Sources {
		if sat := src.ServiceAccountToken; sat != nil && sat.Audience == auth.DefaultAudience && strings.HasSuffix(tokenFile, "/"+sat.Path) {
			ok = true
		}
	}
	if !ok {
		t.Errorf("%s: %s is not a service-account token for audience %q", who, tokenFile, auth.DefaultAudience)
	}
}

func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
			return true
		}
	}
	return false
}
