package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portico-gateway/portico/internal/logging"
	"github.com/portico-gateway/portico/internal/testenv"
	"github.com/portico-gateway/portico/pkg/topology"
)

// standalonePortico is a running `gateway-controller --standalone` on a
// copy of config/samples/quickstart, its backends on test ports.
type standalonePortico struct {
	debug, admin    string
	http80, tcp3306 string
	counterBackend  string
	stop            func()
}

// startQuickstart copies the quickstart samples, points them at test
// backends (an HTTP one answering /status/NNN with that status, a TCP one
// that greets) and adds a VirtualService naming a Gateway that does not
// exist, then runs the standalone controller with its embedded proxy.
func startQuickstart(t *testing.T) *standalonePortico {
	t.Helper()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			c, err := strconv.Atoi(code)
			if err == nil && c >= 200 && c < 600 {
				w.WriteHeader(c)
				return
			}
		}
		fmt.Fprintln(w, "counter")
	}))
	t.Cleanup(backend.Close)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tcp.Close() })
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()

	src := "../../config/samples/quickstart"
	dir := t.TempDir()
	certs, err := filepath.Abs(filepath.Join(src, "certs"))
	if err != nil {
		t.Fatal(err)
	}
	backendPort := backend.Listener.Addr().(*net.TCPAddr).Port
	tcpPort := tcp.Addr().(*net.TCPAddr).Port
	for _, f := range []string{"gateway.yaml", "counter.yaml", "mysql.yaml"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "config/samples/quickstart/certs", certs)
		s = strings.ReplaceAll(s, "targetPort: 18080", "targetPort: "+strconv.Itoa(backendPort))
		s = strings.ReplaceAll(s, "tcp-mysql: 13306", "tcp-mysql: "+strconv.Itoa(tcpPort))
		if s == string(b) && f != "gateway.yaml" {
			t.Fatalf("%s: the backend port to replace is not in the sample any more", f)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	orphan := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orphan, namespace: default}
spec:
  hosts: [orphan.lab.example.com]
  gateways: [istio-system/no-such-gateway]
  http:
  - route:
    - destination: {host: counter}
`
	if err := os.WriteFile(filepath.Join(dir, "orphan.yaml"), []byte(orphan), 0o644); err != nil {
		t.Fatal(err)
	}

	p := &standalonePortico{
		debug:          fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		admin:          fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		http80:         fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		tcp3306:        fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		counterBackend: fmt.Sprintf("127.0.0.1:%d", backendPort),
	}
	_, port80, _ := net.SplitHostPort(p.http80)
	_, port3306, _ := net.SplitHostPort(p.tcp3306)
	cfg, err := parseFlags([]string{"--standalone", "--config-dir", dir, "--xds-address", "127.0.0.1:0",
		"--debug-address", p.debug, "--admin-address", p.admin, "--node-id", "topology-test", "--access-log", "off",
		"--port-map", fmt.Sprintf("80:%s,443:%d,3306:%s", port80, testenv.FreePort(t), port3306),
		"--topology-scrape-interval", "200ms", "--topology-window", "1m"})
	if err != nil {
		t.Fatal(err)
	}
	log, err := logging.New("error", true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runStandalone(ctx, log, cfg) }()
	p.stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway-controller: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("gateway-controller did not stop within 20s")
		}
	}
	t.Cleanup(p.stop)
	waitOK(t, "http://"+p.admin+"/ready", 30*time.Second)
	waitOK(t, "http://"+p.debug+"/readyz", 10*time.Second)
	return p
}

func waitOK(t *testing.T, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v (last error %v)", url, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// traffic sends what the page must show: 30 requests the counter answers
// 200, 10 it answers 500, 10 for a host nothing serves (404 NR, never
// reaching a cluster), and 4 TCP connections to the MySQL-like service.
func (p *standalonePortico) traffic(t *testing.T) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(host, path string, want int) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.http80+path, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s%s: %d, want %d", host, path, resp.StatusCode, want)
		}
	}
	for range 30 {
		get("counter.lab.example.com", "/", 200)
	}
	for range 10 {
		get("counter.lab.example.com", "/status/500", 500)
	}
	for range 10 {
		get("nothing.example.com", "/", 404)
	}
	for range 4 {
		c, err := net.DialTimeout("tcp", p.tcp3306, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "hello\n" {
			t.Fatalf("TCP through port 3306 read %q", b)
		}
	}
}

func fetchGraph(t *testing.T, debug string) *topology.Graph {
	t.Helper()
	resp, err := http.Get("http://" + debug + topology.JSONPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", topology.JSONPath, resp.Status)
	}
	var g topology.Graph
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatal(err)
	}
	return &g
}

func nodeByID(g *topology.Graph, id string) *topology.Node {
	for _, n := range g.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

const (
	class        = "istio=ingressgateway"
	gatewayID    = "Gateway/istio-system/default-gateway"
	server80ID   = "server:" + class + ":0.0.0.0_80"
	server443ID  = "server:" + class + ":0.0.0.0_443"
	server3306ID = "server:" + class + ":0.0.0.0_3306"
	counterVSID  = "VirtualService/default/counter"
	mysqlVSID    = "VirtualService/default/mysql"
	orphanVSID   = "VirtualService/default/orphan"
	counterRoute = "route:" + class + ":VirtualService/default/counter:default.counter.0"
	counterClus  = "cluster:" + class + ":outbound|80||counter.default.svc.cluster.local"
	mysqlClus    = "cluster:" + class + ":outbound|3306||mysql.default.svc.cluster.local"
)

// TestTopologyPage runs Portico standalone on the quickstart samples,
// sends traffic, and checks /debug/topology.json's content, the links it
// gives, and the page as headless Chromium renders it (saving a
// screenshot; TOPOLOGY_SCREENSHOT=path keeps it, for docs/topology.png).
func TestTopologyPage(t *testing.T) {
	p := startQuickstart(t)
	// Rates need a reading from before the traffic.
	deadline := time.Now().Add(20 * time.Second)
	for {
		g := fetchGraph(t, p.debug)
		if len(g.Scrapes) == 1 && g.Scrapes[0].Error == "" && g.Scrapes[0].Readings > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the controller never read the proxy's stats: %+v", g.Scrapes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.traffic(t)

	// The scraper reads every 200 ms: wait until a reading after the
	// traffic is in (every request counted at port 80 and at the cluster).
	var g *topology.Graph
	deadline = time.Now().Add(20 * time.Second)
	for {
		g = fetchGraph(t, p.debug)
		s80, cl := nodeByID(g, server80ID), nodeByID(g, counterClus)
		if s80 != nil && s80.Metrics != nil && s80.Metrics.Total == 50 && cl != nil && cl.Metrics != nil && cl.Metrics.Total == 40 &&
			s80.Metrics.RPS > 0 && cl.Metrics.RPS > 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(g, "", " ")
			t.Fatalf("the topology never counted the traffic:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}

	t.Run("json", func(t *testing.T) { checkGraph(t, p, g) })
	t.Run("links", func(t *testing.T) { checkLinks(t, p, g) })
	t.Run("chromium", func(t *testing.T) { checkInChromium(t, p, g) })
}

func checkGraph(t *testing.T, p *standalonePortico, g *topology.Graph) {
	for _, id := range []string{gatewayID, server80ID, server443ID, server3306ID, counterVSID, mysqlVSID, orphanVSID, counterRoute, counterClus, mysqlClus,
		"endpoint:" + class + ":outbound|80||counter.default.svc.cluster.local:" + p.counterBackend} {
		if nodeByID(g, id) == nil {
			t.Errorf("no node %s", id)
		}
	}
	edges := map[[2]string]bool{}
	for _, e := range g.Edges {
		edges[[2]string{e.Source, e.Target}] = true
	}
	for _, e := range [][2]string{
		{gatewayID, server80ID}, {gatewayID, server443ID}, {gatewayID, server3306ID},
		{server80ID, counterVSID}, {server443ID, counterVSID}, {counterVSID, counterRoute}, {counterRoute, counterClus},
		{counterClus, "endpoint:" + class + ":outbound|80||counter.default.svc.cluster.local:" + p.counterBackend},
		{server3306ID, mysqlVSID}, {mysqlVSID, mysqlClus},
	} {
		if !edges[e] {
			t.Errorf("no edge %s → %s", e[0], e[1])
		}
	}
	for e := range edges {
		if e[0] == orphanVSID || e[1] == orphanVSID {
			t.Errorf("the orphan VirtualService routes nothing, yet has an edge %v", e)
		}
	}

	// Numbers: the ratios of counts in one window are exact.
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	s80 := nodeByID(g, server80ID).Metrics
	near("port 80 error rate (404s and 500s of 50)", s80.ErrorRate, 20.0/50)
	near("port 80 5xx rate", s80.ErrorRate5xx, 10.0/50)
	if s80.P99Ms == nil || *s80.P99Ms <= 0 {
		t.Errorf("port 80 p99 = %v, want > 0", s80.P99Ms)
	}
	cl := nodeByID(g, counterClus).Metrics
	near("counter cluster error rate (500s of 40; the 404s never reach it)", cl.ErrorRate, 10.0/40)
	if cl.P99Ms == nil {
		t.Error("counter cluster has no p99")
	}
	rt := nodeByID(g, counterRoute).Metrics
	if rt == nil || rt.RPS != cl.RPS || rt.Shared {
		t.Errorf("the counter route sends to its own cluster alone: %+v, cluster %+v", rt, cl)
	}
	if m := nodeByID(g, server443ID).Metrics; m == nil || m.RPS != 0 || m.Total != 0 {
		t.Errorf("port 443 got no traffic: %+v", m)
	}
	if m := nodeByID(g, server3306ID).Metrics; m == nil || m.Unit != "cx" || m.Total != 4 || m.RPS <= 0 {
		t.Errorf("port 3306: %+v, want 4 connections", m)
	}
	if m := nodeByID(g, mysqlClus).Metrics; m == nil || m.Unit != "cx" || m.Total != 4 {
		t.Errorf("mysql cluster: %+v, want 4 connections", m)
	}
	ep := nodeByID(g, "endpoint:"+class+":outbound|80||counter.default.svc.cluster.local:"+p.counterBackend)
	if ep == nil || ep.Metrics == nil || ep.Metrics.RPS <= 0 {
		t.Errorf("counter endpoint: %+v, want requests", ep)
	} else {
		near("counter endpoint rate = cluster rate", ep.Metrics.RPS, cl.RPS)
	}

	// Problems: the orphan is an error naming the missing Gateway.
	o := nodeByID(g, orphanVSID)
	if o.Health != "error" || len(o.Problems) == 0 || o.Problems[0].Code != "IST0101" || !strings.Contains(o.Problems[0].Message, "no-such-gateway") {
		t.Errorf("orphan VirtualService: health %s, problems %+v", o.Health, o.Problems)
	}
	if c := nodeByID(g, counterVSID); c.Health != "warning" {
		t.Errorf("counter VirtualService names its Gateway the legacy way (IST0133): health %s", c.Health)
	}
	if gw := nodeByID(g, gatewayID); gw.Health != "ok" {
		t.Errorf("gateway health %s, problems %+v", gw.Health, gw.Problems)
	}
	if len(g.Scrapes) != 1 || g.Scrapes[0].Error != "" || g.Scrapes[0].Proxy != "topology-test" {
		t.Errorf("scrapes: %+v", g.Scrapes)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func checkLinks(t *testing.T, p *standalonePortico, g *topology.Graph) {
	base := "http://" + p.debug
	code, body := get(t, base+nodeByID(g, counterVSID).Links.YAML)
	if code != 200 || !strings.Contains(body, "kind: VirtualService") || !strings.Contains(body, "counter.lab.example.com") {
		t.Errorf("counter's source YAML: %d\n%s", code, body)
	}
	code, body = get(t, base+nodeByID(g, counterClus).Links.Envoy)
	if code != 200 || !strings.Contains(body, `"name": "outbound|80||counter.default.svc.cluster.local"`) || strings.Contains(body, "mysql") {
		t.Errorf("counter cluster's Envoy config: %d\n%s", code, body)
	}
	code, body = get(t, base+nodeByID(g, counterRoute).Links.Envoy)
	if code != 200 || !strings.Contains(body, `"name": "http.80"`) || !strings.Contains(body, `"name": "default.counter.0"`) {
		t.Errorf("counter route's Envoy config: %d\n%s", code, body)
	}
	code, body = get(t, base+nodeByID(g, server3306ID).Links.Envoy)
	if code != 200 || !strings.Contains(body, `"name": "0.0.0.0_3306"`) || strings.Contains(body, `"name": "0.0.0.0_80"`) {
		t.Errorf("port 3306's Envoy config: %d\n%s", code, body)
	}
	if code, _ := get(t, base+topology.SourcePath+"?kind=Secret&namespace=istio-system&name=x"); code != http.StatusBadRequest {
		t.Errorf("a Secret's YAML: %d, want 400 (never served)", code)
	}
	if code, _ := get(t, base+topology.SourcePath+"?kind=VirtualService&namespace=default&name=nope"); code != http.StatusNotFound {
		t.Errorf("a missing VirtualService: %d, want 404", code)
	}
	code, body = get(t, base+topology.PagePath)
	if code != 200 || !strings.Contains(body, `src="/debug/topology/topology.js"`) || strings.Contains(body, "http") && regexp.MustCompile(`src="https?:`).MatchString(body) {
		t.Errorf("page: %d\n%s", code, body)
	}
	if code, body := get(t, base+"/debug/topology/topology.js"); code != 200 || len(body) < 100000 {
		t.Errorf("bundle: %d, %d bytes", code, len(body))
	}
	if code, _ := get(t, base+"/debug/topology/package.json"); code != http.StatusNotFound {
		t.Errorf("only the page's assets are served: package.json answered %d", code)
	}
	if code, _ := get(t, base+"/debug/status"); code != 200 {
		t.Errorf("the controller's own debug endpoints still answer: /debug/status %d", code)
	}
}

// chromium finds Debian's chromium (hack/ensure-test-deps.sh installs it).
func chromium(t *testing.T) string {
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; hack/ensure-test-deps.sh installs it")
	}
	t.Skip("chromium is not installed (apt-get install chromium, or hack/ensure-test-deps.sh as root)")
	return ""
}

func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + t.TempDir(), "--window-size=1600,1000", "--virtual-time-budget=5000"}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

var rowRE = regexp.MustCompile(`<tr class="health-(\w+)" data-id="([^"]*)" data-kind="(\w+)" data-health="\w+" data-rps="([^"]*)" data-error-rate="([^"]*)" data-error-rate-5xx="([^"]*)" data-p99="([^"]*)">`)

func checkInChromium(t *testing.T, p *standalonePortico, g *topology.Graph) {
	bin := chromium(t)
	url := "http://" + p.debug + topology.PagePath
	dom := string(runChromium(t, bin, "--dump-dom", url))
	if !strings.Contains(dom, `data-ready="1"`) {
		t.Fatalf("the page never rendered the graph:\n%s", dom)
	}
	if m := regexp.MustCompile(`data-rendered-nodes="(\d+)"`).FindStringSubmatch(dom); m == nil || m[1] != strconv.Itoa(len(g.Nodes)) {
		t.Errorf("Cytoscape drew %v nodes, the graph has %d", m, len(g.Nodes))
	}
	if m := regexp.MustCompile(`data-rendered-edges="(\d+)"`).FindStringSubmatch(dom); m == nil || m[1] != strconv.Itoa(len(g.Edges)) {
		t.Errorf("Cytoscape drew %v edges, the graph has %d", m, len(g.Edges))
	}
	rows := map[string][]string{}
	for _, m := range rowRE.FindAllStringSubmatch(strings.ReplaceAll(dom, "&amp;", "&"), -1) {
		rows[m[2]] = m
	}
	if len(rows) != len(g.Nodes) {
		t.Errorf("the node table has %d rows, the graph %d nodes", len(rows), len(g.Nodes))
	}
	num := func(id string, col int) float64 {
		r, ok := rows[id]
		if !ok {
			t.Errorf("no row for %s", id)
			return math.NaN()
		}
		v, err := strconv.ParseFloat(r[col], 64)
		if err != nil {
			t.Errorf("%s column %d: %q", id, col, r[col])
			return math.NaN()
		}
		return v
	}
	// What the browser shows is what the JSON said a moment before.
	for _, id := range []string{server80ID, counterVSID, counterRoute, counterClus} {
		if v := num(id, 4); !(v > 0) {
			t.Errorf("%s: rate %v in the page, want > 0", id, v)
		}
	}
	if v := num(server80ID, 5); math.Abs(v-0.4) > 1e-9 {
		t.Errorf("port 80 error rate in the page %v, want 0.4", v)
	}
	if v := num(counterClus, 6); math.Abs(v-0.25) > 1e-9 {
		t.Errorf("counter cluster 5xx rate in the page %v, want 0.25", v)
	}
	if v := num(server443ID, 4); v != 0 {
		t.Errorf("port 443 rate in the page %v, want 0", v)
	}
	if r := rows[orphanVSID]; r == nil || r[1] != "error" {
		t.Errorf("the orphan VirtualService is not highlighted as an error: %v", r)
	}
	if !strings.Contains(dom, "no-such-gateway") {
		t.Error("the problems list does not name the missing Gateway")
	}

	shot := filepath.Join(t.TempDir(), "topology.png")
	if keep := os.Getenv("TOPOLOGY_SCREENSHOT"); keep != "" {
		shot, _ = filepath.Abs(keep)
	}
	// With the counter cluster's details open, as a user clicking it sees them.
	runChromium(t, bin, "--hide-scrollbars", "--screenshot="+shot, url+"#node="+neturl.QueryEscape(counterClus))
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1600 || b.Dy() != 1000 {
		t.Errorf("screenshot is %v", b)
	}
	// The graph is drawn: the canvas area holds the error red of the
	// orphan VirtualService and the blue of hot nodes, not a blank page.
	if !hasColor(img, 0xdc, 0x26, 0x26) || !hasColor(img, 0x25, 0x63, 0xeb) {
		t.Error("the screenshot shows neither the error red nor the traffic blue of the graph")
	}
	t.Logf("screenshot: %s", shot)
}

func hasColor(img image.Image, r, g, b uint8) bool {
	bd := img.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y += 2 {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if uint8(cr>>8) == r && uint8(cg>>8) == g && uint8(cb>>8) == b {
				return true
			}
		}
	}
	return false
}
