package gatewayapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	networkingapi "istio.io/api/networking/v1alpha3"
	networking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/hostname"
	"github.com/portico-gateway/portico/pkg/resource"
)

// DefaultControllerName is the GatewayClass controllerName Portico
// implements unless Options.ControllerName says otherwise.
const DefaultControllerName = "portico.io/gateway-controller"

// Options tune a conversion.
type Options struct {
	// ControllerName selects the GatewayClasses (and so the Gateways and
	// routes) this controller owns (default DefaultControllerName).
	ControllerName string
	// DefaultSelector is the label set of the proxies a Gateway without a
	// portico.io/proxy-selector annotation attaches to (standalone mode:
	// the embedded proxy). Empty in Kubernetes mode, where such Gateways
	// are provisioned (see ProxySelector).
	DefaultSelector map[string]string
	// DomainSuffix completes Service names (default cluster.local).
	DomainSuffix string
}

// Output is a conversion: the synthetic Istio objects to bind with the
// rest, and what is needed to finish the Gateway API statuses once they
// are bound (Finish).
type Output struct {
	Gateways         []*networking.Gateway
	VirtualServices  []*networking.VirtualService
	DestinationRules []*networking.DestinationRule
	// Secrets carry CA bundles BackendTLSPolicies read from ConfigMaps,
	// in the shape the binder reads a DestinationRule's credentialName.
	Secrets []*corev1.Secret

	opts       Options
	classes    []*classState
	gateways   []*gatewayState
	routes     []*routeState
	policies   []*policyState
	synthetic  map[resource.Key]*origin
	renameRepl *strings.Replacer
}

// origin says what a synthetic object was made from, so the binder's
// findings on it can be told to the Gateway API objects.
type origin struct {
	listener *listenerState // synthetic Istio Gateway
	// items are a synthetic VirtualService's rules, in spec order of
	// each section (http, tls, tcp).
	http, tls, tcp []*routeState
	// policies made a synthetic DestinationRule; policyFields says which
	// of them wrote which part of it (field path prefix).
	policies     []*policyState
	policyFields map[string]*policyState
}

// Synthetic reports whether key names an object the conversion made.
func (o *Output) Synthetic(key resource.Key) bool {
	_, ok := o.synthetic[key]
	return ok
}

// SyntheticName is the name of the Istio Gateway made for one listener:
// "<gateway>~<listener>" ("~" cannot occur in Kubernetes names, so it
// never collides with a real Istio Gateway).
func SyntheticName(gateway, listener string) string { return gateway + "~" + listener }

// ParseSyntheticName splits a SyntheticName.
func ParseSyntheticName(name string) (gateway, listener string, ok bool) {
	return strings.Cut(name, "~")
}

type converter struct {
	in   *resource.Resources
	opts Options
	out  *Output
	// namespaces by name, for allowedRoutes selectors.
	namespaces map[string]*corev1.Namespace
	services   map[string]*corev1.Service // ns/name
	seHosts    map[string]*networking.ServiceEntry
	secrets    map[string]*corev1.Secret
	configMaps map[string]*corev1.ConfigMap
	gateways   map[string]*gatewayState // ns/name, ours only
}

// Convert turns the Gateway API objects of the GatewayClasses this
// controller owns into Istio objects, and computes their statuses up to
// binding. The input is not modified.
func Convert(in *resource.Resources, opts Options) *Output {
	if opts.ControllerName == "" {
		opts.ControllerName = DefaultControllerName
	}
	if opts.DomainSuffix == "" {
		opts.DomainSuffix = "cluster.local"
	}
	c := &converter{in: in, opts: opts, out: &Output{opts: opts, synthetic: map[resource.Key]*origin{}},
		namespaces: map[string]*corev1.Namespace{}, services: map[string]*corev1.Service{},
		seHosts: map[string]*networking.ServiceEntry{}, secrets: map[string]*corev1.Secret{},
		configMaps: map[string]*corev1.ConfigMap{}, gateways: map[string]*gatewayState{}}
	for _, n := range in.Namespaces {
		c.namespaces[n.Name] = n
	}
	for _, s := range in.Services {
		c.services[s.Namespace+"/"+s.Name] = s
	}
	for _, se := range in.ServiceEntries {
		for _, h := range se.Spec.Hosts {
			if _, dup := c.seHosts[h]; !dup {
				c.seHosts[h] = se
			}
		}
	}
	for _, s := range in.Secrets {
		c.secrets[s.Namespace+"/"+s.Name] = s
	}
	for _, cm := range in.ConfigMaps {
		c.configMaps[cm.Namespace+"/"+cm.Name] = cm
	}
	c.convertClasses()
	c.convertGateways()
	c.convertRoutes()
	c.convertPolicies()
	c.out.finishNames()
	return c.out
}

// ---- GatewayClass ----

type classState struct {
	obj    *gwv1.GatewayClass
	status *gwv1.GatewayClassStatus
}

// SupportedFeatures are the Gateway API features this conversion
// implements, as GatewayClass status.supportedFeatures lists them.
var SupportedFeatures = []gwv1.FeatureName{
	"BackendTLSPolicy",
	"Gateway",
	"GatewayPort8080",
	"GRPCRoute",
	"HTTPRoute",
	"HTTPRouteBackendRequestHeaderModification",
	"HTTPRouteBackendTimeout",
	"HTTPRouteHostRewrite",
	"HTTPRouteMethodMatching",
	"HTTPRouteParentRefPort",
	"HTTPRoutePathRedirect",
	"HTTPRoutePathRewrite",
	"HTTPRoutePortRedirect",
	"HTTPRouteQueryParamMatching",
	"HTTPRouteRequestMirror",
	"HTTPRouteRequestMultipleMirrors",
	"HTTPRouteRequestPercentageMirror",
	"HTTPRouteRequestTimeout",
	"HTTPRouteResponseHeaderModification",
	"HTTPRouteSchemeRedirect",
	"ReferenceGrant",
	"TCPRoute",
	"TLSRoute",
	"TLSRouteModeMixed",
	"TLSRouteModeTerminate",
}

func (c *converter) ours(className string) *classState {
	for _, cs := range c.out.classes {
		if cs.obj.Name == className {
			return cs
		}
	}
	return nil
}

func (c *converter) convertClasses() {
	for _, gc := range c.in.GatewayClasses {
		if string(gc.Spec.ControllerName) != c.opts.ControllerName {
			continue
		}
		st := &gwv1.GatewayClassStatus{}
		gen := gc.Generation
		accepted := condition(string(gwv1.GatewayClassConditionStatusAccepted), true, string(gwv1.GatewayClassReasonAccepted),
			"Handled by "+c.opts.ControllerName, gen)
		if gc.Spec.ParametersRef != nil {
			accepted = condition(string(gwv1.GatewayClassConditionStatusAccepted), false, string(gwv1.GatewayClassReasonInvalidParameters),
				fmt.Sprintf("parametersRef %s/%s is not supported by %s; remove it", gc.Spec.ParametersRef.Kind, gc.Spec.ParametersRef.Name, c.opts.ControllerName), gen)
		}
		st.Conditions = []metav1.Condition{accepted,
			condition(string(gwv1.GatewayClassConditionStatusSupportedVersion), true, string(gwv1.GatewayClassReasonSupportedVersion),
				"Gateway API v1.6 is supported", gen)}
		for _, f := range SupportedFeatures {
			st.SupportedFeatures = append(st.SupportedFeatures, gwv1.SupportedFeature{Name: f})
		}
		c.out.classes = append(c.out.classes, &classState{obj: gc, status: st})
	}
}

func condition(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}

// ---- helpers ----

// contentID gives a synthetic object an identity that changes exactly
// when its content does (a UID from its key, a resourceVersion from a
// hash of the object), so the binder's caches, keyed on object versions,
// reuse what they made of an unchanged synthetic object.
func contentID(obj resource.Object) {
	obj.SetUID("")
	obj.SetResourceVersion("")
	b, err := json.Marshal(obj)
	if err != nil {
		panic(fmt.Sprintf("gatewayapi: marshal synthetic object: %v", err)) // plain structs: cannot fail
	}
	sum := sha256.Sum256(b)
	k := resource.KeyOf(obj)
	obj.SetUID(types.UID("gatewayapi:" + k.String()))
	obj.SetResourceVersion(hex.EncodeToString(sum[:12]))
}

func (c *converter) fqdn(name, ns string) string {
	return name + "." + ns + ".svc." + c.opts.DomainSuffix
}

// allowedNamespace applies a listener's allowedRoutes.namespaces.
func (c *converter) allowedNamespace(gw *gwv1.Gateway, l *gwv1.Listener, routeNS string) bool {
	from := gwv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSame:
		return routeNS == gw.Namespace
	case gwv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		ns := c.namespaces[routeNS]
		if ns == nil {
			return false
		}
		return s.Matches(labels.Set(ns.Labels))
	}
	return false // None, or unknown
}

// granted reports whether a ReferenceGrant in toNS lets objects of
// fromKind (group fromGroup) in fromNS refer to toKind/toName.
func (c *converter) granted(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	if fromNS == toNS {
		return true
	}
	for _, rg := range c.in.ReferenceGrants {
		if rg.Namespace != toNS {
			continue
		}
		fromOK := false
		for _, f := range rg.Spec.From {
			if string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS {
				fromOK = true
				break
			}
		}
		if !fromOK {
			continue
		}
		for _, t := range rg.Spec.To {
			if string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == toName) {
				return true
			}
		}
	}
	return false
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// intersectHostnames intersects two Gateway API hostnames ("" is any):
// the more specific of the two when they overlap. A wildcard matches one
// or more labels (package hostname, shared with the Istio binder).
func intersectHostnames(a, b string) (string, bool) {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if a == "" {
		a = "*"
	}
	if b == "" {
		b = "*"
	}
	return hostname.Intersect(a, b)
}

// hostCovers reports whether pattern matches every name host matches.
func hostCovers(pattern, host string) bool { return hostname.Covers(pattern, host) }

// serverFor builds the Istio server of a valid listener.
func serverFor(l *gwv1.Listener, tls *networkingapi.ServerTLSSettings, protocol string) *networkingapi.Server {
	host := "*/*"
	if l.Hostname != nil && *l.Hostname != "" {
		host = "*/" + strings.ToLower(string(*l.Hostname))
	}
	return &networkingapi.Server{
		Port:  &networkingapi.Port{Number: uint32(l.Port), Protocol: protocol, Name: string(l.Name)},
		Hosts: []string{host},
		Tls:   tls,
	}
}
