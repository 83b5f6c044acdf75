package logging

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func observed(def zapcore.Level) (*Levels, *observer.ObservedLogs, func(name string) func(v int, msg string)) {
	levels := NewLevels(def)
	inner, logs := observer.New(zapcore.Level(-10))
	root := zapr.NewLogger(zap.New(levels.Core(inner)))
	log := func(name string) func(v int, msg string) {
		l := root.WithName("proxy").WithName(name)
		return func(v int, msg string) { l.V(v).Info(msg) }
	}
	return levels, logs, log
}

func messages(logs *observer.ObservedLogs) string {
	var out []string
	for _, e := range logs.TakeAll() {
		out = append(out, e.Message)
	}
	return strings.Join(out, ",")
}

// /logging?router=debug makes only the router logger verbose; level=
// changes all; unknown names are refused with the list.
func TestPerLoggerLevels(t *testing.T) {
	levels, logs, log := observed(zapcore.InfoLevel)
	levels.Register("router", "http", "xds")
	router, http, other := log("router"), log("http"), log("certs-unregistered")
	nested := log("router.child") // proxy.router.child follows router

	router(1, "router debug 1")
	http(1, "http debug 1")
	http(0, "http info")
	if got := messages(logs); got != "http info" {
		t.Fatalf("at info: %q", got)
	}
	if err := levels.SetLevel("router", "debug"); err != nil {
		t.Fatal(err)
	}
	router(1, "router debug")
	nested(1, "nested debug")
	http(1, "http debug")
	other(1, "other debug")
	if got := messages(logs); got != "router debug,nested debug" {
		t.Errorf("router=debug: %q, want only the router's debug line", got)
	}
	if lv := levels.Levels(); lv["router"] != "debug" || lv["http"] != "info" || lv["xds"] != "info" {
		t.Errorf("levels %v", lv)
	}
	err := levels.SetLevel("routr", "debug")
	if !errors.Is(err, ErrUnknownLogger) || !strings.Contains(err.Error(), "http, router, xds") {
		t.Errorf("unknown logger: %v", err)
	}
	if err := levels.SetLevel("", "warning"); err != nil {
		t.Fatal(err)
	}
	router(1, "router debug after warning")
	http(0, "http info after warning")
	other(0, "other info after warning")
	if got := messages(logs); got != "" {
		t.Errorf("level=warning still logs %q", got)
	}
	if err := levels.SetLevel("", "trace"); err != nil {
		t.Fatal(err)
	}
	other(2, "other trace")
	if got := messages(logs); got != "other trace" {
		t.Errorf("trace: %q", got)
	}
}
