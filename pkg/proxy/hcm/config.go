// Package hcm is the proxy's HTTP connection manager: it serves HTTP/1.1
// and HTTP/2 connections and runs each request through Envoy's pipeline for
// an edge proxy: forwarding headers, path normalisation, route lookup,
// fault injection, CORS and the router (weighted clusters, retries,
// timeouts, mirrors, rewrites), with Envoy's local replies, response flags,
// stats and access log.
package hcm

import (
	"fmt"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/portico-gateway/portico/pkg/proxy/router"
)

// ForwardClientCert modes (Envoy's forward_client_cert_details).
const (
	XFCCSanitize = iota
	XFCCForwardOnly
	XFCCAppendForward
	XFCCSanitizeSet
	XFCCAlwaysForwardOnly
)

// Config is a compiled HttpConnectionManager.
type Config struct {
	StatPrefix        string
	RouteConfig       string
	UseRemoteAddress  bool
	XFFTrustedHops    int
	NormalizePath     bool
	StripAnyHostPort  bool
	ServerName        string
	AccessLog         bool
	ForwardClientCert int
	CertSubject       bool
	CertDNS           bool
	CertURI           bool
	GenerateRequestID bool
	// Fault is the filter-level fault, applying to routes without their own.
	Fault   *router.Fault
	HasCORS bool
}

// Compile converts an HttpConnectionManager; the filter chain must be
// fault? cors? router, in that order (what pkg/translate emits).
func Compile(m *hcmv3.HttpConnectionManager) (*Config, error) {
	cfg := &Config{
		StatPrefix:        m.StatPrefix,
		UseRemoteAddress:  m.GetUseRemoteAddress().GetValue(),
		XFFTrustedHops:    int(m.XffNumTrustedHops),
		NormalizePath:     m.GetNormalizePath().GetValue(),
		StripAnyHostPort:  m.GetStripAnyHostPort(),
		ServerName:        m.ServerName,
		ForwardClientCert: int(m.ForwardClientCertDetails),
		GenerateRequestID: m.GenerateRequestId == nil || m.GenerateRequestId.Value,
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "envoy"
	}
	if d := m.SetCurrentClientCertDetails; d != nil {
		cfg.CertSubject, cfg.CertDNS, cfg.CertURI = d.GetSubject().GetValue(), d.Dns, d.Uri
	}
	rds := m.GetRds()
	if rds == nil {
		return nil, fmt.Errorf("http connection manager %s: only RDS route configurations are supported", m.StatPrefix)
	}
	cfg.RouteConfig = rds.RouteConfigName
	for _, a := range m.AccessLog {
		if a.Name != "envoy.access_loggers.stdout" {
			return nil, fmt.Errorf("unsupported access logger %q", a.Name)
		}
		cfg.AccessLog = true
	}
	sawRouter := false
	for i, f := range m.HttpFilters {
		if sawRouter {
			return nil, fmt.Errorf("http filter %q after the router", f.Name)
		}
		switch f.Name {
		case router.FaultFilter:
			fc := &faultv3.HTTPFault{}
			if err := f.GetTypedConfig().UnmarshalTo(fc); err != nil {
				return nil, fmt.Errorf("fault filter: %w", err)
			}
			cfg.Fault = router.CompileFault(fc)
		case router.CORSFilter:
			cfg.HasCORS = true
		case "envoy.filters.http.router":
			sawRouter = true
		default:
			return nil, fmt.Errorf("unsupported http filter %q (position %d)", f.Name, i)
		}
	}
	if !sawRouter {
		return nil, fmt.Errorf("http filters must end with envoy.filters.http.router")
	}
	return cfg, nil
}
