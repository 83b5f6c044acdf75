package randconfig

// Random RequestAuthentications and AuthorizationPolicies, so that the
// differential tests (incremental build = fresh build after every random
// edit) cover policy attachment and translation too: selectors that match
// some proxy classes and not others, the root namespace, targetRefs to
// Gateways that come and go, every action, rules with HTTP-only and
// network parts.

// sampleJWKS is Istio's public sample key set
// (security/tools/jwt/samples/jwks.json), inline so no fetch happens.
const sampleJWKS = `{"keys":[{"e":"AQAB","kid":"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ","kty":"RSA","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}`

func (w *World) policyTarget(spec map[string]any) {
	switch w.rng.IntN(4) {
	case 0: // no selector: the namespace (everything, in the root namespace)
	case 1:
		spec["selector"] = map[string]any{"matchLabels": map[string]any{"istio": "ingressgateway"}}
	case 2:
		spec["selector"] = map[string]any{"matchLabels": map[string]any{"tier": "edge"}}
	default:
		spec["targetRefs"] = []any{map[string]any{"kind": "Gateway", "group": "networking.istio.io", "name": w.pick("gw-0", "gw-1", "gw-2")}}
	}
}

func (w *World) requestAuthentication() map[string]any {
	spec := map[string]any{}
	w.policyTarget(spec)
	var rules []any
	for range 1 + w.rng.IntN(2) {
		rule := map[string]any{"issuer": w.pick("testing@secure.istio.io", "iss-b"), "jwks": sampleJWKS}
		if w.chance(0.3) {
			rule["audiences"] = []any{w.pick("aud-a", "aud-b")}
		}
		if w.chance(0.3) {
			rule["fromHeaders"] = []any{map[string]any{"name": "x-jwt", "prefix": "Bearer "}}
		}
		if w.chance(0.2) {
			rule["forwardOriginalToken"] = true
		}
		rules = append(rules, rule)
	}
	spec["jwtRules"] = rules
	return map[string]any{"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
		"metadata": meta(w.pick("istio-system", "default", "ns-a"), w.pick("jwt-a", "jwt-b")), "spec": spec}
}

func (w *World) authzRule() map[string]any {
	rule := map[string]any{}
	if w.chance(0.6) {
		src := map[string]any{}
		switch w.rng.IntN(3) {
		case 0:
			src["requestPrincipals"] = []any{w.pick("*", "testing@secure.istio.io/testing@secure.istio.io", "iss-b/*")}
		case 1:
			src["ipBlocks"] = []any{w.pick("10.0.0.0/8", "192.168.1.1")}
		default:
			src["notRemoteIpBlocks"] = []any{"203.0.113.0/24"}
		}
		rule["from"] = []any{map[string]any{"source": src}}
	}
	if w.chance(0.6) {
		op := map[string]any{}
		switch w.rng.IntN(4) {
		case 0:
			op["paths"] = []any{w.pick("/admin*", "/api/{*}/v1", "*/health", "/exact")}
		case 1:
			op["methods"] = []any{w.pick("GET", "POST")}
		case 2:
			op["hosts"] = []any{w.pick(vsHosts...)}
		default:
			op["ports"] = []any{w.pick("80", "443", "3306")}
		}
		rule["to"] = []any{map[string]any{"operation": op}}
	}
	if w.chance(0.3) {
		rule["when"] = []any{map[string]any{"key": w.pick("request.auth.claims[role]", "request.headers[x-team]", "source.ip"),
			"values": []any{w.pick("customer", "10.1.2.3")}}}
	}
	return rule
}

func (w *World) authorizationPolicy() map[string]any {
	spec := map[string]any{}
	w.policyTarget(spec)
	if !w.chance(0.1) { // else spec without rules: ALLOW denies everything
		spec["action"] = w.pick("ALLOW", "ALLOW", "DENY", "AUDIT")
		var rules []any
		for range w.rng.IntN(3) {
			rules = append(rules, w.authzRule())
		}
		if len(rules) > 0 {
			spec["rules"] = rules
		}
	}
	return map[string]any{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": meta(w.pick("istio-system", "default", "ns-a"), w.pick("authz-a", "authz-b", "authz-c")), "spec": spec}
}

func spec(doc map[string]any) map[string]any {
	s, _ := doc["spec"].(map[string]any)
	if s == nil {
		s = map[string]any{}
		doc["spec"] = s
	}
	return s
}

var requestAuthTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) {
		s := spec(doc)
		delete(s, "selector")
		delete(s, "targetRefs")
		w.policyTarget(s)
	},
	func(w *World, doc map[string]any) {
		for _, r := range asList(spec(doc)["jwtRules"]) {
			r.(map[string]any)["issuer"] = w.pick("testing@secure.istio.io", "iss-b", "iss-c")
		}
	},
}

var authzTweaks = []func(w *World, doc map[string]any){
	func(w *World, doc map[string]any) {
		s := spec(doc)
		delete(s, "selector")
		delete(s, "targetRefs")
		w.policyTarget(s)
	},
	func(w *World, doc map[string]any) { spec(doc)["action"] = w.pick("ALLOW", "DENY", "AUDIT") },
	func(w *World, doc map[string]any) { spec(doc)["rules"] = []any{w.authzRule()} },
	func(w *World, doc map[string]any) {
		spec(doc)["rules"] = append(asList(spec(doc)["rules"]), w.authzRule())
	},
}
