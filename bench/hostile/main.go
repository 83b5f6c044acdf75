// Command hostile measures nginx's behaviour on the hostile-input table of
// test/hostile: it runs nginx (from Debian) as a reverse proxy configured
// like Portico's test gateway — HTTP, h2c and HTTPS listeners, /admin
// answered 403 by the proxy, everything else to a backend that records
// what it receives, the same 1 s timeouts — plays every case against it
// and writes what happened. With -write-cases it also writes each observation
// into the case's Nginx field in test/hostile, so the reference in the
// table is measured, not remembered.
//
//	go run ./bench/hostile -out bench/hostile/nginx-reference.md [-write-cases test/hostile]
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/portico-gateway/portico/internal/freeport"
	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/internal/testpki"
	"github.com/portico-gateway/portico/test/hostile"
)

func main() {
	out := flag.String("out", "bench/hostile/nginx-reference.md", "write the observed table here")
	update := flag.String("write-cases", "", "directory of the case table (test/hostile) whose Nginx fields to rewrite")
	nginxBin := flag.String("nginx", "nginx", "nginx binary")
	only := flag.String("run", "", "only cases whose name matches this regular expression")
	flag.Parse()
	if err := run(*out, *update, *nginxBin, *only); err != nil {
		log.Fatal(err)
	}
}

func run(out, update, nginxBin, only string) error {
	work, err := os.MkdirTemp("", "nginx-hostile-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// nginx's workers run as nobody: they must reach the temp directories.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.Mkdir(filepath.Join(work, d), 0o777); err != nil {
			return err
		}
		os.Chmod(filepath.Join(work, d), 0o777)
	}
	for _, n := range []string{"server.crt", "server.key"} {
		if err := os.WriteFile(filepath.Join(work, n), testpki.Read(n), 0o644); err != nil {
			return err
		}
	}
	backend, err := testenv.NewRecorder("")
	if err != nil {
		return err
	}
	defer backend.Close()
	h1, h2c, tlsAddr := freePort(), freePort(), freePort()
	conf := nginxConf(work, backend.Addr, h1, h2c, tlsAddr)
	if err := os.WriteFile(filepath.Join(work, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(nginxBin, "-p", work, "-c", filepath.Join(work, "nginx.conf"))
	logf, err := os.Create(filepath.Join(work, "stderr.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting nginx: %w", err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	if err := waitHTTP("http://127.0.0.1:"+h1+"/ready", 10*time.Second); err != nil {
		b, _ := os.ReadFile(filepath.Join(work, "error.log"))
		return fmt.Errorf("nginx did not come up: %w\n%s", err, b)
	}
	version, _ := exec.Command(nginxBin, "-v").CombinedOutput()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(testpki.Read("ca.crt"))
	env := &hostile.Env{HTTP: "127.0.0.1:" + h1, H2C: "127.0.0.1:" + h2c, TLS: "127.0.0.1:" + tlsAddr,
		External: hostile.ExternalAddress(), CA: pool, Backend: backend, Wait: 5 * time.Second, Timeout: time.Second, HandshakeTimeout: time.Second}
	var cases []*hostile.Case
	re := regexp.MustCompile(only)
	for _, c := range hostile.All() {
		if re.MatchString(c.Name) {
			cases = append(cases, c)
		}
	}
	var mu sync.Mutex
	got := map[string]hostile.Result{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	hostile.RunAll(ctx, cases, env, func(c *hostile.Case, r hostile.Result) {
		mu.Lock()
		defer mu.Unlock()
		got[c.Name] = r
		mark := ""
		if r.String() != c.Nginx {
			mark = "   (table says " + strconv.Quote(c.Nginx) + ")"
		}
		fmt.Fprintf(os.Stderr, "%-40s %s%s\n", c.Name, r, mark)
	})

	var b strings.Builder
	fmt.Fprintf(&b, "# nginx on the hostile-input table\n\nMeasured by `bench/hostile/nginx-reference.sh` on %s, %s (Debian), configured as in\n`bench/hostile/main.go`: HTTP, h2c and HTTPS listeners, `/admin` answered 403 by nginx, the rest proxied\n(HTTP/1.1, keep-alive upstream connections) to a backend recording what it receives; client header, body and\nkeep-alive timeouts of 1 s. Results are in `test/hostile`'s format: what the client saw (statuses, then\n`keep`/`close`/`hang` for the connection), then how many requests reached the backend.\n\n",
		time.Now().UTC().Format("2006-01-02"), strings.TrimSpace(string(version)))
	b.WriteString("| Case | What the client does | nginx |\n| --- | --- | --- |\n")
	for _, c := range cases {
		if r, ok := got[c.Name]; ok {
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", c.Name, cellEscape(c.What), cellEscape(r.String()))
		}
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if update != "" {
		obs := map[string]string{}
		for name, r := range got {
			obs[name] = r.String()
		}
		if err := updateSources(update, obs); err != nil {
			return err
		}
	}
	return nil
}

func cellEscape(s string) string { return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s) }

// nginxConf is the equivalent of the Portico gateway of test/hostile.
func nginxConf(work, backend, h1, h2c, tlsPort string) string {
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  client_header_timeout 1s;
  client_body_timeout 1s;
  keepalive_timeout 1s;
  send_timeout 1s;
  upstream backend {
    server %[2]s;
    keepalive 16;
  }
  server {
    listen %[3]s;
    listen %[4]s http2;
    listen %[5]s ssl http2;
    ssl_certificate %[1]s/server.crt;
    ssl_certificate_key %[1]s/server.key;
    location /admin { return 403 "forbidden\n"; }
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-Id $request_id;
    }
  }
}
`, work, backend, h1, h2c, tlsPort)
}

func freePort() string { return strconv.Itoa(int(freeport.MustGet())) }

func waitHTTP(url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// updateSources rewrites the Nginx field of every case literal
// `{Name: "…", …}` in dir's Go files with the observation.
func updateSources(dir string, obs map[string]string) error {
	files, err := filepath.Glob(filepath.Join(dir, "cases_*.go"))
	if err != nil {
		return err
	}
	name := regexp.MustCompile(`\{Name: "([a-z0-9.-]+)",( Nginx: "(?:[^"\\]|\\.)*",)?`)
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		updated := name.ReplaceAllFunc(src, func(m []byte) []byte {
			n := string(name.FindSubmatch(m)[1])
			o, ok := obs[n]
			if !ok {
				return m
			}
			return []byte(fmt.Sprintf(`{Name: %q, Nginx: %s,`, n, strconv.Quote(o)))
		})
		if string(updated) != string(src) {
			if err := os.WriteFile(f, updated, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
