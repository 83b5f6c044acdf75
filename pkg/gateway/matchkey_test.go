package gateway

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	networkingapi "istio.io/api/networking/v1alpha3"
)

// randomStringMatch is one of a few string matches (so that equal ones
// come up), or nil.
func randomStringMatch(r *rand.Rand) *networkingapi.StringMatch {
	v := []string{"", "/a", "/b"}[r.IntN(3)]
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: v}}
	case 2:
		return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Prefix{Prefix: v}}
	default:
		return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: v}}
	}
}

func randomStringMatches(r *rand.Rand) map[string]*networkingapi.StringMatch {
	if r.IntN(2) == 0 {
		return nil
	}
	m := map[string]*networkingapi.StringMatch{}
	for range r.IntN(3) {
		m[[]string{"x", "y", "z"}[r.IntN(3)]] = randomStringMatch(r)
	}
	return m
}

func randomHTTPMatch(r *rand.Rand) *networkingapi.HTTPMatchRequest {
	if r.IntN(10) == 0 {
		return nil
	}
	m := &networkingapi.HTTPMatchRequest{}
	if r.IntN(3) == 0 {
		m.Name = []string{"a", "b"}[r.IntN(2)]
	}
	if r.IntN(2) == 0 {
		m.Uri = randomStringMatch(r)
	}
	if r.IntN(3) == 0 {
		m.Method = randomStringMatch(r)
	}
	m.Headers = randomStringMatches(r)
	if r.IntN(3) == 0 {
		m.QueryParams = randomStringMatches(r)
	}
	if r.IntN(3) == 0 {
		m.WithoutHeaders = randomStringMatches(r)
	}
	if r.IntN(4) == 0 {
		m.Port = uint32(r.IntN(2) * 80)
	}
	if r.IntN(4) == 0 {
		m.IgnoreUriCase = r.IntN(2) == 0
	}
	if r.IntN(4) == 0 {
		m.SourceLabels = map[string]string{"app": []string{"", "a"}[r.IntN(2)]}
	}
	if r.IntN(4) == 0 {
		m.Gateways = []string{"gw"}[:r.IntN(2)]
	}
	return m
}

// TestMatchKeyEqualsJSON checks that two random matches get the same key
// exactly when Istio's analyzer, which compares their JSON (name
// cleared), finds them equal.
func TestMatchKeyEqualsJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	jsonKey := func(m *networkingapi.HTTPMatchRequest) string {
		if m != nil {
			c := m.DeepCopy()
			c.Name = ""
			m = c
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var ms []*networkingapi.HTTPMatchRequest
	for range 400 {
		ms = append(ms, randomHTTPMatch(r))
	}
	equal := 0
	for i, a := range ms {
		for _, b := range ms[i+1:] {
			byJSON := jsonKey(a) == jsonKey(b)
			if byKey := httpMatchOf(a) == httpMatchOf(b); byKey != byJSON {
				t.Fatalf("matches %v and %v: equal by key %v, by JSON %v", a, b, byKey, byJSON)
			}
			if byJSON {
				equal++
			}
		}
	}
	if equal < 100 {
		t.Fatalf("only %d equal pairs: the generator does not exercise equality", equal)
	}
	for _, m := range []*networkingapi.L4MatchAttributes{nil, {}, {Port: 80}, {Port: 80, SourceLabels: map[string]string{"a": "b"}}} {
		for _, o := range []*networkingapi.L4MatchAttributes{nil, {}, {Port: 80}, {Port: 80, SourceLabels: map[string]string{"a": "b"}}} {
			a, _ := json.Marshal(m)
			b, _ := json.Marshal(o)
			if (string(a) == string(b)) != (matchOf(m) == matchOf(o)) {
				t.Errorf("L4 matches %v, %v: key and JSON disagree", m, o)
			}
		}
	}
}
