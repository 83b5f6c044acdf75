package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/ir"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// Annotations on gateway Services.
const (
	// AnnotationManagePorts opts a Service in: its ports follow the
	// Gateways that select its pods.
	AnnotationManagePorts = "portico.io/manage-ports"
	// AnnotationManagedPorts records the ports Portico added, so it never
	// removes ports a user wrote.
	AnnotationManagedPorts = "portico.io/managed-ports"
)

// ServicePorts keeps gateway Services' ports in step with their Gateways'
// servers: a Gateway opening a port the Service lacks is the most common
// "it does not work" report from Istio users.
type ServicePorts struct {
	p   *Provider
	log logr.Logger
	// NodePorts maps service ports to preferred node ports (80 → 31380).
	NodePorts map[uint32]uint32
	// TargetPorts maps service ports to the ports the proxy pods listen on
	// (they run unprivileged: 80 → 8080); identity when absent.
	TargetPorts map[uint32]uint32
}

// NewServicePorts returns a reconciler.
func NewServicePorts(p *Provider, log logr.Logger, nodePorts, targetPorts map[uint32]uint32) *ServicePorts {
	return &ServicePorts{p: p, log: log, NodePorts: nodePorts, TargetPorts: targetPorts}
}

// Classes returns the selectors of managed Services, so the controller
// builds exactly the classes they front.
func (s *ServicePorts) Classes() []map[string]string {
	var list corev1.ServiceList
	// No deep copy of every Service on every build: only the selectors
	// of the few managed ones are kept, cloned.
	if err := s.p.cached.List(context.Background(), &list, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	var out []map[string]string
	for i := range list.Items {
		svc := &list.Items[i]
		if svc.Annotations[AnnotationManagePorts] == "true" && len(svc.Spec.Selector) > 0 {
			out = append(out, maps.Clone(svc.Spec.Selector))
		}
	}
	return out
}

type wantPort struct {
	port  uint32
	name  string
	owner []resource.Key // Gateways serving it
}

// listenerPorts lists the ports a class listens on, with their Gateways.
func listenerPorts(p *ir.Proxy) []wantPort {
	var out []wantPort
	for _, l := range p.Listeners {
		w := wantPort{port: l.Port, name: portName(l)}
		for _, src := range l.Sources {
			if src.Kind == resource.KindGateway {
				w.owner = append(w.owner, resource.Key{Kind: src.Kind, Namespace: src.Namespace, Name: src.Name})
			}
		}
		out = append(out, w)
	}
	return out
}

// portName follows Istio's port naming so protocol detection works.
func portName(l *ir.Listener) string {
	proto := "tcp"
	for _, fc := range l.FilterChains {
		switch {
		case fc.HTTP != nil && fc.TLS != nil:
			proto = "https"
		case fc.HTTP != nil:
			proto = "http2"
		case fc.TLS != nil || len(fc.ServerNames) > 0:
			proto = "tls"
		}
	}
	return fmt.Sprintf("%s-%d", proto, l.Port)
}

// Reconcile updates managed Services and returns, per Gateway, an
// "Exposed" condition saying where its ports are reachable (or which are
// missing from an unmanaged Service). The error joins the Services it
// could not update, so the caller can try again: no event may follow a
// failed update.
func (s *ServicePorts) Reconcile(ctx context.Context, result *gateway.Result) (map[resource.Key]status.Condition, error) {
	var list corev1.ServiceList
	if err := s.p.cached.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing Services: %w", err)
	}
	var errs []error
	facts := map[resource.Key][]string{}
	missing := map[resource.Key][]string{}
	for i := range list.Items {
		svc := &list.Items[i]
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		proxy := result.Proxy(svc.Spec.Selector)
		if proxy == nil || len(proxy.Gateways) == 0 {
			continue
		}
		want := listenerPorts(proxy)
		if svc.Annotations[AnnotationManagePorts] == "true" {
			updated, err := s.reconcileService(ctx, svc, want)
			if err != nil {
				errs = append(errs, fmt.Errorf("updating the ports of gateway Service %s/%s: %w", svc.Namespace, svc.Name, err))
				continue
			}
			svc = updated
		}
		have := map[uint32]corev1.ServicePort{}
		for _, sp := range svc.Spec.Ports {
			have[uint32(sp.Port)] = sp
		}
		for _, w := range want {
			sp, ok := have[w.port]
			for _, gw := range w.owner {
				if !ok {
					missing[gw] = append(missing[gw], fmt.Sprintf("%d (Service %s/%s)", w.port, svc.Namespace, svc.Name))
					continue
				}
				fact := fmt.Sprintf("%d → Service %s/%s", w.port, svc.Namespace, svc.Name)
				if sp.NodePort != 0 {
					fact += fmt.Sprintf(" nodePort %d", sp.NodePort)
				}
				facts[gw] = append(facts[gw], fact)
			}
		}
	}
	out := map[resource.Key]status.Condition{}
	for gw, f := range facts {
		sort.Strings(f)
		out[gw] = status.Condition{Type: "Exposed", Status: "True", Reason: "ServicePortsReady", Message: strings.Join(f, "; ")}
	}
	for gw, m := range missing {
		sort.Strings(m)
		out[gw] = status.Condition{Type: "Exposed", Status: "False", Reason: "GatewayPortNotOnService",
			Message: fmt.Sprintf("ports %s are served by the gateway but not exposed by its Service; add them, or annotate the Service with %s: \"true\" [%s]",
				strings.Join(m, ", "), AnnotationManagePorts, status.GatewayPortNotOnService.ID)}
	}
	return out, errors.Join(errs...)
}

func parseManaged(s string) map[uint32]bool {
	out := map[uint32]bool{}
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			out[uint32(n)] = true
		}
	}
	return out
}

func (s *ServicePorts) reconcileService(ctx context.Context, svc *corev1.Service, want []wantPort) (*corev1.Service, error) {
	wanted := map[uint32]wantPort{}
	for _, w := range want {
		wanted[w.port] = w
	}
	managed := parseManaged(svc.Annotations[AnnotationManagedPorts])
	next := svc.DeepCopy()
	next.Spec.Ports = nil
	present := map[uint32]bool{}
	changed := false
	for _, sp := range svc.Spec.Ports {
		p := uint32(sp.Port)
		if _, still := wanted[p]; managed[p] && !still {
			changed = true // a port Portico added whose server is gone
			delete(managed, p)
			continue
		}
		present[p] = true
		next.Spec.Ports = append(next.Spec.Ports, sp)
	}
	nodePorts := svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
	var added []uint32
	for _, w := range want {
		if present[w.port] {
			continue
		}
		target := w.port
		if t, ok := s.TargetPorts[w.port]; ok {
			target = t
		}
		sp := corev1.ServicePort{Name: w.name, Port: int32(w.port), Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(int32(target))}
		if np, ok := s.NodePorts[w.port]; ok && nodePorts {
			sp.NodePort = int32(np)
		}
		next.Spec.Ports = append(next.Spec.Ports, sp)
		managed[w.port] = true
		added = append(added, w.port)
		changed = true
	}
	if !changed {
		return svc, nil
	}
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	var ml []string
	for p := range managed {
		ml = append(ml, strconv.Itoa(int(p)))
	}
	sort.Strings(ml)
	next.Annotations[AnnotationManagedPorts] = strings.Join(ml, ",")
	err := s.p.api.Update(ctx, next, client.FieldOwner("portico"))
	if err != nil && apierrors.IsInvalid(err) && strings.Contains(err.Error(), "provided port is already allocated") {
		// The preferred node port is taken: let the API server choose.
		for i := range next.Spec.Ports {
			for _, a := range added {
				if uint32(next.Spec.Ports[i].Port) == a {
					next.Spec.Ports[i].NodePort = 0
				}
			}
		}
		err = s.p.api.Update(ctx, next, client.FieldOwner("portico"))
	}
	if err != nil {
		return nil, err
	}
	s.log.Info("gateway Service ports updated", "service", svc.Namespace+"/"+svc.Name, "added", added, "managed", next.Annotations[AnnotationManagedPorts])
	return next, nil
}
