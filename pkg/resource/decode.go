package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	security "istio.io/client-go/pkg/apis/security/v1"
	telemetry "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

var yamlLine = regexp.MustCompile(`yaml: line \d+: `)

// DecodeError is a document that could not be read. It carries enough to
// find the problem: the source, where in it (line and column of the field
// or of the syntax error, relative to the whole file), the document's
// index, the resource (when the document named itself) and the field path.
type DecodeError struct {
	Source   string
	Document int // 0-based index in a multi-document stream
	// Line and Column locate the problem in the source (1-based); Column
	// is 0 when only the line is known. Line is the document's first
	// line when nothing more precise is known.
	Line   int
	Column int
	// DocumentLine is the line where the document starts.
	DocumentLine int
	Key          Key // zero when the document did not get that far
	Field        string
	Err          error
	// syntax marks a document that is not valid YAML.
	syntax bool
}

// Error reads "file:line:col: document N, Kind ns/name: field: problem"
// (N counts from 1),
// the form editors and terminals turn into links.
func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	fmt.Fprintf(&b, ": document %d", e.Document+1) // counted from 1, as people count
	if e.Key.Name != "" {
		fmt.Fprintf(&b, ", %s", e.Key)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ": %s", e.Field)
	}
	fmt.Fprintf(&b, ": %v", e.Err)
	return b.String()
}

func (e *DecodeError) Unwrap() error { return e.Err }

// FieldError is a problem at one field path inside a document.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// Document is one YAML document of a stream.
type Document struct {
	Index int
	Line  int
	Data  []byte
}

// SplitDocuments splits a multi-document YAML stream on "---" separators,
// remembering where each document starts so errors can point at it. Empty
// documents (only comments or whitespace) are skipped but still counted.
// Lines end at "\n" with a "\r" before it dropped, and every line of a
// document ends with "\n"; a document that is already written so is a
// slice of data, not a copy (a cold start splits thousands of files).
func SplitDocuments(data []byte) []Document {
	var docs []Document
	var cur []byte // the document so far, when it is not a slice of data
	copied := false
	begin, end := 0, 0 // the document so far as data[begin:end], while !copied
	start, line, index := 1, 0, 0
	flush := func() {
		doc := data[begin:end]
		if copied {
			doc = cur
		}
		if hasContent(doc) {
			if !copied {
				doc = doc[:len(doc):len(doc)] // appending must not write into data
			}
			docs = append(docs, Document{Index: index, Line: start, Data: doc})
		}
		index++
		cur, copied = nil, false
	}
	for pos := 0; pos < len(data); {
		text, next, clean := data[pos:], len(data), false
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			text, next, clean = text[:i], pos+i+1, true
		}
		if n := len(text); n > 0 && text[n-1] == '\r' {
			text, clean = text[:n-1], false
		}
		line++
		if bytes.HasPrefix(text, []byte("---")) && len(bytes.TrimSpace(text[3:])) == 0 || bytes.HasPrefix(text, []byte("--- #")) {
			if line > 1 || copied || end > begin {
				flush()
			}
			start = line + 1
			begin, end, pos = next, next, next
			continue
		}
		if !copied && !clean {
			cur = append(append(cur, data[begin:end]...), text...)
			cur = append(cur, '\n')
			copied = true
		} else if copied {
			cur = append(append(cur, text...), '\n')
		} else {
			end = next
		}
		pos = next
	}
	flush()
	return docs
}

func hasContent(b []byte) bool {
	for len(b) > 0 {
		l := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			l, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			return true
		}
	}
	return false
}

// Decode reads every document of a YAML (or JSON) stream. Documents of kinds
// Portico does not read (ConfigMaps, Deployments, …) are skipped without
// error so users can keep their manifests together. Lists (kind: List or
// *List) are expanded.
func Decode(data []byte, source string) ([]Object, []*DecodeError) {
	objs, errs, _ := DecodeWithIgnored(data, source)
	return objs, errs
}

// Ignored is a well-formed document of a kind Portico does not read.
type Ignored struct {
	Source     string
	Document   int
	Line       int
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
}

// DecodeWithIgnored is Decode that also lists the documents it skipped, so
// that a provider can say so: a RequestAuthentication that is silently
// not enforced is worse than one reported as unsupported.
func DecodeWithIgnored(data []byte, source string) ([]Object, []*DecodeError, []Ignored) {
	var objs []Object
	var errs []*DecodeError
	var ignored []Ignored
	for _, doc := range SplitDocuments(data) {
		o, err := DecodeDocument(doc.Data)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				de = &DecodeError{Err: err}
			}
			de.Source, de.Document, de.Line, de.DocumentLine = source, doc.Index, doc.Line, doc.Line
			if line, col := position(doc.Data, de); line > 0 {
				de.Line, de.Column = doc.Line+line-1, col
				if de.syntax {
					// The library's "line N" counts from the document
					// and often names the enclosing structure: the
					// position above replaces it.
					de.Err = errors.New("invalid YAML: " + yamlLine.ReplaceAllString(
						strings.TrimPrefix(errors.Unwrap(de.Err).Error(), "error converting YAML to JSON: "), "yaml: "))
				}
			}
			errs = append(errs, de)
			continue
		}
		if len(o) == 0 {
			var tm struct {
				typeMeta
				Meta metav1.ObjectMeta `json:"metadata"`
			}
			if js, err := yaml.YAMLToJSON(doc.Data); err == nil && json.Unmarshal(js, &tm) == nil && tm.Kind != "" && !strings.HasSuffix(tm.Kind, "List") {
				ignored = append(ignored, Ignored{Source: source, Document: doc.Index, Line: doc.Line,
					APIVersion: tm.APIVersion, Kind: tm.Kind, Namespace: tm.Meta.Namespace, Name: tm.Meta.Name})
			}
		}
		objs = append(objs, o...)
	}
	return objs, errs, ignored
}

type typeMeta struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   json.RawMessage   `json:"metadata"`
	Items      []json.RawMessage `json:"items"`
	// meta is the metadata read from a parsed document without JSON
	// text, when it has only the common fields (see objectMetaOf).
	meta *metav1.ObjectMeta
}

// DecodeDocument decodes one document. It returns (nil, nil) for kinds that
// Portico does not read.
func DecodeDocument(data []byte) ([]Object, error) {
	if objs, err, ok := decodeYAML(data); ok {
		return objs, err
	}
	return decodeDocumentPlain(data)
}

// decodeDocumentPlain decodes a document through its JSON text: the way
// for whatever decodeYAML steps aside from, and what it must equal.
func decodeDocumentPlain(data []byte) ([]Object, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, &DecodeError{Err: fmt.Errorf("invalid YAML: %w", err), syntax: true}
	}
	return decodeJSON(js)
}

// DecodeJSON decodes one object (or List) from JSON, as DecodeDocument
// does from YAML.
func DecodeJSON(js []byte) ([]Object, error) { return decodeJSON(js) }

func decodeJSON(js []byte) ([]Object, error) {
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, nil
	}
	var tm typeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, &DecodeError{Err: fmt.Errorf("not a Kubernetes object: %w", err)}
	}
	if tm.Kind == "" || tm.APIVersion == "" {
		return nil, &DecodeError{Field: "kind", Err: errors.New("apiVersion and kind are required")}
	}
	if tm.Kind == "List" || strings.HasSuffix(tm.Kind, "List") && tm.Items != nil {
		var out []Object
		for i, item := range tm.Items {
			objs, err := decodeJSON(item)
			if err != nil {
				var de *DecodeError
				if errors.As(err, &de) {
					de.Field = fmt.Sprintf("items[%d].%s", i, de.Field)
					return nil, de
				}
				return nil, err
			}
			out = append(out, objs...)
		}
		return out, nil
	}
	return decodeObject(tm, &source{js: js})
}

// decodeObject decodes a document that is not a List, whose typeMeta was
// read already.
func decodeObject(tm typeMeta, src *source) ([]Object, error) {
	group, version := splitAPIVersion(tm.APIVersion)
	// The metadata read with the type is used as it is, not copied: a
	// copy per object was 7 MB of garbage at 30,000 objects.
	meta := tm.meta
	if meta == nil {
		meta = &metav1.ObjectMeta{}
		if len(tm.Metadata) > 0 {
			if err := strictUnmarshal(tm.Metadata, meta); err != nil {
				return nil, &DecodeError{Key: Key{Kind: tm.Kind}, Field: "metadata", Err: err}
			}
		}
	}
	clusterScoped := tm.Kind == KindNamespace || group == GatewayAPIGroup && tm.Kind == KindGatewayClass
	if meta.Namespace == "" && !clusterScoped {
		meta.Namespace = "default"
	}
	key := Key{Kind: tm.Kind, Namespace: meta.Namespace, Name: meta.Name}
	if meta.Name == "" {
		return nil, &DecodeError{Key: key, Field: "metadata.name", Err: errors.New("required")}
	}

	if group == SecurityGroup && (tm.Kind == KindRequestAuthentication || tm.Kind == KindAuthorizationPolicy) {
		if version != "v1beta1" && version != "v1" {
			return nil, &DecodeError{Key: key, Field: "apiVersion", Err: fmt.Errorf("unsupported version %q of %s (want v1beta1 or v1)", version, SecurityGroup)}
		}
	}
	if group == TelemetryGroup {
		if tm.Kind != KindTelemetry {
			return nil, &DecodeError{Key: key, Field: "kind", Err: fmt.Errorf("unsupported kind %q of %s", tm.Kind, TelemetryGroup)}
		}
		if version != "v1" && version != "v1alpha1" {
			return nil, &DecodeError{Key: key, Field: "apiVersion", Err: fmt.Errorf("unsupported version %q of %s (want v1 or v1alpha1)", version, TelemetryGroup)}
		}
	}
	if group == IstioGroup || group == SecurityGroup || group == TelemetryGroup {
		if group == IstioGroup && version != "v1alpha3" && version != "v1beta1" && version != "v1" {
			return nil, &DecodeError{Key: key, Field: "apiVersion", Err: fmt.Errorf("unsupported version %q of %s (want v1alpha3, v1beta1 or v1)", version, IstioGroup)}
		}
		obj, err := decodeIstio(tm, *meta, src)
		if err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				return nil, &DecodeError{Key: key, Field: fe.Path, Err: errors.New(fe.Msg)}
			}
			return nil, &DecodeError{Key: key, Err: err}
		}
		if obj == nil {
			return nil, nil
		}
		return []Object{obj}, nil
	}

	if group == GatewayAPIGroup {
		if tm.Kind == KindGateway {
			key.Group = GatewayAPIGroup
		}
		obj, err := decodeGatewayAPI(tm.Kind, version, src)
		if err != nil {
			return nil, &DecodeError{Key: key, Err: err}
		}
		if obj == nil {
			return nil, nil
		}
		obj.SetNamespace(meta.Namespace)
		if tm.Kind == KindGatewayClass {
			obj.SetNamespace("") // cluster-scoped
		}
		return []Object{obj}, nil
	}

	var obj Object
	strict := func(into any) error {
		if src.tree != nil {
			dst := reflect.ValueOf(into).Elem()
			if setTyped(src.tree, dst) {
				return nil
			}
			dst.SetZero() // the JSON way decides, from scratch
		}
		js, err := src.json()
		if err != nil {
			return err
		}
		return strictUnmarshal(js, into)
	}
	switch {
	case group == "" && version == "v1" && tm.Kind == KindNamespace:
		ns := &corev1.Namespace{}
		if err := strict(ns); err != nil {
			return nil, &DecodeError{Key: key, Err: err}
		}
		// Only the labels matter (allowedRoutes selectors).
		return []Object{&corev1.Namespace{TypeMeta: ns.TypeMeta, ObjectMeta: ns.ObjectMeta}}, nil
	case group == "" && version == "v1" && tm.Kind == KindConfigMap:
		obj = &corev1.ConfigMap{}
	case group == "" && version == "v1" && tm.Kind == KindService:
		obj = &corev1.Service{}
	case group == "" && version == "v1" && tm.Kind == KindSecret:
		obj = &corev1.Secret{}
	case group == "" && version == "v1" && tm.Kind == KindPod:
		// Only the metadata is kept; the Pod it is decoded with (strictly,
		// so that a mistake in the spec is still reported) is reused.
		pod := scratchPods.Get().(*corev1.Pod)
		defer func() {
			*pod = corev1.Pod{}
			scratchPods.Put(pod)
		}()
		if err := strict(pod); err != nil {
			return nil, &DecodeError{Key: key, Err: err}
		}
		pod.Namespace = meta.Namespace
		return []Object{PodMetadata(pod)}, nil
	case group == "discovery.k8s.io" && version == "v1" && tm.Kind == KindEndpointSlice:
		obj = &discoveryv1.EndpointSlice{}
	default:
		return nil, nil
	}
	if err := strict(obj); err != nil {
		return nil, &DecodeError{Key: key, Err: err}
	}
	obj.SetNamespace(meta.Namespace)
	if s, ok := obj.(*corev1.Secret); ok {
		// The API server folds stringData into data; so do we.
		for k, v := range s.StringData {
			if s.Data == nil {
				s.Data = map[string][]byte{}
			}
			s.Data[k] = []byte(v)
		}
		s.StringData = nil
	}
	return []Object{obj}, nil
}

// gatewayAPIVersions lists, per kind, the versions of
// gateway.networking.k8s.io that sigs.k8s.io/gateway-api v1.6 serves. Every
// one of them has the v1 schema for what Portico reads, so all decode into
// the v1 Go types, strictly (an unknown field is an error naming it, as the
// API server's structural schema would prune it and we would rather say so).
var gatewayAPIVersions = map[string][]string{
	KindGatewayClass:     {"v1", "v1beta1"},
	KindGateway:          {"v1", "v1beta1"},
	KindHTTPRoute:        {"v1", "v1beta1"},
	KindGRPCRoute:        {"v1"},
	KindReferenceGrant:   {"v1", "v1beta1"},
	KindTLSRoute:         {"v1", "v1alpha2", "v1alpha3"},
	KindTCPRoute:         {"v1", "v1alpha2"},
	KindUDPRoute:         {"v1", "v1alpha2"},
	KindBackendTLSPolicy: {"v1", "v1alpha3"},
}

func decodeGatewayAPI(kind, version string, src *source) (Object, error) {
	versions, ok := gatewayAPIVersions[kind]
	if !ok {
		// ListenerSet and experimental kinds: not read (yet).
		return nil, nil
	}
	if !slices.Contains(versions, version) {
		return nil, &FieldError{Path: "apiVersion", Msg: fmt.Sprintf("unsupported version %q of %s %s (want %s)",
			version, GatewayAPIGroup, kind, strings.Join(versions, ", "))}
	}
	var obj Object
	switch kind {
	case KindGatewayClass:
		obj = &gwv1.GatewayClass{}
	case KindGateway:
		obj = &gwv1.Gateway{}
	case KindHTTPRoute:
		obj = &gwv1.HTTPRoute{}
	case KindGRPCRoute:
		obj = &gwv1.GRPCRoute{}
	case KindReferenceGrant:
		obj = &gwv1.ReferenceGrant{}
	case KindTLSRoute:
		obj = &gwv1.TLSRoute{}
	case KindTCPRoute:
		obj = &gwv1.TCPRoute{}
	case KindUDPRoute:
		obj = &gwv1.UDPRoute{}
	case KindBackendTLSPolicy:
		obj = &gwv1.BackendTLSPolicy{}
	}
	js, err := src.json()
	if err != nil {
		return nil, err
	}
	if err := strictUnmarshal(js, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// scratchPods holds the Pods documents are decoded into before they are
// reduced to their metadata: a Pod is 1 KB, 10 MB of garbage at 10,000
// Pods.
var scratchPods = sync.Pool{New: func() any { return &corev1.Pod{} }}

// PodMetadata reduces a Pod to the metadata subsets need. The result
// shares nothing with pod but what pod's metadata refers to.
func PodMetadata(pod *corev1.Pod) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: KindPod},
		ObjectMeta: pod.ObjectMeta,
	}
}

func splitAPIVersion(v string) (group, version string) {
	if i := strings.LastIndexByte(v, '/'); i >= 0 {
		return v[:i], v[i+1:]
	}
	return "", v
}

// strictUnmarshal decodes JSON and fails on unknown or duplicate fields, with
// the field path in the message (sigs.k8s.io/json reports paths).
func strictUnmarshal(data []byte, into any) error {
	strictErrs, err := kjson.UnmarshalStrict(data, into)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, 0, len(strictErrs))
		for _, e := range strictErrs {
			msgs = append(msgs, e.Error())
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return nil
}

func decodeIstio(tm typeMeta, meta metav1.ObjectMeta, src *source) (Object, error) {
	var keys []string
	var raw json.RawMessage
	var tree any
	if src.tree != nil {
		for k := range src.tree {
			keys = append(keys, k)
		}
		tree = src.tree["spec"]
	} else {
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(src.js, &doc); err != nil {
			return nil, err
		}
		for k := range doc {
			keys = append(keys, k)
		}
		raw = doc["spec"]
	}
	var spec proto.Message
	var obj Object
	typ := metav1.TypeMeta{APIVersion: tm.APIVersion, Kind: tm.Kind}
	group, _ := splitAPIVersion(tm.APIVersion)
	emptySpecOK := false
	switch {
	case group == SecurityGroup && tm.Kind == KindRequestAuthentication:
		o := &security.RequestAuthentication{TypeMeta: typ, ObjectMeta: meta}
		spec, obj, emptySpecOK = &o.Spec, o, true
	case group == SecurityGroup && tm.Kind == KindAuthorizationPolicy:
		// A policy without spec is Istio's "deny all" (an ALLOW policy
		// matching nothing), so a missing spec is not an error.
		o := &security.AuthorizationPolicy{TypeMeta: typ, ObjectMeta: meta}
		spec, obj, emptySpecOK = &o.Spec, o, true
	case group == TelemetryGroup:
		o := &telemetry.Telemetry{TypeMeta: typ, ObjectMeta: meta}
		spec, obj, emptySpecOK = &o.Spec, o, true
	case group == SecurityGroup:
		// PeerAuthentication: mesh mTLS between workloads, not a
		// gateway's concern.
		return nil, nil
	}
	switch {
	case obj != nil:
	case tm.Kind == KindGateway:
		o := &networking.Gateway{TypeMeta: typ, ObjectMeta: meta}
		spec, obj = &o.Spec, o
	case tm.Kind == KindVirtualService:
		o := &networking.VirtualService{TypeMeta: typ, ObjectMeta: meta}
		spec, obj = &o.Spec, o
	case tm.Kind == KindDestinationRule:
		o := &networking.DestinationRule{TypeMeta: typ, ObjectMeta: meta}
		spec, obj = &o.Spec, o
	case tm.Kind == KindServiceEntry:
		o := &networking.ServiceEntry{TypeMeta: typ, ObjectMeta: meta}
		spec, obj = &o.Spec, o
	default:
		// Sidecars, EnvoyFilters, WorkloadEntries: not read by a gateway.
		return nil, nil
	}
	sort.Strings(keys) // the first unknown field by name, not by map order
	for _, k := range keys {
		switch k {
		case "apiVersion", "kind", "metadata", "spec", "status":
		default:
			return nil, &FieldError{Path: k, Msg: "unknown field"}
		}
	}
	if src.tree != nil && tree == nil || src.tree == nil && (len(raw) == 0 || string(raw) == "null") {
		if emptySpecOK {
			return obj, nil
		}
		return nil, &FieldError{Path: "spec", Msg: "required"}
	}
	if src.tree != nil {
		if err := unmarshalSpecValue(tree, spec); err != nil {
			return nil, err
		}
		return obj, nil
	}
	if err := UnmarshalSpec(raw, spec); err != nil {
		return nil, err
	}
	return obj, nil
}

// UnmarshalSpec decodes the JSON form of an Istio spec into msg exactly as
// Istio reads it (camelCase or snake_case names, enum names, durations such
// as "5s" or "3m"), rejecting unknown fields and wrong types with the path of
// the offending field, e.g. "spec.http[0].retries.attempts".
func UnmarshalSpec(raw []byte, msg proto.Message) error {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return &FieldError{Path: "spec", Msg: err.Error()}
	}
	norm, err := normalizeMessage(v, msg.ProtoReflect().Descriptor(), "spec")
	if err != nil {
		return err
	}
	return unmarshalNormalized(norm, msg)
}

// unmarshalSpecValue is UnmarshalSpec from the spec's generic value (as
// encoding/json decodes it with UseNumber), setting the message's fields
// directly instead of through protojson where it can.
func unmarshalSpecValue(v any, msg proto.Message) error {
	if quickMessage(v, msg.ProtoReflect()) {
		return nil
	}
	proto.Reset(msg)
	norm, err := normalizeMessage(v, msg.ProtoReflect().Descriptor(), "spec")
	if err != nil {
		return err
	}
	if obj, ok := norm.(map[string]any); ok && setMessage(obj, msg.ProtoReflect()) {
		return nil
	}
	// Something protojson has to judge (and word the error for): start
	// again from its text.
	proto.Reset(msg)
	return unmarshalNormalized(norm, msg)
}

// unmarshalNormalized reads a normalized spec with protojson.
func unmarshalNormalized(norm any, msg proto.Message) error {
	b, err := json.Marshal(norm)
	if err != nil {
		return fmt.Errorf("re-encoding spec: %w", err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b, msg); err != nil {
		return &FieldError{Path: "spec", Msg: err.Error()}
	}
	return nil
}
