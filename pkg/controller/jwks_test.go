package controller_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/jwks"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/xds"
)

// The seed 002 RequestAuthentication's jwksUri, served on loopback: the
// first build inlines the fail-closed key (the fetch has not finished),
// the fetch rebuilds with Istio's sample keys without any resource
// change, and a rotated key set reaches the proxy configuration likewise.
func TestJWKSFetchRebuilds(t *testing.T) {
	sample, err := os.ReadFile("../jwks/testdata/istio-sample-jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var body atomic.Value
	body.Store(strings.TrimSpace(string(sample)))
	gate := make(chan struct{}) // holds the first fetch until the first build is seen
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		w.Write([]byte(body.Load().(string)))
	}))
	defer srv.Close()
	defer once.Do(func() { close(gate) })

	in, err := os.ReadFile("../gateway/testdata/seed-002-auth.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res := testenv.Resources(t, strings.ReplaceAll(string(in), "http://127.0.0.1:8443/jwks.json", srv.URL+"/jwks.json"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	server := xds.NewServer(logr.Discard(), gateway.ClassName)
	labels := map[string]string{"istio": "ingressgateway"}
	ctrl := controller.New(logr.Discard(), server, nil, controller.Options{StaticClasses: []map[string]string{labels},
		JWKS: jwks.Options{Refresh: 20 * time.Millisecond}})
	done := make(chan struct{})
	go func() { ctrl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	ctrl.Update(res)

	keys := func() string {
		st := ctrl.State()
		if st == nil {
			return ""
		}
		p := st.Result.Proxy(labels)
		for _, l := range p.Listeners {
			for _, fc := range l.FilterChains {
				if fc.Security != nil && fc.Security.JWT != nil {
					return fc.Security.JWT.Providers[0].JWKS
				}
			}
		}
		return "none"
	}
	waitFor(t, "the first build, with the fail-closed key", func() bool { return keys() == jwks.FailClosedJWKS })
	if st := findStatus(ctrl, resource.KindRequestAuthentication, "bookjwt"); !strings.Contains(st, "being fetched") {
		t.Errorf("status before the fetch: %s", st)
	}
	once.Do(func() { close(gate) })
	waitFor(t, "the fetched key set", func() bool { return keys() == body.Load().(string) })
	if st := findStatus(ctrl, resource.KindRequestAuthentication, "bookjwt"); strings.Contains(st, "fetch") {
		t.Errorf("status after the fetch still mentions it: %s", st)
	}
	rotated := `{"keys":[{"kty":"RSA","kid":"rotated","e":"AQAB","n":"xAE7"}]}`
	body.Store(rotated)
	waitFor(t, "the rotated key set", func() bool { return keys() == rotated })
}

// findStatus renders a resource's validation messages of the last build.
func findStatus(c *controller.Controller, kind, name string) string {
	st := c.State()
	if st == nil {
		return ""
	}
	var out []string
	for _, s := range st.Result.Statuses {
		if s.Key.Kind == kind && s.Key.Name == name {
			for _, m := range s.Messages {
				out = append(out, m.String())
			}
			return "[" + strings.Join(out, "; ") + "]"
		}
	}
	return ""
}
