package gatewayapi

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// finishNames prepares Rename: binder messages name synthetic objects,
// which users never wrote.
func (o *Output) finishNames() {
	var pairs []string
	for _, gs := range o.gateways {
		for _, ls := range gs.listeners {
			if ls.syn == nil {
				continue
			}
			pairs = append(pairs, "Gateway "+ls.synKey.NamespacedName(),
				fmt.Sprintf("Gateway API Gateway %s/%s (listener %s)", gs.obj.Namespace, gs.obj.Name, ls.name()))
		}
	}
	for _, vs := range o.VirtualServices {
		ns, name := vs.Namespace, vs.Name
		var desc string
		if gw, rest, ok := strings.Cut(name, "~"); ok {
			switch gw {
			case "tlsroute", "tcproute":
				desc = fmt.Sprintf("the rules of %s %s/%s", map[string]string{"tlsroute": "TLSRoute", "tcproute": "TCPRoute"}[gw], ns, rest)
			default:
				port, host, _ := strings.Cut(rest, "~")
				desc = fmt.Sprintf("the routes for %s on port %s of Gateway API Gateway %s/%s", host, port, ns, gw)
			}
		}
		pairs = append(pairs, "VirtualService "+ns+"/"+name, desc)
	}
	// Longest first, so no name is replaced inside a longer one.
	type pair struct{ from, to string }
	var ps []pair
	for i := 0; i+1 < len(pairs); i += 2 {
		ps = append(ps, pair{pairs[i], pairs[i+1]})
	}
	sort.SliceStable(ps, func(i, j int) bool { return len(ps[i].from) > len(ps[j].from) })
	var flat []string
	for _, p := range ps {
		flat = append(flat, p.from, p.to)
	}
	o.renameRepl = strings.NewReplacer(flat...)
}

// Rename rewrites a binder message so it names the Gateway API objects
// behind synthetic ones.
func (o *Output) Rename(s string) string {
	if o.renameRepl == nil {
		return s
	}
	return o.renameRepl.Replace(s)
}

// RenameStatuses rewrites, in place, the messages of statuses of
// objects users wrote (an Istio Gateway conflicting with a Gateway API
// listener names the listener, not its synthetic Istio Gateway).
func (o *Output) RenameStatuses(statuses []*status.Status) {
	for _, st := range statuses {
		for i := range st.Messages {
			st.Messages[i].Message = o.Rename(st.Messages[i].Message)
		}
		// Conditions may be shared between statuses (status.Finalize):
		// copied before the first change.
		copied := false
		for i := range st.Conditions {
			m := o.Rename(st.Conditions[i].Message)
			if m == st.Conditions[i].Message {
				continue
			}
			if !copied {
				st.Conditions, copied = slices.Clone(st.Conditions), true
			}
			st.Conditions[i].Message = m
		}
	}
}

var sectionIndex = regexp.MustCompile(`^spec\.(http|tls|tcp)\[(\d+)\]`)

// Finish maps the binder's statuses of the synthetic objects onto the
// Gateway API objects and returns their statuses, sorted by key.
func (o *Output) Finish(statuses []*status.Status) []*status.APIStatus {
	byKey := map[resource.Key]*status.Status{}
	for _, st := range statuses {
		if _, ok := o.synthetic[st.Key]; ok {
			byKey[st.Key] = st
		}
	}
	// In key order: several synthetic objects can report onto one route
	// or listener, whose condition keeps the first finding, so the order
	// must not be a map's (it made the same input give two statuses).
	keys := make([]resource.Key, 0, len(o.synthetic))
	for key := range o.synthetic {
		keys = append(keys, key)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, key := range keys {
		org := o.synthetic[key]
		st := byKey[key]
		if st == nil {
			continue
		}
		switch {
		case org.listener != nil:
			o.listenerFindings(org.listener, st)
		case len(org.policies) > 0:
			for _, m := range st.Messages {
				if m.Level != status.Error {
					continue
				}
				// A finding on one policy's part of the shared rule is
				// that policy's; others are every policy's.
				blame := org.policies
				for prefix, ps := range org.policyFields {
					if strings.HasPrefix(m.Field, prefix) {
						blame = []*policyState{ps}
					}
				}
				for _, ps := range blame {
					ps.accepted.fail(string(gwv1.PolicyReasonInvalid), "%s", o.Rename(m.String()))
				}
			}
		default:
			o.routeFindings(org, st)
		}
	}
	var out []*status.APIStatus
	for _, cs := range o.classes {
		out = append(out, &status.APIStatus{Key: resource.KeyOf(cs.obj), Status: cs.status})
	}
	for _, gs := range o.gateways {
		out = append(out, &status.APIStatus{Key: resource.KeyOf(gs.obj), Status: gs.status()})
	}
	for _, rs := range o.routes {
		out = append(out, &status.APIStatus{Key: rs.key, Status: o.routeStatus(rs)})
	}
	for _, ps := range o.policies {
		if st := o.policyStatus(ps); st != nil {
			out = append(out, &status.APIStatus{Key: ps.key, Status: st})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.String() < out[j].Key.String() })
	return out
}

func (o *Output) listenerFindings(ls *listenerState, st *status.Status) {
	for _, m := range st.Messages {
		if m.Level != status.Error || m.Field == "spec.servers" {
			// "no valid server" is the consequence of the finding on the
			// server itself, which says why.
			continue
		}
		msg := o.Rename(m.String())
		switch m.Reason {
		case status.ReasonConflictingServer:
			reason := string(gwv1.ListenerReasonHostnameConflict)
			if strings.Contains(m.Message, "is already served as") {
				reason = string(gwv1.ListenerReasonProtocolConflict)
			}
			ls.conflicted.fail(reason, "%s", msg)
			if st.Rejected() {
				ls.accepted.fail(reason, "%s", msg)
			}
		case status.ReasonSecretNotFound, status.ReasonInvalidCertificate:
			ls.resolved.fail(string(gwv1.ListenerReasonInvalidCertificateRef), "%s", msg)
		case status.ReasonEnvoyValidation:
			ls.programmed.fail(string(gwv1.ListenerReasonInvalid), "%s", msg)
		default:
			ls.accepted.fail(string(gwv1.ListenerReasonUnsupportedValue), "%s", msg)
		}
	}
	if st.Rejected() {
		ls.programmed.fail(string(gwv1.ListenerReasonInvalid), "the listener's configuration is not used: %s", o.Rename(st.Conditions[0].Message))
	}
}

func (o *Output) routeFindings(org *origin, st *status.Status) {
	if st.Rejected() {
		msg := ""
		if c := st.Condition(status.Accepted); c != nil {
			msg = o.Rename(c.Message)
		}
		for _, list := range [][]*routeState{org.http, org.tls, org.tcp} {
			for _, rs := range list {
				rs.bindFail.fail(string(gwv1.RouteReasonUnsupportedValue), "%s", msg)
			}
		}
		return
	}
	for _, m := range st.Messages {
		if m.Level != status.Error {
			continue
		}
		sub := sectionIndex.FindStringSubmatch(m.Field)
		if sub == nil {
			continue
		}
		i, _ := strconv.Atoi(sub[2])
		list := map[string][]*routeState{"http": org.http, "tls": org.tls, "tcp": org.tcp}[sub[1]]
		if i < len(list) {
			list[i].partial.fail(string(gwv1.RouteReasonUnsupportedValue), "%s", o.Rename(m.String()))
		}
	}
}

func (c condState) condition(typ string, okReason, okMessage string, gen int64) metav1.Condition {
	if c.bad {
		return condition(typ, false, c.reason, c.message, gen)
	}
	return condition(typ, true, okReason, okMessage, gen)
}

func (gs *gatewayState) status() *gwv1.GatewayStatus {
	gw := gs.obj
	gen := gw.Generation
	st := &gwv1.GatewayStatus{}
	valid, programmed, unresolved := 0, 0, 0
	for _, ls := range gs.listeners {
		lst := gwv1.ListenerStatus{Name: ls.l.Name, SupportedKinds: ls.kinds, AttachedRoutes: ls.attached}
		if gs.notAccepted != nil {
			ls.accepted.fail(gs.notAccepted.Reason, "%s", gs.notAccepted.Message)
		}
		prog := ls.programmed
		switch {
		case ls.accepted.bad:
			prog.fail(string(gwv1.ListenerReasonInvalid), "not accepted: %s", ls.accepted.message)
		case ls.syn == nil && ls.resolved.bad:
			prog.fail(string(gwv1.ListenerReasonInvalid), "unresolved references: %s", ls.resolved.message)
		case ls.syn == nil:
			prog.fail(string(gwv1.ListenerReasonInvalid), "the listener cannot be programmed")
		}
		conflicted := condition(string(gwv1.ListenerConditionConflicted), false, string(gwv1.ListenerReasonNoConflicts), "No conflicts", gen)
		if ls.conflicted.bad {
			conflicted = condition(string(gwv1.ListenerConditionConflicted), true, ls.conflicted.reason, ls.conflicted.message, gen)
		}
		lst.Conditions = []metav1.Condition{
			ls.accepted.condition(string(gwv1.ListenerConditionAccepted), string(gwv1.ListenerReasonAccepted), "Listener is valid", gen),
			prog.condition(string(gwv1.ListenerConditionProgrammed), string(gwv1.ListenerReasonProgrammed), "Listener is programmed on the proxies selected by "+selectorText(gs.selector), gen),
			ls.resolved.condition(string(gwv1.ListenerConditionResolvedRefs), string(gwv1.ListenerReasonResolvedRefs), "All references resolved", gen),
			conflicted,
		}
		if !ls.accepted.bad {
			valid++
		}
		if !prog.bad {
			programmed++
		}
		if ls.resolved.bad {
			unresolved++
		}
		st.Listeners = append(st.Listeners, lst)
	}
	var accepted, prog metav1.Condition
	switch {
	case gs.notAccepted != nil:
		accepted = *gs.notAccepted
	case valid == len(gs.listeners):
		accepted = condition(string(gwv1.GatewayConditionAccepted), true, string(gwv1.GatewayReasonAccepted), "Gateway is valid", gen)
	case valid > 0:
		accepted = condition(string(gwv1.GatewayConditionAccepted), true, string(gwv1.GatewayReasonListenersNotValid),
			fmt.Sprintf("%d of %d listeners are not valid", len(gs.listeners)-valid, len(gs.listeners)), gen)
	default:
		accepted = condition(string(gwv1.GatewayConditionAccepted), false, string(gwv1.GatewayReasonListenersNotValid), "no listener is valid", gen)
	}
	if programmed > 0 {
		prog = condition(string(gwv1.GatewayConditionProgrammed), true, string(gwv1.GatewayReasonProgrammed),
			"Programmed on the proxies selected by "+selectorText(gs.selector), gen)
	} else {
		prog = condition(string(gwv1.GatewayConditionProgrammed), false, string(gwv1.GatewayReasonInvalid), "no listener can be programmed", gen)
	}
	resolved := condition(string(gwv1.GatewayConditionResolvedRefs), true, string(gwv1.GatewayReasonResolvedRefs), "All references resolved", gen)
	if unresolved > 0 {
		resolved = condition(string(gwv1.GatewayConditionResolvedRefs), false, string(gwv1.GatewayReasonListenersNotResolved),
			fmt.Sprintf("%d listeners have unresolved references", unresolved), gen)
	}
	st.Conditions = []metav1.Condition{accepted, prog, resolved}
	if insecureFrontendValidation(gs.obj) {
		st.Conditions = append(st.Conditions, condition(string(gwv1.GatewayConditionInsecureFrontendValidationMode), true,
			string(gwv1.GatewayReasonConfigurationChanged),
			"spec.tls.frontend allows clients without a valid certificate (mode AllowInsecureFallback): authorize clients in the backends", gen))
	}
	return st
}

func selectorText(l map[string]string) string {
	keys := sortedKeys(l)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + l[k]
	}
	return strings.Join(parts, ",")
}

func (o *Output) routeStatus(rs *routeState) *gwv1.RouteStatus {
	gen := rs.obj.GetGeneration()
	st := &gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{}}
	for _, ps := range rs.parents {
		acc := ps.accepted
		if !acc.bad && rs.bindFail.bad {
			acc = rs.bindFail
		}
		p := gwv1.RouteParentStatus{ParentRef: ps.ref, ControllerName: gwv1.GatewayController(o.opts.ControllerName)}
		p.Conditions = []metav1.Condition{
			acc.condition(string(gwv1.RouteConditionAccepted), string(gwv1.RouteReasonAccepted), "Route is accepted", gen),
			rs.resolved.condition(string(gwv1.RouteConditionResolvedRefs), string(gwv1.RouteReasonResolvedRefs), "All references resolved", gen),
		}
		if rs.partial.bad {
			p.Conditions = append(p.Conditions, condition(string(gwv1.RouteConditionPartiallyInvalid), true, rs.partial.reason, rs.partial.message, gen))
		}
		st.Parents = append(st.Parents, p)
	}
	return st
}

// policyStatus reports a BackendTLSPolicy on every Gateway of ours with
// a route sending to one of its Services; nil when there is none (then
// the policy is nobody's business here).
func (o *Output) policyStatus(ps *policyState) *gwv1.PolicyStatus {
	gen := ps.obj.Generation
	var ancestors []*gatewayState
	for _, rs := range o.routes {
		uses := false
		for _, t := range ps.obj.Spec.TargetRefs {
			for h := range rs.backends {
				if strings.HasPrefix(h, string(t.Name)+"."+ps.obj.Namespace+".svc.") {
					uses = true
				}
			}
		}
		if !uses {
			continue
		}
		for _, p := range rs.parents {
			if !containsGateway(ancestors, p.gw) {
				ancestors = append(ancestors, p.gw)
			}
		}
	}
	if len(ancestors) == 0 {
		return nil
	}
	sort.Slice(ancestors, func(i, j int) bool {
		return ancestors[i].obj.Namespace+"/"+ancestors[i].obj.Name < ancestors[j].obj.Namespace+"/"+ancestors[j].obj.Name
	})
	st := &gwv1.PolicyStatus{}
	acc := ps.accepted
	if !acc.bad && ps.resolved.bad {
		acc.fail(string(gwv1.BackendTLSPolicyReasonNoValidCACertificate), "%s", ps.resolved.message)
	}
	for _, gs := range ancestors {
		g, k, ns := gwv1.Group(resource.GatewayAPIGroup), gwv1.Kind(resource.KindGateway), gwv1.Namespace(gs.obj.Namespace)
		st.Ancestors = append(st.Ancestors, gwv1.PolicyAncestorStatus{
			AncestorRef:    gwv1.ParentReference{Group: &g, Kind: &k, Namespace: &ns, Name: gwv1.ObjectName(gs.obj.Name)},
			ControllerName: gwv1.GatewayController(o.opts.ControllerName),
			Conditions: []metav1.Condition{
				acc.condition(string(gwv1.PolicyConditionAccepted), string(gwv1.PolicyReasonAccepted), "Policy is accepted", gen),
				ps.resolved.condition(string(gwv1.BackendTLSPolicyConditionResolvedRefs), string(gwv1.BackendTLSPolicyReasonResolvedRefs), "All references resolved", gen),
			},
		})
	}
	return st
}

func containsGateway(list []*gatewayState, g *gatewayState) bool {
	for _, x := range list {
		if x == g {
			return true
		}
	}
	return false
}
