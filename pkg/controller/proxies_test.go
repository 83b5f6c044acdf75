package controller_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/xds"
)

// TestDebugProxiesEmptyIsAList: with no proxy connected /debug/proxies is
// an empty JSON list, not null (what `istioctl proxy-status`-style tools
// iterate over).
func TestDebugProxiesEmptyIsAList(t *testing.T) {
	ctrl := controller.New(logr.Discard(), xds.NewServer(logr.Discard(), gateway.ClassName), nil, controller.Options{})
	srv := httptest.NewServer(ctrl.DebugHandler(nil))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/debug/proxies")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := strings.TrimSpace(string(b)); got != "[]" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/debug/proxies with nobody connected: %q (%s)", got, resp.Header.Get("Content-Type"))
	}
}
