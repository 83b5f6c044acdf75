// Package proxycmd holds the edge proxy's command-line options, shared by
// cmd/edge-proxy and the proxy embedded in the controller's standalone mode.
package proxycmd

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/portico-gateway/portico/internal/logging"
	"github.com/portico-gateway/portico/pkg/proxy"
	"github.com/portico-gateway/portico/pkg/proxy/xdsclient"
)

// Flags are the proxy's options as flags.
type Flags struct {
	NodeID       string
	Cluster      string
	Namespace    string
	AdminAddress string
	DrainTime    time.Duration
	PortMap      string
	SOTW         bool
	AccessLog    string
	// StatusAddress and TerminationDrain: see proxy.Options.
	StatusAddress    string
	TerminationDrain time.Duration
	// MaxDownstreamConnections: see proxy.Options.
	MaxDownstreamConnections int64
	// XDS holds how the proxy authenticates to the controller.
	XDS XDSFlags
	// embedded: the xDS connection is the controller's business.
	embedded bool
}

// XDSFlags are the proxy's xDS credentials (see xdsclient.Security).
type XDSFlags struct {
	CAFile, TokenFile, ServerName, ClientCert, ClientKey string
}

// Where config/deploy mounts the controller's CA (the portico-ca-root-cert
// ConfigMap) and the projected service-account token, as Istio mounts
// istio-ca-root-cert and istio-token. Used when present and no flag says
// otherwise.
const (
	PodCAFile    = "/var/run/secrets/portico/root-cert.pem"
	PodTokenFile = "/var/run/secrets/tokens/portico-token"
)

// Defaults differ between a proxy in a pod and one embedded in standalone
// mode (which should not open ports beyond localhost, nor linger on Ctrl-C).
type Defaults struct {
	PortMap          string
	StatusAddress    string
	TerminationDrain time.Duration
	// NoXDSFlags leaves out the xDS credential flags (the embedded proxy
	// gets its connection from the controller it runs in).
	NoXDSFlags bool
}

// Register adds the flags to fs. Defaults suit a Kubernetes pod (POD_NAME,
// POD_NAMESPACE from the downward API).
func (f *Flags) Register(fs *flag.FlagSet, d Defaults) {
	host, _ := os.Hostname()
	if v := os.Getenv("POD_NAME"); v != "" {
		host = v
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "istio-system"
	}
	fs.StringVar(&f.NodeID, "node-id", host, "proxy node id reported to the controller")
	fs.StringVar(&f.Cluster, "service-cluster", "istio-ingressgateway", "proxy cluster name reported to the controller")
	fs.StringVar(&f.Namespace, "namespace", ns, "namespace the proxy runs in")
	fs.StringVar(&f.AdminAddress, "admin-address", "127.0.0.1:15000", "address of the Envoy-compatible admin interface (empty disables)")
	fs.DurationVar(&f.DrainTime, "drain-time", 45*time.Second, "how long replaced or removed listeners let connections finish")
	fs.StringVar(&f.PortMap, "port-map", d.PortMap, "remap listener ports when binding, e.g. 80:31380,443:31390 (empty: bind as configured)")
	fs.BoolVar(&f.SOTW, "sotw", false, "use state-of-the-world xDS instead of delta xDS")
	fs.StringVar(&f.AccessLog, "access-log", "stdout", "destination of the stdout access logger and of file loggers at /dev/stdout: stdout, stderr or off (other file paths from meshConfig accessLogFile are always written)")
	fs.StringVar(&f.StatusAddress, "status-address", d.StatusAddress, "address of /healthz/ready and /stats/prometheus for probes and scrapers (empty disables)")
	fs.DurationVar(&f.TerminationDrain, "termination-drain-duration", d.TerminationDrain, "on SIGTERM, fail readiness and keep serving, draining connections, this long before exiting")
	fs.Int64Var(&f.MaxDownstreamConnections, "max-downstream-connections", 0, "cap on client connections across listeners; beyond it idle ones are closed, then new ones refused (0: half the file-descriptor limit)")
	if d.NoXDSFlags {
		f.embedded = true
		return
	}
	fs.StringVar(&f.XDS.CAFile, "xds-ca-file", "", "PEM CA that verifies the controller's certificate; enables TLS (default: "+PodCAFile+" when it exists)")
	fs.StringVar(&f.XDS.TokenFile, "xds-token-file", "", "token sent to the controller as 'authorization: Bearer', re-read when it changes (default: "+PodTokenFile+" when it exists)")
	fs.StringVar(&f.XDS.ServerName, "xds-server-name", "", "name the controller's certificate must carry (default: the host of --xds-address)")
	fs.StringVar(&f.XDS.ClientCert, "xds-client-cert", "", "client certificate for a controller that requires mutual TLS (with --xds-client-key)")
	fs.StringVar(&f.XDS.ClientKey, "xds-client-key", "", "key of --xds-client-cert")
}

// Security turns the flags into the client's credentials, filling in the
// files a pod deployed by config/deploy has.
func (x XDSFlags) Security(xdsAddress string) (xdsclient.Security, error) {
	s := xdsclient.Security{CAFile: x.CAFile, TokenFile: x.TokenFile, ServerName: x.ServerName, CertFile: x.ClientCert, KeyFile: x.ClientKey}
	if s.CAFile == "" && fileExists(PodCAFile) {
		s.CAFile = PodCAFile
	}
	if s.TokenFile == "" && fileExists(PodTokenFile) {
		s.TokenFile = PodTokenFile
	}
	if err := s.Check(xdsAddress); err != nil {
		return s, err
	}
	return s, nil
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// ParseLabels reads "k=v,k=v".
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid label %q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

// ParsePortMap reads "80:31380,443:31390".
func ParsePortMap(s string) (map[uint32]uint32, error) {
	out := map[uint32]uint32{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		from, to, ok := strings.Cut(kv, ":")
		f, err1 := strconv.ParseUint(from, 10, 16)
		t, err2 := strconv.ParseUint(to, 10, 16)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("invalid port mapping %q: want from:to", kv)
		}
		out[uint32(f)] = uint32(t)
	}
	return out, nil
}

// Options builds proxy options.
func (f *Flags) Options(xdsAddress string, labels map[string]string, log logging.Logger) (proxy.Options, error) {
	pm, err := ParsePortMap(f.PortMap)
	if err != nil {
		return proxy.Options{}, fmt.Errorf("--port-map: %w", err)
	}
	var sec xdsclient.Security
	if !f.embedded {
		if sec, err = f.XDS.Security(xdsAddress); err != nil {
			return proxy.Options{}, err
		}
	}
	o := proxy.Options{XDSSecurity: sec,
		NodeID: f.NodeID, Cluster: f.Cluster, Namespace: f.Namespace, Labels: labels,
		XDSAddress: xdsAddress, SOTW: f.SOTW, AdminAddress: f.AdminAddress, DrainTime: f.DrainTime, PortMap: pm,
		Logging:          log.Levels,
		CommandLine:      os.Args,
		StatusAddress:    f.StatusAddress,
		TerminationDrain: f.TerminationDrain,

		MaxDownstreamConnections: f.MaxDownstreamConnections,
	}
	switch f.AccessLog {
	case "stdout":
		o.AccessLog = os.Stdout
	case "stderr":
		o.AccessLog = os.Stderr
	case "off", "":
	default:
		return o, fmt.Errorf("--access-log: want stdout, stderr or off, got %q", f.AccessLog)
	}
	return o, nil
}
