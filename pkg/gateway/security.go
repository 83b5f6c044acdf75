package gateway

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	authzapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	security "istio.io/client-go/pkg/apis/security/v1"

	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/jwks"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// DefaultRootNamespace is Istio's default root namespace: policies there
// without a selector apply to every gateway.
const DefaultRootNamespace = "istio-system"

// JWTFilter is the jwt_authn filter's name, which is also the namespace of
// the dynamic metadata RBAC principals match JWT claims in.
const JWTFilter = "envoy.filters.http.jwt_authn"

// securityState is every RequestAuthentication and AuthorizationPolicy of a
// build, validated once, with what attaching them found.
type securityState struct {
	ras []*raInfo
	aps []*apInfo
	// attached records the policies some class or chain got.
	attached map[resource.Key]bool
	// cache shares one ir.Security between chains with the same policies.
	cache map[string]*ir.Security
}

// policyTarget is what a policy attaches to.
type policyTarget struct {
	key       resource.Key
	ref       ir.Ref
	namespace string
	selector  map[string]string
	// targets are the Gateways (namespace/name) targetRefs name.
	targets []string
	// hasTargetRefs is set when targetRefs were given (even unusable).
	hasTargetRefs bool
}

type raInfo struct {
	policyTarget
	providers []*ir.JWTProvider
}

type apInfo struct {
	policyTarget
	action ir.RBACAction
	rules  []*authzapi.Rule
}

func (b *builder) security() *securityState {
	if b.sec == nil {
		b.sec = &securityState{attached: map[resource.Key]bool{}, cache: map[string]*ir.Security{}}
	}
	return b.sec
}

func (b *builder) rootNamespace() string {
	if b.opts.RootNamespace == "" {
		return DefaultRootNamespace
	}
	return b.opts.RootNamespace
}

func secMsg(level status.Level, code status.Code, reason, field, format string, args ...any) status.Message {
	return status.Message{Code: code, Level: level, Reason: reason, Field: field, Message: fmt.Sprintf(format, args...)}
}

func invalidField(field, format string, args ...any) status.Message {
	return secMsg(status.Error, status.SchemaValidationError, status.ReasonInvalidSpec, field, format, args...)
}

// prepareSecurity validates every policy of the snapshot.
func (b *builder) prepareSecurity(res *resource.Resources) {
	if len(res.RequestAuthentications) == 0 && len(res.AuthorizationPolicies) == 0 {
		return
	}
	st := b.security()
	for _, ra := range res.RequestAuthentications {
		st.ras = append(st.ras, b.prepareRequestAuthentication(ra))
	}
	for _, ap := range res.AuthorizationPolicies {
		st.aps = append(st.aps, b.prepareAuthorizationPolicy(ap))
	}
}

func (b *builder) policyTarget(key resource.Key, kind string, ns string, sel *typeapi.WorkloadSelector, ref *typeapi.PolicyTargetReference, refs []*typeapi.PolicyTargetReference) policyTarget {
	pt := policyTarget{key: key, ref: refOf(kind, ns, key.Name), namespace: ns}
	if sel != nil {
		pt.selector = sel.MatchLabels
	}
	all := refs
	field := "spec.targetRefs"
	if ref != nil {
		if len(refs) > 0 {
			b.report.Add(key, invalidField("spec.targetRef", "only one of targetRef and targetRefs may be set; targetRef is ignored"))
		} else {
			all, field = []*typeapi.PolicyTargetReference{ref}, "spec.targetRef"
		}
	}
	if len(all) > 0 {
		pt.hasTargetRefs = true
		if len(pt.selector) > 0 {
			b.report.Add(key, invalidField("spec.selector", "only one of selector and targetRef(s) may be set; the selector is ignored"))
			pt.selector = nil
		}
	}
	for i, r := range all {
		f := field
		if field == "spec.targetRefs" {
			f = fmt.Sprintf("%s[%d]", field, i)
		}
		if r.Kind != "Gateway" || (r.Group != resource.IstioGroup && r.Group != "gateway.networking.k8s.io" && r.Group != "") {
			b.report.Add(key, secMsg(status.Error, status.UnsupportedAtGateway, status.ReasonUnsupported, f+".kind",
				"a %s target (group %q) is not a gateway; Portico attaches policies to Gateways (group networking.istio.io or gateway.networking.k8s.io) only, so this target is ignored", r.Kind, r.Group))
			continue
		}
		if r.Namespace != "" && r.Namespace != ns {
			b.report.Add(key, invalidField(f+".namespace", "a policy can only target a Gateway of its own namespace (%s), as in Istio; this target is ignored", ns))
			continue
		}
		gw := ns + "/" + r.Name
		if _, ok := b.gateways[gw]; !ok {
			b.report.Add(key, secMsg(status.Warning, status.ReferencedResourceNotFound, status.ReasonGatewayNotFound, f+".name",
				"Gateway %s not found; the policy applies nowhere until it exists", gw))
		}
		pt.targets = append(pt.targets, gw)
	}
	return pt
}

// --- RequestAuthentication ---

func (b *builder) prepareRequestAuthentication(ra *security.RequestAuthentication) *raInfo {
	key := resource.KeyOf(ra)
	spec := &ra.Spec
	info := &raInfo{policyTarget: b.policyTarget(key, resource.KindRequestAuthentication, ra.Namespace, spec.Selector, spec.TargetRef, spec.TargetRefs)}
	for i, r := range spec.JwtRules {
		field := fmt.Sprintf("spec.jwtRules[%d]", i)
		if r == nil {
			continue
		}
		if r.Issuer == "" {
			b.report.Add(key, invalidField(field+".issuer", "issuer is required; this rule is ignored"))
			continue
		}
		p := &ir.JWTProvider{Issuer: r.Issuer, Audiences: r.Audiences, FromParams: r.FromParams, FromCookies: r.FromCookies,
			Forward: r.ForwardOriginalToken, ForwardPayloadHeader: r.OutputPayloadToHeader, Source: info.ref}
		for j, h := range r.FromHeaders {
			if h.Name == "" {
				b.report.Add(key, invalidField(fmt.Sprintf("%s.fromHeaders[%d].name", field, j), "header name is required; this location is ignored"))
				continue
			}
			p.FromHeaders = append(p.FromHeaders, ir.JWTHeader{Name: h.Name, Prefix: h.Prefix})
		}
		for j, c := range r.OutputClaimToHeaders {
			if c.Header == "" || c.Claim == "" {
				b.report.Add(key, invalidField(fmt.Sprintf("%s.outputClaimToHeaders[%d]", field, j), "header and claim are required; this entry is ignored"))
				continue
			}
			p.ClaimToHeaders = append(p.ClaimToHeaders, ir.ClaimToHeader{Header: c.Header, Claim: c.Claim})
		}
		if len(r.SpaceDelimitedClaims) > 0 {
			b.report.Add(key, secMsg(status.Warning, status.UnsupportedAtGateway, status.ReasonUnsupported, field+".spaceDelimitedClaims",
				"not supported: these claims are matched as whole strings, not split on spaces"))
		}
		p.JWKS = b.resolveJWKS(key, field, r)
		info.providers = append(info.providers, p)
	}
	return info
}

// resolveJWKS returns a rule's key set: inline, fetched, or (when neither
// can be had) a key nobody can sign with, so tokens of that issuer are
// rejected rather than trusted, as istiod does.
func (b *builder) resolveJWKS(key resource.Key, field string, r *authzapi.JWTRule) string {
	switch {
	case r.Jwks != "" && r.JwksUri != "":
		b.report.Add(key, invalidField(field, "only one of jwks and jwksUri may be set; jwks is used"))
		fallthrough
	case r.Jwks != "":
		if err := jwks.Validate([]byte(r.Jwks)); err != nil {
			b.report.Add(key, invalidField(field+".jwks", "not a JSON Web Key Set (%v); tokens of issuer %q are rejected (401)", err, r.Issuer))
			return jwks.FailClosedJWKS
		}
		return r.Jwks
	case r.JwksUri != "":
		u, err := url.Parse(r.JwksUri)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			b.report.Add(key, invalidField(field+".jwksUri", "%q is not an http(s) URL; tokens of issuer %q are rejected (401)", r.JwksUri, r.Issuer))
			return jwks.FailClosedJWKS
		}
		if b.opts.JWKS == nil {
			b.report.Add(key, secMsg(status.Error, status.UnsupportedAtGateway, status.ReasonUnsupported, field+".jwksUri",
				"key sets are not fetched in this mode; tokens of issuer %q are rejected (401)", r.Issuer))
			return jwks.FailClosedJWKS
		}
		var timeout time.Duration
		if r.Timeout != nil {
			timeout = r.Timeout.AsDuration()
		}
		keys, err := b.opts.JWKS.Lookup(r.JwksUri, timeout)
		switch {
		case err == jwks.ErrPending:
			b.report.Add(key, secMsg(status.Warning, status.ReferencedResourceNotFound, status.ReasonResolvedRefs, field+".jwksUri",
				"the key set is being fetched; tokens of issuer %q are rejected (401) until it arrives", r.Issuer))
			return jwks.FailClosedJWKS
		case err != nil:
			b.report.Add(key, secMsg(status.Error, status.ReferencedResourceNotFound, status.ReasonDestinationNotFound, field+".jwksUri",
				"the key set could not be fetched (%v); tokens of issuer %q are rejected (401) until it can", err, r.Issuer))
			return jwks.FailClosedJWKS
		}
		return keys
	default:
		b.report.Add(key, invalidField(field+".jwksUri", "one of jwksUri and jwks is required (OpenID discovery from the issuer is not supported); tokens of issuer %q are rejected (401)", r.Issuer))
		return jwks.FailClosedJWKS
	}
}

// --- AuthorizationPolicy ---

func (b *builder) prepareAuthorizationPolicy(ap *security.AuthorizationPolicy) *apInfo {
	key := resource.KeyOf(ap)
	spec := &ap.Spec
	info := &apInfo{policyTarget: b.policyTarget(key, resource.KindAuthorizationPolicy, ap.Namespace, spec.Selector, spec.TargetRef, spec.TargetRefs), rules: spec.Rules}
	switch spec.Action {
	case authzapi.AuthorizationPolicy_ALLOW:
		info.action = ir.RBACAllow
	case authzapi.AuthorizationPolicy_DENY:
		info.action = ir.RBACDeny
	case authzapi.AuthorizationPolicy_AUDIT:
		info.action = ir.RBACLog
	case authzapi.AuthorizationPolicy_CUSTOM:
		// istiod denies what a CUSTOM policy matches when it cannot reach
		// its provider; so does Portico, which has no ext_authz.
		info.action = ir.RBACDeny
		b.report.Add(key, secMsg(status.Error, status.UnsupportedAtGateway, status.ReasonUnsupported, "spec.action",
			"CUSTOM (external authorization) is not supported; requests its rules match are denied (403), as istiod does when the provider is unavailable"))
	}
	if spec.GetProvider() != nil && spec.Action != authzapi.AuthorizationPolicy_CUSTOM {
		b.report.Add(key, invalidField("spec.provider", "provider is only used with action CUSTOM; it is ignored"))
	}
	// Report what is invalid once, whatever gateways the policy reaches.
	for i, r := range spec.Rules {
		if r == nil {
			continue
		}
		field := fmt.Sprintf("spec.rules[%d]", i)
		if _, err := convertRule(r, ap.Namespace, nil, false, ir.RBACAllow, true); err != nil {
			what := "this rule is not used (it can never match)"
			if info.action != ir.RBACAllow {
				what = "the invalid part is ignored, so the rule matches more"
				if _, ok := err.(*unknownKeyError); ok {
					what = "this rule is not used"
				}
			}
			f := field
			if fe, ok := err.(fieldErr); ok {
				f = field + "." + fe.fieldPath()
			}
			b.report.Add(key, invalidField(f, "%v; %s", err, what))
		}
		for j, to := range r.To {
			if to.GetOperation() == nil {
				continue
			}
			for k, h := range append(append([]string(nil), to.Operation.Hosts...), to.Operation.NotHosts...) {
				if _, port, ok := strings.Cut(strings.TrimPrefix(h, "["), ":"); ok && port != "" && !strings.Contains(port, ":") {
					b.report.Add(key, secMsg(status.Warning, status.SchemaWarning, status.ReasonInvalidSpec, fmt.Sprintf("%s.to[%d].operation.hosts[%d]", field, j, k),
						"the gateway strips the port from Host before authorization (as Istio's gateways do), so %q never matches; write the host without its port", h))
				}
			}
		}
	}
	return info
}

// --- attachment ---

// appliesToClass reports whether a policy without targetRefs applies to
// a gateway class: Istio's rules for a workload, with the class's
// namespaces standing in for the gateway pods' namespace (Portico's proxy
// classes are label sets; their namespace is where the Gateways that
// select them are, or the root namespace when none does).
func (b *builder) appliesToClass(p *policyTarget, labels map[string]string, namespaces map[string]bool) bool {
	if p.hasTargetRefs {
		return false
	}
	// In the root namespace a policy reaches every namespace, with or
	// without a selector (Istio: "if the policy is in the root namespace,
	// the selector will additionally match with workloads in all
	// namespaces") — the way Istio's gateway docs apply policies to the
	// ingress gateway: istio-system, selector istio: ingressgateway.
	inScope := p.namespace == b.rootNamespace() || namespaces[p.namespace]
	if len(p.selector) > 0 {
		return inScope && labelsMatch(p.selector, labels)
	}
	return inScope
}

// classNamespaces are the namespaces of the Gateways selecting a class, or
// the root namespace.
func (b *builder) classNamespaces(gateways []string) map[string]bool {
	out := map[string]bool{}
	for _, g := range gateways {
		ns, _, _ := strings.Cut(g, "/")
		out[ns] = true
	}
	if len(out) == 0 {
		out[b.rootNamespace()] = true
	}
	return out
}

// classPolicyKey names the policies applying to a class as a whole, so
// classes with the same Gateways but different policies are built apart.
func (b *builder) classPolicyKey(labels map[string]string, gateways []string) string {
	if b.sec == nil {
		return ""
	}
	ns := b.classNamespaces(gateways)
	var parts []string
	for _, p := range b.sec.ras {
		if b.appliesToClass(&p.policyTarget, labels, ns) {
			parts = append(parts, p.ref.String())
		}
	}
	for _, p := range b.sec.aps {
		if b.appliesToClass(&p.policyTarget, labels, ns) {
			parts = append(parts, p.ref.String())
		}
	}
	return strings.Join(parts, ",")
}

// attachSecurity gives every filter chain of a class the policies that
// apply to it: the class's, and those targeting a Gateway whose servers
// the chain carries.
func (b *builder) attachSecurity(st *classState, proxy *ir.Proxy) {
	if b.sec == nil {
		return
	}
	sec := b.sec
	ns := b.classNamespaces(proxy.Gateways)
	var classRAs []*raInfo
	var classAPs []*apInfo
	for _, p := range sec.ras {
		if b.appliesToClass(&p.policyTarget, st.labels, ns) {
			classRAs = append(classRAs, p)
			sec.attached[p.key] = true
		}
	}
	for _, p := range sec.aps {
		if b.appliesToClass(&p.policyTarget, st.labels, ns) {
			classAPs = append(classAPs, p)
			sec.attached[p.key] = true
		}
	}
	for _, l := range proxy.Listeners {
		for _, fc := range l.FilterChains {
			gws := map[string]bool{}
			for _, s := range fc.Sources {
				if s.Kind == resource.KindGateway {
					gws[s.Namespace+"/"+s.Name] = true
				}
			}
			ras, aps := classRAs, classAPs
			for _, p := range sec.ras {
				if hit := targetsAny(&p.policyTarget, gws); hit != "" {
					ras = append(ras, p)
					sec.attached[p.key] = true
					b.noteWiderThanTarget(&p.policyTarget, fc, gws, l.Port)
				}
			}
			for _, p := range sec.aps {
				if hit := targetsAny(&p.policyTarget, gws); hit != "" {
					aps = append(aps, p)
					sec.attached[p.key] = true
					b.noteWiderThanTarget(&p.policyTarget, fc, gws, l.Port)
				}
			}
			if len(ras) == 0 && len(aps) == 0 {
				continue
			}
			fc.Security = b.chainSecurity(ras, aps, fc.TCP != nil)
			if fc.Security == nil {
				continue
			}
			if fc.Security.JWT != nil {
				for _, p := range ras {
					fc.Sources = appendRef(fc.Sources, p.ref)
				}
			}
			for _, p := range aps {
				fc.Sources = appendRef(fc.Sources, p.ref)
			}
		}
	}
}

func targetsAny(p *policyTarget, gws map[string]bool) string {
	for _, t := range p.targets {
		if gws[t] {
			return t
		}
	}
	return ""
}

// noteWiderThanTarget warns when a targeted policy lands on a chain
// shared with servers of Gateways it does not target (plain-text HTTP
// servers of one port share one chain): it applies to them too.
func (b *builder) noteWiderThanTarget(p *policyTarget, fc *ir.FilterChain, gws map[string]bool, port uint32) {
	var others []string
	for g := range gws {
		if !contains(p.targets, g) {
			others = append(others, g)
		}
	}
	if len(others) == 0 {
		return
	}
	sort.Strings(others)
	b.report.Add(p.key, secMsg(status.Warning, status.PolicyBeyondTarget, status.ReasonConflictingServer, "spec.targetRefs",
		"port %d's listener is shared with servers of Gateway %s, so this policy applies to their requests too", port, strings.Join(others, ", ")))
}

// reportUnattached warns about policies that reach no gateway.
func (b *builder) reportUnattached() {
	if b.sec == nil {
		return
	}
	check := func(p *policyTarget) {
		if b.sec.attached[p.key] || p.hasTargetRefs {
			return
		}
		if len(p.selector) > 0 {
			b.report.Add(p.key, secMsg(status.Warning, status.NoMatchingWorkloadsFound, status.ReasonNoGateways, "spec.selector",
				"no gateway proxy in namespace %s has labels %s; Portico enforces policies at gateways only (a gateway's namespace is that of the Gateways selecting it, else %s)",
				p.namespace, ClassName(p.selector), b.rootNamespace()))
			return
		}
		b.report.Add(p.key, secMsg(status.Info, status.NoMatchingWorkloadsFound, status.ReasonNoGateways, "metadata.namespace",
			"applies to the workloads of namespace %s, where no gateway proxy runs; Portico enforces policies at gateways only", p.namespace))
	}
	for _, p := range b.sec.ras {
		check(&p.policyTarget)
	}
	for _, p := range b.sec.aps {
		check(&p.policyTarget)
	}
}

// chainSecurity builds the JWT providers and RBAC filters of a chain,
// shared between chains with the same policies.
func (b *builder) chainSecurity(ras []*raInfo, aps []*apInfo, tcp bool) *ir.Security {
	var keyParts []string
	for _, p := range ras {
		keyParts = append(keyParts, p.ref.String())
	}
	keyParts = append(keyParts, "|")
	for _, p := range aps {
		keyParts = append(keyParts, p.ref.String())
	}
	key := fmt.Sprintf("%t|%s", tcp, strings.Join(keyParts, ","))
	if s, ok := b.sec.cache[key]; ok {
		return s
	}
	out := &ir.Security{}
	var issuers []string
	if !tcp {
		var providers []*ir.JWTProvider
		for _, ra := range ras {
			for _, p := range ra.providers {
				cp := *p
				cp.Name = fmt.Sprintf("origins-%d", len(providers))
				providers = append(providers, &cp)
				if !contains(issuers, p.Issuer) {
					issuers = append(issuers, p.Issuer)
				}
			}
		}
		if len(providers) > 0 {
			out.JWT = &ir.JWTAuthn{Providers: providers}
		}
	}
	for _, action := range []ir.RBACAction{ir.RBACLog, ir.RBACDeny, ir.RBACAllow} {
		var policies []*ir.RBACPolicy
		found := false
		for _, ap := range aps {
			if ap.action != action {
				continue
			}
			found = true
			if len(ap.rules) == 0 {
				policies = append(policies, &ir.RBACPolicy{Name: policyName(ap.namespace, ap.key.Name, 0), Source: ap.ref,
					Permissions: []*ir.Permission{{Not: &ir.Permission{Any: true}}},
					Principals:  []*ir.Principal{{Not: &ir.Principal{Any: true}}}})
				continue
			}
			for i, r := range ap.rules {
				if r == nil {
					continue
				}
				pol, err := convertRule(r, ap.namespace, issuers, tcp, action, false)
				if err != nil || pol == nil {
					continue // reported by prepareAuthorizationPolicy
				}
				pol.Name, pol.Source = policyName(ap.namespace, ap.key.Name, i), ap.ref
				policies = append(policies, pol)
			}
		}
		if !found {
			continue
		}
		sort.Slice(policies, func(i, j int) bool { return policies[i].Name < policies[j].Name })
		out.RBAC = append(out.RBAC, &ir.RBAC{Action: action, Policies: policies})
	}
	if out.JWT == nil && len(out.RBAC) == 0 {
		out = nil
	}
	b.sec.cache[key] = out
	return out
}

func policyName(ns, name string, i int) string {
	return fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ns, name, i)
}

// --- rules: Istio's pilot/pkg/security/authz/model, on the IR ---

// fieldErr is an error that knows which field of a rule caused it.
type fieldErr interface {
	error
	fieldPath() string
}

type ruleError struct {
	path string
	msg  string
}

func (e *ruleError) Error() string     { return e.msg }
func (e *ruleError) fieldPath() string { return e.path }

type unknownKeyError struct{ ruleError }

// httpOnlyError marks a condition a TCP chain cannot evaluate.
type httpOnlyError struct{ ruleError }

// attr is one attribute condition of a rule: its values ORed, its not
// values negated.
type attr struct {
	field     string
	key       string
	values    []string
	notValues []string
	// perm or prin generates one value's matcher; ext generates one
	// matcher for all values (JWT claims).
	perm func(v string) (*ir.Permission, error)
	prin func(v string) (*ir.Principal, error)
	ext  func(vs []string) (*ir.Principal, error)
}

// convertRule turns one rule into an RBAC policy as istiod does. For
// ALLOW, a condition that cannot be generated (invalid, or HTTP-only on a
// TCP chain) drops the rule (a smaller allow); for DENY and AUDIT it drops
// the condition (a wider deny). An unknown when key drops the rule. With
// strict, every value is checked whatever the action (to report it).
func convertRule(r *authzapi.Rule, ns string, issuers []string, tcp bool, action ir.RBACAction, strict bool) (*ir.RBACPolicy, error) {
	var basePerm, basePrin []attr
	for i, w := range r.When {
		field := fmt.Sprintf("when[%d]", i)
		a := attr{field: field, key: w.Key, values: w.Values, notValues: w.NotValues}
		if len(w.Values) == 0 && len(w.NotValues) == 0 {
			return nil, &ruleError{field, fmt.Sprintf("condition %q has neither values nor notValues", w.Key)}
		}
		k := w.Key
		switch {
		case k == "destination.ip":
			a.perm = func(v string) (*ir.Permission, error) {
				c, err := cidr(v)
				return &ir.Permission{DestinationIP: c}, err
			}
			basePerm = append(basePerm, a)
		case k == "destination.port":
			a.perm = func(v string) (*ir.Permission, error) {
				p, err := port(v)
				return &ir.Permission{DestinationPort: p}, err
			}
			basePerm = append(basePerm, a)
		case k == "connection.sni":
			a.perm = func(v string) (*ir.Permission, error) {
				m := istioStringMatch(v, "")
				return &ir.Permission{ServerName: &m}, nil
			}
			basePerm = append(basePerm, a)
		case k == "source.ip":
			a.prin = func(v string) (*ir.Principal, error) {
				c, err := cidr(v)
				return &ir.Principal{DirectRemoteIP: c}, err
			}
			basePrin = append(basePrin, a)
		case k == "remote.ip":
			a.prin = func(v string) (*ir.Principal, error) {
				c, err := cidr(v)
				return &ir.Principal{RemoteIP: c}, err
			}
			basePrin = append(basePrin, a)
		case k == "source.namespace":
			a.prin = namespacePrincipal
			basePrin = append(basePrin, a)
		case k == "source.principal":
			a.prin = spiffePrincipal
			basePrin = append(basePrin, a)
		case k == "source.serviceAccount":
			a.prin = serviceAccountPrincipal(ns)
			basePrin = append(basePrin, a)
		case k == "source.trustDomain":
			a.prin = trustDomainPrincipal
			basePrin = append(basePrin, a)
		case k == "request.auth.principal":
			a.ext = requestPrincipals(issuers, tcp, k)
			basePrin = append(basePrin, a)
		case k == "request.auth.audiences":
			a.ext = claimPrincipal(issuers, []string{"aud"}, tcp, k)
			basePrin = append(basePrin, a)
		case k == "request.auth.presenter":
			a.ext = claimPrincipal(issuers, []string{"azp"}, tcp, k)
			basePrin = append(basePrin, a)
		case strings.HasPrefix(k, "request.headers"):
			name, ok := inBrackets(strings.TrimPrefix(k, "request.headers"))
			if !ok || name == "" {
				return nil, &ruleError{field + ".key", fmt.Sprintf("%q: want request.headers[<name>]", k)}
			}
			a.prin = func(v string) (*ir.Principal, error) {
				if tcp {
					return nil, httpOnly(field, k)
				}
				h := istioHeaderMatch(name, v, false)
				return &ir.Principal{Header: &h}, nil
			}
			basePrin = append(basePrin, a)
		case strings.HasPrefix(k, "request.auth.claims"):
			claims, ok := nestedBrackets(strings.TrimPrefix(k, "request.auth.claims"))
			if !ok {
				return nil, &ruleError{field + ".key", fmt.Sprintf("%q: want request.auth.claims[<name>] or request.auth.claims[<name>][<nested>]…", k)}
			}
			a.ext = claimPrincipal(issuers, claims, tcp, k)
			basePrin = append(basePrin, a)
		case strings.HasPrefix(k, "experimental.envoy.filters."):
			return nil, &unknownKeyError{ruleError{field + ".key", fmt.Sprintf("%q is not supported by Portico", k)}}
		default:
			return nil, &unknownKeyError{ruleError{field + ".key", fmt.Sprintf("unknown attribute %q", k)}}
		}
	}

	pol := &ir.RBACPolicy{}
	for i, from := range r.From {
		attrs := append([]attr(nil), basePrin...)
		if s := from.GetSource(); s != nil {
			f := fmt.Sprintf("from[%d].source.", i)
			// Istio inserts each at the front: the last listed comes first.
			front := []attr{
				{field: f + "principals", key: "source.principal", values: s.Principals, notValues: s.NotPrincipals, prin: spiffePrincipal},
				{field: f + "requestPrincipals", key: "request.auth.principal", values: s.RequestPrincipals, notValues: s.NotRequestPrincipals, ext: requestPrincipals(issuers, tcp, "requestPrincipals")},
				{field: f + "serviceAccounts", key: "source.serviceAccount", values: s.ServiceAccounts, notValues: s.NotServiceAccounts, prin: serviceAccountPrincipal(ns)},
				{field: f + "trustDomains", key: "source.trustDomain", values: s.TrustDomains, notValues: s.NotTrustDomains, prin: trustDomainPrincipal},
				{field: f + "namespaces", key: "source.namespace", values: s.Namespaces, notValues: s.NotNamespaces, prin: namespacePrincipal},
				{field: f + "remoteIpBlocks", key: "remote.ip", values: s.RemoteIpBlocks, notValues: s.NotRemoteIpBlocks, prin: func(v string) (*ir.Principal, error) {
					c, err := cidr(v)
					return &ir.Principal{RemoteIP: c}, err
				}},
				{field: f + "ipBlocks", key: "source.ip", values: s.IpBlocks, notValues: s.NotIpBlocks, prin: func(v string) (*ir.Principal, error) {
					c, err := cidr(v)
					return &ir.Principal{DirectRemoteIP: c}, err
				}},
			}
			attrs = append(setAttrs(front), attrs...)
		}
		p, err := principalOf(attrs, action, strict)
		if err != nil {
			return nil, err
		}
		pol.Principals = append(pol.Principals, p)
	}
	if len(r.From) == 0 {
		p, err := principalOf(basePrin, action, strict)
		if err != nil {
			return nil, err
		}
		pol.Principals = append(pol.Principals, p)
	}
	for i, to := range r.To {
		attrs := append([]attr(nil), basePerm...)
		if o := to.GetOperation(); o != nil {
			f := fmt.Sprintf("to[%d].operation.", i)
			front := []attr{
				{field: f + "hosts", key: "hosts", values: o.Hosts, notValues: o.NotHosts, perm: func(v string) (*ir.Permission, error) {
					if tcp {
						return nil, httpOnly(f+"hosts", "hosts")
					}
					h := istioHeaderMatch(":authority", v, true)
					return &ir.Permission{Header: &h}, nil
				}},
				{field: f + "methods", key: "methods", values: o.Methods, notValues: o.NotMethods, perm: func(v string) (*ir.Permission, error) {
					if tcp {
						return nil, httpOnly(f+"methods", "methods")
					}
					h := istioHeaderMatch(":method", v, false)
					return &ir.Permission{Header: &h}, nil
				}},
				{field: f + "paths", key: "paths", values: o.Paths, notValues: o.NotPaths, perm: func(v string) (*ir.Permission, error) {
					if tcp {
						return nil, httpOnly(f+"paths", "paths")
					}
					if strings.Contains(v, "{*}") || strings.Contains(v, "{**}") {
						if err := validPathTemplate(v); err != nil {
							return nil, err
						}
						return &ir.Permission{PathTemplate: strings.NewReplacer("{*}", "*", "{**}", "**").Replace(v)}, nil
					}
					m := istioStringMatch(v, "")
					return &ir.Permission{Path: &m}, nil
				}},
				{field: f + "ports", key: "ports", values: o.Ports, notValues: o.NotPorts, perm: func(v string) (*ir.Permission, error) {
					p, err := port(v)
					return &ir.Permission{DestinationPort: p}, err
				}},
			}
			attrs = append(setAttrs(front), attrs...)
		}
		p, err := permissionOf(attrs, action, strict)
		if err != nil {
			return nil, err
		}
		pol.Permissions = append(pol.Permissions, p)
	}
	if len(r.To) == 0 {
		p, err := permissionOf(basePerm, action, strict)
		if err != nil {
			return nil, err
		}
		pol.Permissions = append(pol.Permissions, p)
	}
	return pol, nil
}

// setAttrs are the attributes a source or operation sets (values or
// not-values).
func setAttrs(all []attr) []attr {
	var used []attr
	for _, a := range all {
		if len(a.values) > 0 || len(a.notValues) > 0 {
			used = append(used, a)
		}
	}
	return used
}

// keep decides what a generation error does: for ALLOW (or when checking)
// it fails the rule; otherwise the value is left out.
func keep(err error, action ir.RBACAction, strict bool) error {
	if err == nil {
		return nil
	}
	if strict {
		if _, ok := err.(*httpOnlyError); ok {
			return nil // not an error of the policy: it depends on the chain
		}
		return err
	}
	if action == ir.RBACAllow {
		return err
	}
	return nil
}

func permissionOf(attrs []attr, action ir.RBACAction, strict bool) (*ir.Permission, error) {
	var and []*ir.Permission
	for _, a := range attrs {
		for neg, vals := range [][]string{a.values, a.notValues} {
			var or []*ir.Permission
			for i, v := range vals {
				p, err := a.perm(v)
				if err != nil {
					err = withIndex(err, a.field, neg == 1, i)
				}
				if err := keep(err, action, strict); err != nil {
					return nil, err
				}
				if err == nil && p != nil {
					or = append(or, p)
				}
			}
			if len(or) == 0 {
				continue
			}
			m := &ir.Permission{Or: or}
			if neg == 1 {
				m = &ir.Permission{Not: m}
			}
			and = append(and, m)
		}
	}
	if len(and) == 0 {
		and = []*ir.Permission{{Any: true}}
	}
	return &ir.Permission{And: and}, nil
}

func principalOf(attrs []attr, action ir.RBACAction, strict bool) (*ir.Principal, error) {
	var and []*ir.Principal
	for _, a := range attrs {
		for neg, vals := range [][]string{a.values, a.notValues} {
			if len(vals) == 0 {
				continue
			}
			var m *ir.Principal
			if a.ext != nil {
				p, err := a.ext(vals)
				if err := keep(err, action, strict); err != nil {
					return nil, err
				}
				if err != nil || p == nil {
					continue
				}
				m = p
			} else {
				var or []*ir.Principal
				for i, v := range vals {
					p, err := a.prin(v)
					if err != nil {
						err = withIndex(err, a.field, neg == 1, i)
					}
					if err := keep(err, action, strict); err != nil {
						return nil, err
					}
					if err == nil && p != nil {
						or = append(or, p)
					}
				}
				if len(or) == 0 {
					continue
				}
				m = &ir.Principal{Or: or}
			}
			if neg == 1 {
				m = &ir.Principal{Not: m}
			}
			and = append(and, m)
		}
	}
	if len(and) == 0 {
		and = []*ir.Principal{{Any: true}}
	}
	return &ir.Principal{And: and}, nil
}

// withIndex names the value an error is about: from[0].source.ipBlocks[1],
// to[0].operation.notPaths[0], when[2].values[0].
func withIndex(err error, field string, not bool, i int) error {
	if _, ok := err.(fieldErr); ok {
		return err
	}
	var path string
	switch {
	case strings.HasPrefix(field, "when[") && not:
		path = fmt.Sprintf("%s.notValues[%d]", field, i)
	case strings.HasPrefix(field, "when["):
		path = fmt.Sprintf("%s.values[%d]", field, i)
	default:
		if not {
			dot := strings.LastIndexByte(field, '.')
			name := field[dot+1:]
			field = field[:dot+1] + "not" + strings.ToUpper(name[:1]) + name[1:]
		}
		path = fmt.Sprintf("%s[%d]", field, i)
	}
	return &ruleError{path, err.Error()}
}

func httpOnly(field, key string) error {
	return &httpOnlyError{ruleError{field, fmt.Sprintf("%q is HTTP only", key)}}
}

func cidr(v string) (string, error) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.String(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return "", fmt.Errorf("%q is not an IP address or CIDR", v)
	}
	return netip.PrefixFrom(a, a.BitLen()).String(), nil
}

func port(v string) (uint32, error) {
	p, err := strconv.ParseUint(v, 10, 32)
	if err != nil || p > 65535 {
		return 0, fmt.Errorf("invalid port %q", v)
	}
	return uint32(p), nil
}

// istioStringMatch is Istio's StringMatcherWithPrefix: "*" any non-empty
// value, "*x" a suffix, "x*" a prefix, else exact.
func istioStringMatch(v, prefix string) ir.StringMatch {
	switch {
	case v == "*":
		return ir.StringMatch{Type: ir.MatchRegex, Value: ".+"}
	case strings.HasPrefix(v, "*"):
		if prefix == "" {
			return ir.StringMatch{Type: ir.MatchSuffix, Value: v[1:]}
		}
		return ir.StringMatch{Type: ir.MatchRegex, Value: regexp.QuoteMeta(prefix) + ".*" + regexp.QuoteMeta(v[1:])}
	case strings.HasSuffix(v, "*"):
		return ir.StringMatch{Type: ir.MatchPrefix, Value: prefix + v[:len(v)-1]}
	}
	return ir.StringMatch{Type: ir.MatchExact, Value: prefix + v}
}

// istioHeaderMatch is Istio's HeaderMatcher (hosts: case-insensitive):
// "*" means present.
func istioHeaderMatch(name, v string, ignoreCase bool) ir.HeaderMatch {
	var m ir.StringMatch
	switch {
	case v == "*":
		m = ir.StringMatch{Type: ir.MatchPresent}
	case strings.HasPrefix(v, "*"):
		m = ir.StringMatch{Type: ir.MatchSuffix, Value: v[1:]}
	case strings.HasSuffix(v, "*"):
		m = ir.StringMatch{Type: ir.MatchPrefix, Value: v[:len(v)-1]}
	default:
		m = ir.StringMatch{Type: ir.MatchExact, Value: v}
	}
	if m.Type != ir.MatchPresent {
		m.IgnoreCase = ignoreCase
	}
	return ir.HeaderMatch{Name: name, Match: m}
}

func spiffePrincipal(v string) (*ir.Principal, error) {
	m := istioStringMatch(v, "spiffe://")
	return &ir.Principal{Authenticated: &m}, nil
}

func namespacePrincipal(v string) (*ir.Principal, error) {
	parts := strings.Split(v, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return &ir.Principal{Authenticated: &ir.StringMatch{Type: ir.MatchRegex, Value: ".*/ns/" + strings.Join(parts, ".*") + "/.*"}}, nil
}

func serviceAccountPrincipal(policyNS string) func(string) (*ir.Principal, error) {
	return func(v string) (*ir.Principal, error) {
		ns, sa, ok := strings.Cut(v, "/")
		if !ok {
			ns, sa = policyNS, v
		}
		if sa == "" || ns == "" {
			return nil, fmt.Errorf("%q: want <serviceAccount> or <namespace>/<serviceAccount>", v)
		}
		return &ir.Principal{Authenticated: &ir.StringMatch{Type: ir.MatchRegex,
			Value: fmt.Sprintf("spiffe://.+/ns/%s/(.+/|)sa/%s(/.+)?", regexp.QuoteMeta(ns), regexp.QuoteMeta(sa))}}, nil
	}
}

func trustDomainPrincipal(v string) (*ir.Principal, error) {
	switch {
	case v == "*":
		return &ir.Principal{Authenticated: &ir.StringMatch{Type: ir.MatchPrefix, Value: "spiffe://"}}, nil
	case !strings.Contains(v, "*"):
		return &ir.Principal{Authenticated: &ir.StringMatch{Type: ir.MatchPrefix, Value: "spiffe://" + v + "/"}}, nil
	}
	parts := strings.SplitN(v, "*", 2)
	return &ir.Principal{Authenticated: &ir.StringMatch{Type: ir.MatchRegex,
		Value: "spiffe://" + regexp.QuoteMeta(parts[0]) + "[^/]*" + regexp.QuoteMeta(parts[1]) + "/.*"}}, nil
}

// neverPrincipal matches nothing: a JWT condition with no issuer that
// could satisfy it.
func neverPrincipal() *ir.Principal { return &ir.Principal{Not: &ir.Principal{Any: true}} }

// requestPrincipals matches "iss/sub" values against the verified tokens
// of the issuers configured on the chain: jwt_authn stores a payload under
// its issuer (payload_in_metadata), so the issuer part selects the
// metadata key and the subject part matches its "sub".
func requestPrincipals(issuers []string, tcp bool, key string) func([]string) (*ir.Principal, error) {
	return func(values []string) (*ir.Principal, error) {
		if tcp {
			return nil, httpOnly(key, key)
		}
		var or []*ir.Principal
		for _, v := range values {
			iss, sub, found := "", "", false
			if i := strings.LastIndex(v, "/"); i >= 0 {
				iss, sub, found = v[:i], v[i+1:], true
			} else {
				iss = v
			}
			var issM, subM ir.StringMatch
			anyM := ir.StringMatch{Type: ir.MatchRegex, Value: ".+"}
			switch {
			case v == "*":
				issM, subM = anyM, anyM
			case strings.HasPrefix(v, "*"):
				if found {
					issM = ir.StringMatch{Type: ir.MatchSuffix, Value: strings.TrimPrefix(iss, "*")}
					if iss == "*" {
						issM = anyM
					}
					subM = ir.StringMatch{Type: ir.MatchExact, Value: sub}
				} else {
					issM, subM = anyM, ir.StringMatch{Type: ir.MatchSuffix, Value: strings.TrimPrefix(v, "*")}
				}
			case strings.HasSuffix(v, "*"):
				if found {
					issM = ir.StringMatch{Type: ir.MatchExact, Value: iss}
					subM = ir.StringMatch{Type: ir.MatchPrefix, Value: strings.TrimSuffix(sub, "*")}
					if sub == "*" {
						subM = anyM
					}
				} else {
					issM, subM = ir.StringMatch{Type: ir.MatchPrefix, Value: strings.TrimSuffix(v, "*")}, anyM
				}
			default:
				issM, subM = ir.StringMatch{Type: ir.MatchExact, Value: iss}, ir.StringMatch{Type: ir.MatchExact, Value: sub}
			}
			for _, is := range issuers {
				if !matchStatic(issM, is) {
					continue
				}
				or = append(or, &ir.Principal{Metadata: &ir.MetadataMatch{Filter: JWTFilter, Path: []string{is, "sub"}, Value: subM}})
			}
		}
		switch len(or) {
		case 0:
			return neverPrincipal(), nil
		case 1:
			return or[0], nil
		}
		return &ir.Principal{Or: or}, nil
	}
}

// claimPrincipal matches a (nested) claim of a verified token of any
// configured issuer: a string claim equal to a value, or a list claim
// containing one.
func claimPrincipal(issuers, claims []string, tcp bool, key string) func([]string) (*ir.Principal, error) {
	return func(values []string) (*ir.Principal, error) {
		if tcp {
			return nil, httpOnly(key, key)
		}
		var or []*ir.Principal
		for _, is := range issuers {
			for _, v := range values {
				or = append(or, &ir.Principal{Metadata: &ir.MetadataMatch{Filter: JWTFilter,
					Path: append([]string{is}, claims...), Value: istioStringMatch(v, ""), OrList: true}})
			}
		}
		switch len(or) {
		case 0:
			return neverPrincipal(), nil
		case 1:
			return or[0], nil
		}
		return &ir.Principal{Or: or}, nil
	}
}

// matchStatic evaluates a string match on a known value.
func matchStatic(m ir.StringMatch, s string) bool {
	switch m.Type {
	case ir.MatchExact:
		return s == m.Value
	case ir.MatchPrefix:
		return strings.HasPrefix(s, m.Value)
	case ir.MatchSuffix:
		return strings.HasSuffix(s, m.Value)
	case ir.MatchRegex:
		re, err := regexp.Compile("^(?:" + m.Value + ")$")
		return err == nil && re.MatchString(s)
	}
	return false
}

func inBrackets(s string) (string, bool) {
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		return "", false
	}
	return s[1 : len(s)-1], true
}

// nestedBrackets splits "[a][b]" into [a b]; "[a.b]" stays one claim, as
// in Istio.
func nestedBrackets(s string) ([]string, bool) {
	var out []string
	for len(s) > 0 {
		if s[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(s, ']')
		if end < 0 || strings.IndexByte(s[1:end], '[') >= 0 || end == 1 {
			return nil, false
		}
		out = append(out, s[1:end])
		s = s[end+1:]
	}
	return out, len(out) > 0
}

var validLiteral = regexp.MustCompile(`^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$`)

// validPathTemplate is Istio's check of {*} / {**} paths: {**} last,
// no other braces, literal segments made of URI path characters.
func validPathTemplate(path string) error {
	seenAny := false
	for _, glob := range strings.Split(strings.Trim(path, "/"), "/") {
		switch {
		case (glob == "{*}" || glob == "{**}") && seenAny:
			return fmt.Errorf("invalid path template %q: {**} must be the last operator", path)
		case glob == "{*}":
			continue
		case glob == "{**}":
			seenAny = true
			continue
		case strings.ContainsAny(glob, "{}"):
			return fmt.Errorf("invalid path template %q: only whole segments {*} and {**} are supported", path)
		case !validLiteral.MatchString(glob):
			return fmt.Errorf("invalid path template %q: segment %q has characters a path template cannot match", path, glob)
		}
	}
	return nil
}
