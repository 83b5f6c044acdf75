// Package istiometrics emits Istio's standard metrics (istio_requests_total,
// istio_request_duration_milliseconds, istio_request_bytes,
// istio_response_bytes, istio_tcp_*) from the edge proxy, with Istio's
// names, labels and semantics for a gateway: reporter "source", the
// gateway as the source workload, the destination from the routed cluster
// (service) and the chosen endpoint (workload, app, version). Istio's
// Grafana dashboards and Kiali read these series.
//
// Label sets are rendered once per (destination, protocol, code, flags)
// and kept in copy-on-write maps, so recording a request is two lock-free
// map reads and a few atomic adds.
package istiometrics

import (
	"strings"

	"github.com/portico-gateway/portico/pkg/proxy/upstream"
)

// Unknown is Istio's value for a label nothing tells.
const Unknown = "unknown"

// latest is Istio's canonical revision when none is known.
const latest = "latest"

// defaultCluster is Istio's CLUSTER_ID when none is configured.
const defaultCluster = "Kubernetes"

// Workload is one side of a request, as Istio's peer metadata describes it.
type Workload struct {
	Name              string
	Namespace         string
	App               string
	Version           string
	CanonicalService  string
	CanonicalRevision string
	Cluster           string
	Principal         string
}

// Istio's canonical service and revision labels, in precedence order
// (pkg/model/labels in Istio).
var (
	canonicalNameLabels     = []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"}
	canonicalRevisionLabels = []string{"service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"}
)

func firstLabel(labels map[string]string, keys []string) string {
	for _, k := range keys {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}

// SourceWorkload describes the gateway itself from what the proxy knows
// about itself: its pod labels (--labels), namespace and service cluster
// (--service-cluster, which Istio's gateway deployments set to the
// workload name). The workload name is the service.istio.io/workload-name
// label when set, else the service cluster, else the app label.
func SourceWorkload(labels map[string]string, namespace, serviceCluster string) Workload {
	w := Workload{Namespace: namespace, Principal: Unknown}
	w.Name = labels["service.istio.io/workload-name"]
	if w.Name == "" && serviceCluster != "istio-proxy" {
		w.Name = serviceCluster
	}
	if w.Name == "" {
		w.Name = labels["app"]
	}
	w.CanonicalService = firstLabel(labels, canonicalNameLabels)
	if w.CanonicalService == "" {
		w.CanonicalService = w.Name
	}
	w.CanonicalRevision = firstLabel(labels, canonicalRevisionLabels)
	w.App, w.Version = labels["app"], labels["version"]
	w.Cluster = labels["topology.istio.io/cluster"]
	if w.Cluster == "" {
		w.Cluster = defaultCluster
	}
	return w.withDefaults()
}

// withDefaults fills what is unknown the way Istio's stats filter does:
// "unknown", "latest" for the canonical revision, and app/version falling
// back to the canonical service/revision.
func (w Workload) withDefaults() Workload {
	if w.App == "" {
		w.App = w.CanonicalService
	}
	if w.Version == "" {
		w.Version = w.CanonicalRevision
	}
	for _, p := range []*string{&w.Name, &w.Namespace, &w.App, &w.Version, &w.CanonicalService, &w.Cluster, &w.Principal} {
		if *p == "" {
			*p = Unknown
		}
	}
	if w.CanonicalRevision == "" {
		w.CanonicalRevision = latest
	}
	return w
}

// Destination is what a request's destination labels say.
type Destination struct {
	Workload
	Service          string // FQDN
	ServiceName      string
	ServiceNamespace string
}

// DestinationOf computes the destination labels of a request sent to a
// cluster (nil: it reached none) and one of its endpoints (nil: none was
// chosen). The service comes from the cluster's istio.services metadata,
// else from its name (outbound|port|subset|fqdn); the workload from the
// endpoint's metadata; an endpoint that names no cluster is in
// localCluster (the proxy's own). A gateway does not fall back to the Host header
// (Istio disables that for gateways), so a request that never reached a
// cluster has an unknown destination.
func DestinationOf(cluster *upstream.ClusterConfig, ep *upstream.EndpointMeta, localCluster string) Destination {
	var d Destination
	if cluster != nil {
		if s := cluster.Service; s != nil {
			d.Service, d.ServiceName, d.ServiceNamespace = s.Host, s.Name, s.Namespace
		} else if _, _, _, host, ok := ParseClusterName(cluster.Name); ok {
			d.Service = host
		}
		if d.Service != "" && d.ServiceName == "" {
			d.ServiceName, d.ServiceNamespace = splitServiceHost(d.Service)
		}
	}
	if ep != nil {
		d.Workload = Workload{Name: ep.Workload, Namespace: ep.Namespace, App: ep.App, Version: ep.Version,
			CanonicalService: ep.CanonicalService, CanonicalRevision: ep.CanonicalRevision, Cluster: ep.Cluster}
		if d.Cluster == "" {
			d.Cluster = localCluster
		}
	}
	d.Workload = d.Workload.withDefaults()
	for _, p := range []*string{&d.Service, &d.ServiceName, &d.ServiceNamespace} {
		if *p == "" {
			*p = Unknown
		}
	}
	return d
}

// splitServiceHost derives a service's name and namespace from its host:
// name.namespace.svc.<domain> for Kubernetes services; any other host
// (a ServiceEntry's) is its own name, in an unknown namespace.
func splitServiceHost(host string) (name, namespace string) {
	parts := strings.Split(host, ".")
	if len(parts) >= 3 && parts[2] == "svc" {
		return parts[0], parts[1]
	}
	return host, ""
}

// ParseClusterName splits Istio's cluster name
// direction|port|subset|fqdn.
func ParseClusterName(name string) (direction, port, subset, host string, ok bool) {
	parts := strings.SplitN(name, "|", 4)
	if len(parts) != 4 || parts[3] == "" {
		return "", "", "", "", false
	}
	return parts[0], parts[1], parts[2], parts[3], true
}

// labelWriter renders Prometheus label pairs.
type labelWriter struct{ b strings.Builder }

func (l *labelWriter) add(name, value string) {
	if l.b.Len() > 0 {
		l.b.WriteByte(',')
	}
	l.b.WriteString(name)
	l.b.WriteString(`="`)
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			l.b.WriteString(`\\`)
		case '"':
			l.b.WriteString(`\"`)
		case '\n':
			l.b.WriteString(`\n`)
		default:
			l.b.WriteByte(c)
		}
	}
	l.b.WriteByte('"')
}

// peerLabels renders the source_* or destination_* labels in Istio's
// order.
func sourceLabels(l *labelWriter, s Workload) {
	l.add("reporter", "source")
	l.add("source_workload", s.Name)
	l.add("source_canonical_service", s.CanonicalService)
	l.add("source_canonical_revision", s.CanonicalRevision)
	l.add("source_workload_namespace", s.Namespace)
	l.add("source_principal", s.Principal)
	l.add("source_app", s.App)
	l.add("source_version", s.Version)
	l.add("source_cluster", s.Cluster)
}

func destinationLabels(l *labelWriter, d Destination) {
	l.add("destination_workload", d.Name)
	l.add("destination_workload_namespace", d.Namespace)
	l.add("destination_principal", d.Principal)
	l.add("destination_app", d.App)
	l.add("destination_version", d.Version)
	l.add("destination_service", d.Service)
	l.add("destination_canonical_service", d.CanonicalService)
	l.add("destination_canonical_revision", d.CanonicalRevision)
	l.add("destination_service_name", d.ServiceName)
	l.add("destination_service_namespace", d.ServiceNamespace)
	l.add("destination_cluster", d.Cluster)
}
