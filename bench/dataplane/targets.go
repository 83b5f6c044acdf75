package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/portico-gateway/portico/bench/internal/proc"
)

// target is a proxy under test (or none: direct to the backends).
type target struct {
	name  string
	ports map[string]string // proto → address
	admin string            // Portico's admin interface
	procs []*exec.Cmd
	// pid returns the processes whose CPU time counts.
	pids func() []int
}

func (t *target) stop() {
	for _, p := range t.procs {
		p.Process.Signal(os.Interrupt)
	}
	for _, p := range t.procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
}

type env struct {
	work     string // scratch directory
	bins     string // Portico binaries
	certs    string // server.crt, server.key, ca.crt, combined.pem
	be       *backends
	proxyCPU string // taskset CPU list for proxies ("" = no pinning)
	logs     []string
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

// command starts a process pinned to the proxy CPU, logging to a file.
func (e *env) command(name string, env []string, bin string, args ...string) (*exec.Cmd, error) {
	if e.proxyCPU != "" {
		args = append([]string{"-c", e.proxyCPU, bin}, args...)
		bin = "taskset"
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	log, err := os.Create(filepath.Join(e.work, name+".log"))
	if err != nil {
		return nil, err
	}
	e.logs = append(e.logs, log.Name())
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return cmd, nil
}

func direct(e *env) (*target, error) {
	return &target{name: "direct", ports: map[string]string{"http1": e.be.httpAddr, "tcp": e.be.tcpAddr},
		pids: func() []int { return nil }}, nil
}

// portico runs the controller (standalone, xDS only) and the edge proxy
// with the configuration a user would write: a Gateway with HTTP, HTTPS
// and TCP servers, two VirtualServices, ServiceEntries for the backends.
func portico(e *env) (*target, error) {
	cfg := filepath.Join(e.work, "portico")
	os.MkdirAll(cfg, 0o755)
	be, echo := port(e.be.httpAddr), port(e.be.tcpAddr)
	yaml := fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, serverCertificate: %[1]s/server.crt, privateKey: %[1]s/server.key}
  - port: {number: 3306, name: tcp, protocol: TCP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ['*']
  gateways: [istio-system/bench]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: ['*']
  gateways: [istio-system/bench]
  tcp: [{match: [{port: 3306}], route: [{destination: {host: echo}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: %[2]s}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 3306, name: tcp, protocol: TCP, targetPort: %[3]s}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
`, e.certs, be, echo)
	if err := os.WriteFile(filepath.Join(cfg, "bench.yaml"), []byte(yaml), 0o644); err != nil {
		return nil, err
	}
	xds, admin := freeAddr(), freeAddr()
	h1, h2, tcp := freeAddr(), freeAddr(), freeAddr()
	// The controller is idle during the run; it is not pinned or counted.
	ctrl := exec.Command(filepath.Join(e.bins, "gateway-controller"), "--standalone", "--no-proxy", "--config-dir", cfg,
		"--xds-address", xds, "--debug-address", "")
	log, _ := os.Create(filepath.Join(e.work, "gateway-controller.log"))
	ctrl.Stdout, ctrl.Stderr = log, log
	if err := ctrl.Start(); err != nil {
		return nil, err
	}
	t := &target{name: "portico", procs: []*exec.Cmd{ctrl}, admin: admin,
		ports: map[string]string{"http1": h1, "https": h2, "h2": h2, "tcp": tcp}}
	proxy, err := e.command("edge-proxy", []string{"GOMAXPROCS=" + gomaxprocs(e)}, filepath.Join(e.bins, "edge-proxy"),
		"--xds-address", xds, "--admin-address", admin, "--status-address", "", "--access-log", "off",
		"--termination-drain-duration", "0s", "--port-map", fmt.Sprintf("80:%s,443:%s,3306:%s", port(h1), port(h2), port(tcp)))
	if err != nil {
		t.stop()
		return nil, err
	}
	t.procs = append([]*exec.Cmd{proxy}, t.procs...)
	t.pids = func() []int { return []int{proxy.Process.Pid} }
	if err := waitHTTP("http://"+admin+"/ready", 30*time.Second); err != nil {
		t.stop()
		return nil, fmt.Errorf("portico: %w", err)
	}
	return t, nil
}

// gomaxprocs gives the Go proxy as many Ps as the CPUs it is pinned to.
func gomaxprocs(e *env) string {
	if e.proxyCPU == "" {
		return fmt.Sprint(proc.NumCPU())
	}
	return fmt.Sprint(len(strings.Split(e.proxyCPU, ",")))
}

func nginx(e *env) (*target, error) {
	dir := filepath.Join(e.work, "nginx")
	os.MkdirAll(dir, 0o755)
	h1, h2, tcp := freeAddr(), freeAddr(), freeAddr()
	stream := ""
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err == nil {
		stream = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
	}
	conf := fmt.Sprintf(`%[8]s
daemon off;
master_process on;
worker_processes %[7]s;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 12000; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream backend { server %[2]s; keepalive 128; }
  server {
    listen %[3]s;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen %[4]s ssl http2;
    ssl_certificate %[6]s/server.crt;
    ssl_certificate_key %[6]s/server.key;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
stream {
  server { listen %[5]s; proxy_pass %[9]s; }
}
`, dir, e.be.httpAddr, h1, h2, tcp, e.certs, gomaxprocs(e), stream, e.be.tcpAddr)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd, err := e.command("nginx", nil, "nginx", "-c", path, "-p", dir)
	if err != nil {
		return nil, err
	}
	t := &target{name: "nginx", procs: []*exec.Cmd{cmd}, ports: map[string]string{"http1": h1, "https": h2, "h2": h2, "tcp": tcp},
		pids: func() []int { return proc.Tree(cmd.Process.Pid) }}
	if err := waitHTTP("http://"+h1+"/", 10*time.Second); err != nil {
		t.stop()
		return nil, fmt.Errorf("nginx: %w", err)
	}
	return t, nil
}

func haproxy(e *env) (*target, error) {
	dir := filepath.Join(e.work, "haproxy")
	os.MkdirAll(dir, 0o755)
	h1, h2, tcp := freeAddr(), freeAddr(), freeAddr()
	conf := fmt.Sprintf(`global
  nbthread %[6]s
  maxconn 11000
  # maxconn implies 2×maxconn descriptors (a server side each), more
  # than the 20,000 allowed here; idle keep-alive connections need one.
  no strict-limits
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend plain
  bind %[2]s
  default_backend web
frontend tls
  bind %[3]s ssl crt %[5]s/combined.pem alpn h2,http/1.1
  default_backend web
backend web
  server be %[1]s
listen tcp
  mode tcp
  bind %[4]s
  server echo %[7]s
`, e.be.httpAddr, h1, h2, tcp, e.certs, gomaxprocs(e), e.be.tcpAddr)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd, err := e.command("haproxy", nil, "haproxy", "-f", path, "-db")
	if err != nil {
		return nil, err
	}
	t := &target{name: "haproxy", procs: []*exec.Cmd{cmd}, ports: map[string]string{"http1": h1, "https": h2, "h2": h2, "tcp": tcp},
		pids: func() []int { return proc.Tree(cmd.Process.Pid) }}
	if err := waitHTTP("http://"+h1+"/", 10*time.Second); err != nil {
		t.stop()
		return nil, fmt.Errorf("haproxy: %w", err)
	}
	return t, nil
}

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lookPath(name string) bool { _, err := exec.LookPath(name); return err == nil }
