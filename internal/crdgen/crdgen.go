// Package crdgen generates the CustomResourceDefinitions of the Istio
// networking kinds from istio.io/api's protobuf descriptors, so the
// OpenAPI schemas match the Go types Portico reads field for field. The
// files under config/crd are its output (regenerate with
// `go test ./internal/crdgen -update`).
package crdgen

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	telemetryapi "istio.io/api/telemetry/v1alpha1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// Kind describes one CRD.
type Kind struct {
	Kind, Singular, Plural string
	// Group defaults to networking.istio.io; Versions to Versions.
	Group      string
	Versions   []string
	ShortNames []string
	Spec       proto.Message
	Columns    []apiextv1.CustomResourceColumnDefinition
}

func col(name, path, desc string) apiextv1.CustomResourceColumnDefinition {
	return apiextv1.CustomResourceColumnDefinition{Name: name, Type: "string", JSONPath: path, Description: desc}
}

var age = apiextv1.CustomResourceColumnDefinition{Name: "Age", Type: "date", JSONPath: ".metadata.creationTimestamp",
	Description: "CreationTimestamp is a timestamp representing the server time when this object was created."}

// Kinds are the kinds Portico reads, with Istio's names and columns.
var Kinds = []Kind{
	{Kind: "Gateway", Singular: "gateway", Plural: "gateways", ShortNames: []string{"gw"}, Spec: &networkingapi.Gateway{},
		Columns: []apiextv1.CustomResourceColumnDefinition{age}},
	{Kind: "VirtualService", Singular: "virtualservice", Plural: "virtualservices", ShortNames: []string{"vs"}, Spec: &networkingapi.VirtualService{},
		Columns: []apiextv1.CustomResourceColumnDefinition{
			{Name: "Gateways", Type: "string", JSONPath: ".spec.gateways", Description: "The names of gateways and sidecars that should apply these routes"},
			{Name: "Hosts", Type: "string", JSONPath: ".spec.hosts", Description: "The destination hosts to which traffic is being sent"}, age}},
	{Kind: "DestinationRule", Singular: "destinationrule", Plural: "destinationrules", ShortNames: []string{"dr"}, Spec: &networkingapi.DestinationRule{},
		Columns: []apiextv1.CustomResourceColumnDefinition{col("Host", ".spec.host", "The name of a service from the service registry"), age}},
	{Kind: "ServiceEntry", Singular: "serviceentry", Plural: "serviceentries", ShortNames: []string{"se"}, Spec: &networkingapi.ServiceEntry{},
		Columns: []apiextv1.CustomResourceColumnDefinition{
			{Name: "Hosts", Type: "string", JSONPath: ".spec.hosts", Description: "The hosts associated with the ServiceEntry"},
			col("Location", ".spec.location", "Whether the service is external to the mesh or part of the mesh (MESH_EXTERNAL or MESH_INTERNAL)"),
			col("Resolution", ".spec.resolution", "Service resolution mode for the hosts (NONE, STATIC, or DNS)"), age}},
	// The security kinds as Istio serves them: v1 (stored) and v1beta1.
	{Kind: "RequestAuthentication", Singular: "requestauthentication", Plural: "requestauthentications", ShortNames: []string{"ra"},
		Group: "security.istio.io", Versions: []string{"v1", "v1beta1"}, Spec: &securityapi.RequestAuthentication{},
		Columns: []apiextv1.CustomResourceColumnDefinition{age}},
	{Kind: "AuthorizationPolicy", Singular: "authorizationpolicy", Plural: "authorizationpolicies", ShortNames: []string{"ap"},
		Group: "security.istio.io", Versions: []string{"v1", "v1beta1"}, Spec: &securityapi.AuthorizationPolicy{},
		Columns: []apiextv1.CustomResourceColumnDefinition{
			col("Action", ".spec.action", "The operation to take."), age}},
	{Kind: "Telemetry", Singular: "telemetry", Plural: "telemetries", ShortNames: []string{"telemetry"},
		Group: "telemetry.istio.io", Versions: []string{"v1", "v1alpha1"}, Spec: &telemetryapi.Telemetry{},
		Columns: []apiextv1.CustomResourceColumnDefinition{age}},
}

// GroupOf is the kind's API group.
func (k Kind) GroupOf() string {
	if k.Group != "" {
		return k.Group
	}
	return "networking.istio.io"
}

// FileName is the kind's file under config/crd.
func (k Kind) FileName() string { return k.GroupOf() + "_" + k.Plural + ".yaml" }

// Versions are served with the same schema; v1 is stored.
var Versions = []string{"v1", "v1beta1", "v1alpha3"}

// Generate returns the CRD of a kind.
func Generate(k Kind) *apiextv1.CustomResourceDefinition {
	spec := schema(k.Spec.ProtoReflect().Descriptor(), 0)
	group := k.GroupOf()
	versions := Versions
	if k.Versions != nil {
		versions = k.Versions
	}
	spec.Description = fmt.Sprintf("Configuration affecting %s. See https://istio.io/docs/reference/config/%s/.", k.Singular, strings.TrimSuffix(group, ".istio.io"))
	crd := &apiextv1.CustomResourceDefinition{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        k.Plural + "." + group,
			Labels:      map[string]string{"app.kubernetes.io/part-of": "portico", "app.kubernetes.io/name": "portico-crds"},
			Annotations: map[string]string{"portico.io/generated-by": "internal/crdgen from istio.io/api"},
		},
		Spec: apiextv1.CustomResourceDefinitionSpec{
			Group: group,
			Names: apiextv1.CustomResourceDefinitionNames{Kind: k.Kind, ListKind: k.Kind + "List", Plural: k.Plural, Singular: k.Singular,
				ShortNames: k.ShortNames, Categories: []string{"istio-io", strings.ReplaceAll(group, ".", "-")}},
			Scope: apiextv1.NamespaceScoped,
		},
	}
	for _, v := range versions {
		crd.Spec.Versions = append(crd.Spec.Versions, apiextv1.CustomResourceDefinitionVersion{
			Name: v, Served: true, Storage: v == "v1",
			Subresources:             &apiextv1.CustomResourceSubresources{Status: &apiextv1.CustomResourceSubresourceStatus{}},
			AdditionalPrinterColumns: k.Columns,
			Schema: &apiextv1.CustomResourceValidation{OpenAPIV3Schema: &apiextv1.JSONSchemaProps{
				Type: "object",
				Properties: map[string]apiextv1.JSONSchemaProps{
					"spec":   *spec,
					"status": {Type: "object", XPreserveUnknownFields: ptr.To(true)},
				},
			}},
		})
	}
	return crd
}

// YAML renders a CRD.
func YAML(crd *apiextv1.CustomResourceDefinition) ([]byte, error) {
	b, err := yaml.Marshal(crd)
	if err != nil {
		return nil, err
	}
	return append([]byte("# Generated by internal/crdgen from istio.io/api; do not edit.\n"), b...), nil
}

func schema(md protoreflect.MessageDescriptor, depth int) *apiextv1.JSONSchemaProps {
	if s, ok := wellKnown(md); ok {
		return s
	}
	out := &apiextv1.JSONSchemaProps{Type: "object", Properties: map[string]apiextv1.JSONSchemaProps{}}
	if depth > 12 {
		out.XPreserveUnknownFields = ptr.To(true)
		return out
	}
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		out.Properties[fd.JSONName()] = *fieldSchema(fd, depth)
	}
	return out
}

func fieldSchema(fd protoreflect.FieldDescriptor, depth int) *apiextv1.JSONSchemaProps {
	switch {
	case fd.IsMap():
		return &apiextv1.JSONSchemaProps{Type: "object", AdditionalProperties: &apiextv1.JSONSchemaPropsOrBool{
			Allows: true, Schema: singular(fd.MapValue(), depth)}}
	case fd.IsList():
		return &apiextv1.JSONSchemaProps{Type: "array", Items: &apiextv1.JSONSchemaPropsOrArray{Schema: singular(fd, depth)}}
	}
	return singular(fd, depth)
}

func singular(fd protoreflect.FieldDescriptor, depth int) *apiextv1.JSONSchemaProps {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return schema(fd.Message(), depth+1)
	case protoreflect.StringKind:
		return &apiextv1.JSONSchemaProps{Type: "string"}
	case protoreflect.BytesKind:
		return &apiextv1.JSONSchemaProps{Type: "string"}
	case protoreflect.BoolKind:
		return &apiextv1.JSONSchemaProps{Type: "boolean"}
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		names := make([]string, 0, vals.Len())
		for i := 0; i < vals.Len(); i++ {
			names = append(names, string(vals.Get(i).Name()))
		}
		sort.Strings(names)
		enum := make([]apiextv1.JSON, len(names))
		for i, n := range names {
			enum[i] = apiextv1.JSON{Raw: []byte(fmt.Sprintf("%q", n))}
		}
		return &apiextv1.JSONSchemaProps{Type: "string", Enum: enum}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return &apiextv1.JSONSchemaProps{Type: "number", Format: "double"}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return &apiextv1.JSONSchemaProps{Type: "integer", Format: "int32"}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return &apiextv1.JSONSchemaProps{Type: "integer", Minimum: ptr.To(0.0), Maximum: ptr.To(4294967295.0)}
	default: // 64-bit integers
		return &apiextv1.JSONSchemaProps{Type: "integer", Minimum: minFor(fd)}
	}
}

func minFor(fd protoreflect.FieldDescriptor) *float64 {
	switch fd.Kind() {
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return ptr.To(0.0)
	}
	return nil
}

// wellKnown maps protobuf's well-known types to what their JSON form is.
func wellKnown(md protoreflect.MessageDescriptor) (*apiextv1.JSONSchemaProps, bool) {
	switch md.FullName() {
	case "google.protobuf.Duration":
		return &apiextv1.JSONSchemaProps{Type: "string", Description: "A duration such as 5s, 250ms or 3m."}, true
	case "google.protobuf.Timestamp":
		return &apiextv1.JSONSchemaProps{Type: "string", Format: "date-time"}, true
	case "google.protobuf.BoolValue":
		return &apiextv1.JSONSchemaProps{Type: "boolean", Nullable: true}, true
	case "google.protobuf.UInt32Value", "google.protobuf.Int32Value", "google.protobuf.UInt64Value", "google.protobuf.Int64Value":
		return &apiextv1.JSONSchemaProps{Type: "integer", Nullable: true}, true
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue":
		return &apiextv1.JSONSchemaProps{Type: "number", Format: "double", Nullable: true}, true
	case "google.protobuf.StringValue":
		return &apiextv1.JSONSchemaProps{Type: "string", Nullable: true}, true
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.Any", "google.protobuf.ListValue":
		return &apiextv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptr.To(true)}, true
	}
	return nil, false
}
