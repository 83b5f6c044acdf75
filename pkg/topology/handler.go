package topology

import (
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/portico-gateway/portico/pkg/controller"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/topology/ui"
)

// Paths the handler serves (Register mounts them).
const (
	PagePath   = "/debug/topology"
	JSONPath   = "/debug/topology.json"
	AssetsPath = "/debug/topology/"
	SourcePath = "/debug/topology/source"
	// ConfigDumpPath is the controller's own config_dump endpoint.
	ConfigDumpPath = "/debug/config_dump"
)

// Handler serves the page, its JSON and the source YAML of resources.
type Handler struct {
	// State is the controller's last build.
	State func() *controller.State
	// Scraper may be nil: the graph then has no numbers.
	Scraper *Scraper
	// Now defaults to time.Now.
	Now func() time.Time
}

// Register mounts the handler's paths on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc(PagePath, h.page)
	mux.HandleFunc(JSONPath, h.json)
	mux.HandleFunc(SourcePath, h.source)
	mux.Handle(AssetsPath, http.StripPrefix(AssetsPath, http.FileServerFS(ui.Assets())))
}

// Graph builds the graph now.
func (h *Handler) Graph() *Graph {
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	in := BuildInput{State: h.State(), ConfigDump: ConfigDumpPath, Source: SourcePath, Now: now()}
	if h.Scraper != nil {
		in.Stats = h.Scraper.Window()
	}
	return Build(in)
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	setSecurityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(ui.Index())
}

func (h *Handler) json(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	g := h.Graph()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	enc.Encode(g)
}

// viewable are the kinds whose YAML the page links to. Secrets never:
// they hold private keys.
var viewable = map[string]bool{
	resource.KindGateway: true, resource.KindVirtualService: true, resource.KindDestinationRule: true,
	resource.KindServiceEntry: true, resource.KindService: true, resource.KindHTTPRoute: true,
	resource.KindGRPCRoute: true, resource.KindTLSRoute: true, resource.KindTCPRoute: true,
}

// source serves the YAML of the resources with that kind, namespace and
// name (an Istio Gateway and a Gateway API Gateway may share both).
func (h *Handler) source(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind, ns, name := q.Get("kind"), q.Get("namespace"), q.Get("name")
	if !viewable[kind] {
		http.Error(w, "kind must be one of Gateway, VirtualService, DestinationRule, ServiceEntry, Service, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute", http.StatusBadRequest)
		return
	}
	st := h.State()
	if st == nil || st.Resources == nil {
		http.Error(w, "no configuration built yet", http.StatusServiceUnavailable)
		return
	}
	var docs []string
	for _, obj := range st.Resources.All() {
		k := resource.KeyOf(obj)
		if k.Kind != kind || k.Namespace != ns || k.Name != name {
			continue
		}
		b, err := sourceYAML(obj)
		if err != nil {
			http.Error(w, "rendering "+k.String()+": "+err.Error(), http.StatusInternalServerError)
			return
		}
		docs = append(docs, "# "+k.String()+"\n"+string(b))
	}
	if len(docs) == 0 {
		http.Error(w, kind+" "+ns+"/"+name+" not found", http.StatusNotFound)
		return
	}
	setSecurityHeaders(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(strings.Join(docs, "---\n")))
}

// sourceYAML renders an object as its author would read it: without
// managedFields, with its kind.
func sourceYAML(obj resource.Object) ([]byte, error) {
	c := obj.DeepCopyObject().(resource.Object)
	c.SetManagedFields(nil)
	if m, ok := c.(metav1.Object); ok {
		ann := m.GetAnnotations()
		if _, ok := ann["kubectl.kubernetes.io/last-applied-configuration"]; ok {
			ann = maps.Clone(ann)
			delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
			m.SetAnnotations(ann)
		}
	}
	if gvk := c.GetObjectKind().GroupVersionKind(); gvk.Kind == "" {
		k := resource.KindOf(c)
		g := resource.GroupOf(k)
		if g == "" {
			c.GetObjectKind().SetGroupVersionKind(gvkOf("", "v1", k))
		} else {
			c.GetObjectKind().SetGroupVersionKind(gvkOf(g, "v1", k))
		}
	}
	return yaml.Marshal(c)
}

func gvkOf(group, version, kind string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: group, Version: version, Kind: kind}
}

func setSecurityHeaders(w http.ResponseWriter) {
	// Everything the page uses is served from here: no CDN, no inline
	// script, and the YAML is text, never HTML.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}
