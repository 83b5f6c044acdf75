package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/portico-gateway/portico/internal/logging"
	"github.com/portico-gateway/portico/pkg/configdump"
	"github.com/portico-gateway/portico/pkg/proxy/stats"
	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

func (p *Proxy) serveAdmin(ctx context.Context) error {
	return p.serveHTTP(ctx, "admin interface", p.opts.AdminAddress, p.AdminHandler())
}

// StatusHandler serves what the kubelet and Prometheus need from outside
// the pod, as Istio's status port does: the admin interface itself stays
// on localhost.
func (p *Proxy) StatusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz/ready", p.adminReady)
	mux.HandleFunc("/stats/prometheus", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		p.writePrometheus(w)
	})
	return mux
}

// writePrometheus writes Envoy's stats and Istio's standard metrics, as
// Istio's proxy serves both on /stats/prometheus.
func (p *Proxy) writePrometheus(w io.Writer) {
	p.Stats.WritePrometheus(w)
	p.Istio.WritePrometheus(w)
}

func (p *Proxy) serveHTTP(ctx context.Context, what, addr string, h http.Handler) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listening on %s: %w", what, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	p.adminLog.Info(what, "address", lis.Addr().String())
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

var adminEndpoints = []struct{ path, help string }{
	{"/certs", "print certs on machine"},
	{"/clusters", "upstream cluster status"},
	{"/config_dump", "dump current Envoy configs (?resource=, ?name_regex=, ?include_eds)"},
	{"/debug/pprof/", "Go profiles of the edge proxy (pprof)"},
	{"/drain_listeners", "drain listeners (POST)"},
	{"/healthcheck/fail", "cause the server to fail health checks (POST)"},
	{"/healthcheck/ok", "cause the server to pass health checks (POST)"},
	{"/help", "print out list of admin commands"},
	{"/init_dump", "dump current Envoy init manager information (experimental)"},
	{"/listeners", "print listener info (?format=json)"},
	{"/logging", "query/change logging levels (POST ?level=debug)"},
	{"/memory", "print current allocation/heap usage"},
	{"/quitquitquit", "exit the server (POST)"},
	{"/ready", "print server state, return 200 if LIVE, otherwise return 503"},
	{"/reset_counters", "reset all counters to zero (POST)"},
	{"/runtime", "print runtime values"},
	{"/server_info", "print server version/status information"},
	{"/stats", "print server stats (?filter=, ?format=json)"},
	{"/stats/prometheus", "print server stats in prometheus format"},
}

// AdminHandler serves Envoy's admin endpoints.
func (p *Proxy) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	help := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/help" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		fmt.Fprintln(w, "admin commands are:")
		for _, e := range adminEndpoints {
			fmt.Fprintf(w, "  %s: %s\n", e.path, e.help)
		}
	}
	mux.HandleFunc("/", help)
	mux.HandleFunc("/help", help)
	mux.HandleFunc("/memory", p.adminMemory)
	mux.HandleFunc("/runtime", func(w http.ResponseWriter, _ *http.Request) {
		// The proxy has no runtime layers: Envoy's answer with none.
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"layers":[],"entries":{}}`+"\n")
	})
	mux.HandleFunc("/init_dump", p.adminInitDump)
	mux.HandleFunc("/reset_counters", post(func(w http.ResponseWriter, _ *http.Request) {
		p.Stats.ResetCounters()
		p.Istio.Reset()
		fmt.Fprintln(w, "OK")
	}))
	mux.HandleFunc("/ready", p.adminReady)
	mux.HandleFunc("/server_info", p.adminServerInfo)
	mux.HandleFunc("/config_dump", p.adminConfigDump)
	mux.HandleFunc("/listeners", p.adminListeners)
	mux.HandleFunc("/clusters", p.adminClusters)
	mux.HandleFunc("/stats", p.adminStats)
	mux.HandleFunc("/stats/prometheus", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		p.writePrometheus(w)
	})
	mux.HandleFunc("/logging", p.adminLogging)
	mux.HandleFunc("/certs", p.adminCerts)
	mux.HandleFunc("/healthcheck/fail", post(func(w http.ResponseWriter, _ *http.Request) {
		p.healthFailed.Store(true)
		fmt.Fprintln(w, "OK")
	}))
	mux.HandleFunc("/healthcheck/ok", post(func(w http.ResponseWriter, _ *http.Request) {
		p.healthFailed.Store(false)
		fmt.Fprintln(w, "OK")
	}))
	mux.HandleFunc("/drain_listeners", post(func(w http.ResponseWriter, _ *http.Request) {
		p.draining.Store(true)
		p.Listeners.Drain(0)
		fmt.Fprintln(w, "OK")
	}))
	// Go's profiler, for the Go proxy only (Envoy has no such endpoint);
	// the admin interface is on localhost.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/quitquitquit", post(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "OK")
		p.Quit()
	}))
	return mux
}

// post rejects other methods, as Envoy's mutating endpoints do.
func post(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "This endpoint requires POST", http.StatusMethodNotAllowed)
			return
		}
		h(w, r)
	}
}

func (p *Proxy) state() string {
	switch {
	case p.draining.Load():
		return "DRAINING"
	case !p.ready.Load():
		return "PRE_INITIALIZING"
	}
	return "LIVE"
}

// adminReady answers Envoy's /ready (and the status port's
// /healthz/ready): the server state, 200 when LIVE. Readiness means every
// listener that can serve does; those that cannot (rejected alone) are
// listed after the state, one per line, so a probe that fails or a human
// who looks sees why a port is not served.
func (p *Proxy) adminReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	st := p.state()
	if p.healthFailed.Load() && st == "LIVE" {
		st = "DRAINING"
	}
	if st != "LIVE" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, st)
	problems := p.Problems()
	for _, n := range slices.Sorted(maps.Keys(problems)) {
		fmt.Fprintf(w, "listener %s: %s\n", n, problems[n])
	}
}

func writeProto(w http.ResponseWriter, m proto.Message) {
	// Default values are shown, as Envoy shows them ("state": "LIVE").
	b, err := configdump.MarshalJSON(m, true)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (p *Proxy) adminServerInfo(w http.ResponseWriter, _ *http.Request) {
	st := adminv3.ServerInfo_LIVE
	switch p.state() {
	case "DRAINING":
		st = adminv3.ServerInfo_DRAINING
	case "PRE_INITIALIZING":
		st = adminv3.ServerInfo_PRE_INITIALIZING
	}
	up := durationpb.New(time.Since(p.started).Truncate(time.Second))
	writeProto(w, &adminv3.ServerInfo{
		Version: Version, State: st, UptimeCurrentEpoch: up, UptimeAllEpochs: up, HotRestartVersion: "disabled",
		Node: p.Node(),
		CommandLineOptions: &adminv3.CommandLineOptions{
			ServiceNode: p.opts.NodeID, ServiceCluster: p.opts.Cluster, DrainTime: durationpb.New(p.opts.DrainTime),
			LogLevel: p.logLevel(), AdminAddressPath: p.opts.AdminAddress,
		},
	})
}

func (p *Proxy) logLevel() string {
	if p.opts.Logging != nil {
		if l, ok := p.opts.Logging.Levels()["main"]; ok {
			return l
		}
	}
	return "info"
}

func entries[T any](m map[string]*compiled[T], failure *configdump.Failure) []configdump.Entry {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]configdump.Entry, 0, len(names))
	for _, n := range names {
		c := m[n]
		out = append(out, configdump.Entry{Name: n, Resource: c.message(), Version: c.version, Updated: c.updated, Error: failure})
	}
	return out
}

// DumpInput assembles what /config_dump shows: what is active (and, for
// listeners, what is still warming).
func (p *Proxy) DumpInput() configdump.Input {
	hosts := map[string]upstream.HostStatus{}
	for _, h := range p.Clusters.Status() {
		hosts[h.Cluster+"|"+h.Addr] = h
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	clusters := map[string]*compiled[struct{}]{}
	for n, c := range p.clusters {
		clusters[n] = &compiled[struct{}]{msg: c.message(), version: c.version, updated: c.updated}
	}
	in := configdump.Input{
		BootstrapUpdated: p.started,
		Clusters:         entries(clusters, p.failures[resourcev3.ClusterType]),
		Listeners:        entries(p.activeListeners, p.failures[resourcev3.ListenerType]),
		Routes:           entries(p.activeRoutes, p.failures[resourcev3.RouteType]),
		Secrets:          entries(p.secrets, p.failures[resourcev3.SecretType]),
		Endpoints:        entries(p.endpoints, p.failures[resourcev3.EndpointType]),
	}
	if len(p.clusters) > 0 {
		for _, c := range p.clusters {
			in.ClustersVersion = c.version
			break
		}
	}
	for i, e := range in.Secrets {
		in.Secrets[i].Resource = p.inlineLoaded(e.Name, e.Resource)
	}
	for i, e := range in.Endpoints {
		in.Endpoints[i].Resource = liveEndpoints(e.Name, e.Resource, hosts)
	}
	in.Bootstrap = p.bootstrap()
	return in
}

// liveEndpoints shows a cluster's endpoints as Envoy's EDS dump does: not
// the assignment as received but each host as the proxy sees it now —
// health_status is the host's coarse health (UNHEALTHY once outlier
// detection ejects it or EDS says so, HEALTHY otherwise, also when EDS
// said nothing) and load_balancing_weight is always set. istioctl
// proxy-config endpoints -f reads these two columns.
func liveEndpoints(cluster string, m proto.Message, hosts map[string]upstream.HostStatus) proto.Message {
	cla, ok := m.(*endpointv3.ClusterLoadAssignment)
	if !ok {
		return m
	}
	c := proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
	for _, l := range c.Endpoints {
		for _, e := range l.LbEndpoints {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			h, live := hosts[cluster+"|"+net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))]
			switch {
			case live && (h.Ejected || !h.Healthy):
				e.HealthStatus = corev3.HealthStatus_UNHEALTHY
			case live:
				e.HealthStatus = corev3.HealthStatus_HEALTHY
			case e.HealthStatus == corev3.HealthStatus_UNKNOWN:
				e.HealthStatus = corev3.HealthStatus_HEALTHY
			case e.HealthStatus == corev3.HealthStatus_DRAINING || e.HealthStatus == corev3.HealthStatus_TIMEOUT:
				e.HealthStatus = corev3.HealthStatus_UNHEALTHY
			}
			if e.LoadBalancingWeight == nil {
				w := uint32(1)
				if live && h.Weight > 0 {
					w = h.Weight
				}
				e.LoadBalancingWeight = wrapperspb.UInt32(w)
			}
		}
	}
	return c
}

// inlineLoaded shows a secret whose certificates are files with the
// certificates loaded from them inline, as Envoy's dump does (istioctl
// proxy-config secret reads inline_bytes to fill its table). Private keys
// are never inlined.
func (p *Proxy) inlineLoaded(name string, m proto.Message) proto.Message {
	sec, ok := m.(*tlsv3.Secret)
	if !ok {
		return m
	}
	isFile := func(d *corev3.DataSource) bool {
		_, ok := d.GetSpecifier().(*corev3.DataSource_Filename)
		return ok
	}
	tc, vc := sec.GetTlsCertificate(), sec.GetValidationContext()
	if !isFile(tc.GetCertificateChain()) && !isFile(vc.GetTrustedCa()) {
		return m
	}
	chain, ca := p.Secrets.LoadedPEM(name)
	c := proto.Clone(sec).(*tlsv3.Secret)
	if t := c.GetTlsCertificate(); t != nil && isFile(t.CertificateChain) && len(chain) > 0 {
		t.CertificateChain = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: chain}}
	}
	if v := c.GetValidationContext(); v != nil && isFile(v.TrustedCa) && len(ca) > 0 {
		v.TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca}}
	}
	return c
}

func (p *Proxy) adminConfigDump(w http.ResponseWriter, r *http.Request) {
	configdump.Serve(w, r, p.DumpInput())
}

func (p *Proxy) adminListeners(w http.ResponseWriter, r *http.Request) {
	var statuses []*adminv3.ListenerStatus
	for _, name := range p.Listeners.Names() {
		host, port, _ := net.SplitHostPort(p.Listeners.BoundAddress(name))
		pn, _ := strconv.Atoi(port)
		statuses = append(statuses, &adminv3.ListenerStatus{Name: name, LocalAddress: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(pn)}}}}})
	}
	if r.URL.Query().Get("format") == "json" {
		writeProto(w, &adminv3.Listeners{ListenerStatuses: statuses})
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	for _, s := range statuses {
		sa := s.LocalAddress.GetSocketAddress()
		fmt.Fprintf(w, "%s::%s\n", s.Name, net.JoinHostPort(sa.Address, strconv.Itoa(int(sa.GetPortValue()))))
	}
}

func (p *Proxy) adminClusters(w http.ResponseWriter, r *http.Request) {
	status := p.Clusters.Status()
	if r.URL.Query().Get("format") == "json" {
		byCluster := map[string]*adminv3.ClusterStatus{}
		var order []string
		for _, h := range status {
			cs, ok := byCluster[h.Cluster]
			if !ok {
				cs = &adminv3.ClusterStatus{Name: h.Cluster}
				byCluster[h.Cluster] = cs
				order = append(order, h.Cluster)
			}
			host, port, _ := net.SplitHostPort(h.Addr)
			pn, _ := strconv.Atoi(port)
			hs := &adminv3.HostStatus{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(pn)}}}},
				Stats: []*adminv3.SimpleMetric{
					{Name: "rq_active", Value: uint64(h.Active), Type: adminv3.SimpleMetric_GAUGE},
					{Name: "rq_success", Value: h.Success}, {Name: "rq_error", Value: h.Errors},
				},
				HealthStatus: &adminv3.HostHealthStatus{FailedOutlierCheck: h.Ejected, EdsHealthStatus: healthOf(h.Healthy)},
				Weight:       h.Weight,
			}
			cs.HostStatuses = append(cs.HostStatuses, hs)
		}
		out := &adminv3.Clusters{}
		for _, n := range order {
			out.ClusterStatuses = append(out.ClusterStatuses, byCluster[n])
		}
		writeProto(w, out)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	for _, name := range p.Clusters.Names() {
		c := p.Clusters.Get(name)
		l := c.Config().Limits
		fmt.Fprintf(w, "%s::observability_name::%s\n", name, name)
		fmt.Fprintf(w, "%s::default_priority::max_connections::%d\n", name, clampLimit(l.MaxConnections))
		fmt.Fprintf(w, "%s::default_priority::max_pending_requests::%d\n", name, clampLimit(l.MaxPendingRequests))
		fmt.Fprintf(w, "%s::default_priority::max_requests::%d\n", name, clampLimit(l.MaxRequests))
		fmt.Fprintf(w, "%s::default_priority::max_retries::%d\n", name, clampLimit(l.MaxRetries))
		for _, h := range status {
			if h.Cluster != name {
				continue
			}
			health := "healthy"
			if h.Ejected {
				health = "/failed_outlier_check"
			} else if !h.Healthy {
				health = "/failed_eds_health"
			}
			fmt.Fprintf(w, "%s::%s::rq_active::%d\n", name, h.Addr, h.Active)
			fmt.Fprintf(w, "%s::%s::rq_success::%d\n", name, h.Addr, h.Success)
			fmt.Fprintf(w, "%s::%s::rq_error::%d\n", name, h.Addr, h.Errors)
			fmt.Fprintf(w, "%s::%s::health_flags::%s\n", name, h.Addr, health)
			fmt.Fprintf(w, "%s::%s::weight::%d\n", name, h.Addr, h.Weight)
		}
	}
}

func clampLimit(v int64) int64 {
	if v > 4294967295 {
		return 4294967295
	}
	return v
}

// adminMemory is Envoy's /memory, from the Go runtime's figures: what
// the heap holds, what it took from the OS, what it holds unused.
func (p *Proxy) adminMemory(w http.ResponseWriter, _ *http.Request) {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	writeProto(w, &adminv3.Memory{
		Allocated:          m.HeapAlloc,
		HeapSize:           m.HeapSys,
		PageheapUnmapped:   m.HeapReleased,
		PageheapFree:       m.HeapIdle - m.HeapReleased,
		TotalThreadCache:   m.MCacheInuse,
		TotalPhysicalBytes: m.Sys - m.HeapReleased,
	})
}

// adminInitDump is Envoy's /init_dump: what initialization still waits
// for — the listeners warming (their routes, clusters or secrets not yet
// received). Empty once everything is initialized.
func (p *Proxy) adminInitDump(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	var warming []string
	for n, l := range p.lsnrs {
		if a := p.activeListeners[n]; (a == nil || a.hash != l.hash) && p.lsnrProblems[n] == "" {
			warming = append(warming, "Listener-init-target "+n)
		}
	}
	p.mu.Unlock()
	sort.Strings(warming)
	out := &adminv3.UnreadyTargetsDumps{}
	if !p.ready.Load() || len(warming) > 0 {
		out.UnreadyTargetsDumps = append(out.UnreadyTargetsDumps, &adminv3.UnreadyTargetsDumps_UnreadyTargetsDump{
			Name: "Server", TargetNames: warming})
	}
	writeProto(w, out)
}

func healthOf(ok bool) corev3.HealthStatus {
	if ok {
		return corev3.HealthStatus_HEALTHY
	}
	return corev3.HealthStatus_UNHEALTHY
}

func (p *Proxy) adminStats(w http.ResponseWriter, r *http.Request) {
	var filter func(string) bool
	if f := r.URL.Query().Get("filter"); f != "" {
		re, err := regexp.Compile(f)
		if err != nil {
			http.Error(w, "invalid filter: "+err.Error(), http.StatusBadRequest)
			return
		}
		filter = re.MatchString
	}
	if r.URL.Query().Has("usedonly") {
		prev := filter
		filter = func(n string) bool {
			if prev != nil && !prev(n) {
				return false
			}
			v, _ := p.Stats.Lookup(n)
			return v != 0
		}
	}
	if r.URL.Query().Get("format") == "json" {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p.statsJSON(filter))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	p.Stats.WriteText(w, filter)
}

// statsJSON is Envoy's /stats?format=json: {"stats": [{"name", "value"},
// …, {"histograms": {"supported_quantiles", "computed_quantiles"}}]}.
// Interval quantiles are null: the proxy keeps no flush intervals.
func (p *Proxy) statsJSON(filter func(string) bool) any {
	type stat struct {
		Name  string `json:"name"`
		Value any    `json:"value"`
	}
	type value struct {
		Interval   *float64 `json:"interval"`
		Cumulative *float64 `json:"cumulative"`
	}
	type computed struct {
		Name   string  `json:"name"`
		Values []value `json:"values"`
	}
	type histograms struct {
		Supported []float64  `json:"supported_quantiles"`
		Computed  []computed `json:"computed_quantiles"`
	}
	names, quantiles := p.Stats.HistogramQuantiles(filter)
	isHistogram := map[string]bool{}
	for _, n := range names {
		isHistogram[n] = true
	}
	var sb strings.Builder
	p.Stats.WriteText(&sb, filter)
	out := struct {
		Stats []any `json:"stats"`
	}{Stats: []any{}}
	for _, line := range strings.Split(strings.TrimSpace(sb.String()), "\n") {
		name, val, ok := strings.Cut(line, ": ")
		if !ok || isHistogram[name] {
			continue
		}
		if n, err := strconv.ParseInt(val, 10, 64); err == nil {
			out.Stats = append(out.Stats, stat{name, n})
		} else {
			out.Stats = append(out.Stats, stat{name, val})
		}
	}
	if len(names) > 0 {
		hs := histograms{Supported: stats.SupportedQuantiles}
		for i, n := range names {
			c := computed{Name: n, Values: []value{}}
			for _, v := range quantiles[i] {
				if math.IsNaN(v) {
					c.Values = append(c.Values, value{})
				} else {
					c.Values = append(c.Values, value{Cumulative: &v})
				}
			}
			hs.Computed = append(hs.Computed, c)
		}
		out.Stats = append(out.Stats, map[string]any{"histograms": hs})
	}
	return out
}

// adminLogging is Envoy's /logging: GET lists the loggers and their
// levels; POST ?level=<level> changes all of them, ?<logger>=<level>
// (or ?paths=<logger>:<level>,…) only those named. An unknown logger
// or level changes nothing and answers 400 with the list.
func (p *Proxy) adminLogging(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if len(q) > 0 {
		if r.Method != http.MethodPost {
			http.Error(w, "This endpoint requires POST", http.StatusMethodNotAllowed)
			return
		}
		if p.opts.Logging == nil {
			http.Error(w, "log levels cannot be changed", http.StatusBadRequest)
			return
		}
		if err := p.setLogLevels(q); err != nil {
			w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "error: %v\n", err)
			p.writeLoggers(w)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	p.writeLoggers(w)
}

// setLogLevels checks every change before making any.
func (p *Proxy) setLogLevels(q url.Values) error {
	known := p.opts.Logging.Levels()
	type change struct{ name, level string }
	var changes []change
	for key, vals := range q {
		for _, v := range vals {
			switch key {
			case "level":
				changes = append(changes, change{"", v})
			case "paths":
				for _, pair := range strings.Split(v, ",") {
					name, level, ok := strings.Cut(strings.TrimSpace(pair), ":")
					if !ok {
						return fmt.Errorf("paths: want <logger>:<level>, got %q", pair)
					}
					changes = append(changes, change{name, level})
				}
			default:
				changes = append(changes, change{key, v})
			}
		}
	}
	for _, c := range changes {
		if _, ok := known[c.name]; c.name != "" && !ok {
			return fmt.Errorf("unknown logger %q", c.name)
		}
		if _, err := logging.ParseLevel(c.level); err != nil {
			return err
		}
	}
	// "level" first, so ?level=info&router=debug means what it says.
	sort.SliceStable(changes, func(i, j int) bool { return changes[i].name == "" && changes[j].name != "" })
	for _, c := range changes {
		if err := p.opts.Logging.SetLevel(c.name, c.level); err != nil {
			return err
		}
	}
	return nil
}

func (p *Proxy) writeLoggers(w io.Writer) {
	fmt.Fprintln(w, "active loggers:")
	if p.opts.Logging == nil {
		for _, name := range Loggers {
			fmt.Fprintf(w, "  %s: info\n", name)
		}
		return
	}
	levels := p.opts.Logging.Levels()
	for _, name := range slices.Sorted(maps.Keys(levels)) {
		fmt.Fprintf(w, "  %s: %s\n", name, levels[name])
	}
}

func (p *Proxy) adminCerts(w http.ResponseWriter, _ *http.Request) {
	out := &adminv3.Certificates{}
	now := time.Now()
	for _, info := range p.Secrets.Infos() {
		c := &adminv3.Certificate{}
		if info.Cert != nil {
			c.CertChain = append(c.CertChain, certDetails(info.Name, info.Source, info.Cert.SerialNumber, info.Cert.DNSNames, info.Cert.NotBefore, info.Cert.NotAfter, now))
		}
		for _, ca := range info.CA {
			c.CaCert = append(c.CaCert, certDetails(info.Name, info.Source, ca.SerialNumber, ca.DNSNames, ca.NotBefore, ca.NotAfter, now))
		}
		out.Certificates = append(out.Certificates, c)
	}
	writeProto(w, out)
}

func certDetails(name, source, serial string, dns []string, from, to, now time.Time) *adminv3.CertificateDetails {
	d := &adminv3.CertificateDetails{
		Path:                name + " (" + source + ")",
		SerialNumber:        serial,
		DaysUntilExpiration: uint64(max(0, to.Sub(now).Hours()/24)),
		ValidFrom:           timestamppb.New(from),
		ExpirationTime:      timestamppb.New(to),
	}
	for _, n := range dns {
		d.SubjectAltNames = append(d.SubjectAltNames, &adminv3.SubjectAlternateName{Name: &adminv3.SubjectAlternateName_Dns{Dns: n}})
	}
	return d
}
