//go:build linux

// Package loadbalancer is the conformance harness's stand-in for a cloud
// load balancer, so that a Gateway's status.addresses[0] is an address
// the suite can dial. Without kube-proxy a Service's ClusterIP routes
// nowhere, and a proxy pod's own IP changes whenever its Deployment rolls
// (listener changes do that). So every Service of type LoadBalancer gets
// an ingress IP from a reserved range of the pod bridge network, written
// to status.loadBalancer.ingress (the controller copies it into the
// Gateway's addresses), and the IP is added as a second address on eth0
// of one Ready pod the Service selects: on the bridge, that pod answers
// ARP for it. When that pod goes or stops being Ready, the address moves
// to another Ready pod. Service ports map to the same container ports
// (targetPort = port, which is what Portico's provisioner writes); other
// mappings are not translated.
package loadbalancer

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// PodNetwork tells where a pod's network namespace is.
type PodNetwork interface {
	NetNS(namespace, name string) (string, bool)
}

// Config configures the load balancer.
type Config struct {
	Client kubernetes.Interface
	Log    logr.Logger
	Pods   PodNetwork
	// First and Last bound the range ingress IPs are assigned from (inside
	// the bridge network, outside the pod IPs); PrefixLen is the bridge
	// network's.
	First, Last netip.Addr
	PrefixLen   int
	// Bridge is the bridge device (its neighbour entry for a moved IP is
	// flushed).
	Bridge string
}

// LB is a running load balancer.
type LB struct {
	cfg Config

	mu       sync.Mutex
	assigned map[string]netip.Addr // service key → ingress IP
	placed   map[string]string     // service key → netns holding the IP
}

// New returns a load balancer; Run runs it.
func New(cfg Config) *LB {
	return &LB{cfg: cfg, assigned: map[string]netip.Addr{}, placed: map[string]string{}}
}

// Run reconciles until ctx ends.
func (lb *LB) Run(ctx context.Context) {
	f := informers.NewSharedInformerFactory(lb.cfg.Client, time.Minute)
	svcs := f.Core().V1().Services()
	pods := f.Core().V1().Pods()
	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: func(any) { poke() }, UpdateFunc: func(any, any) { poke() }, DeleteFunc: func(any) { poke() }}
	svcs.Informer().AddEventHandler(h)
	pods.Informer().AddEventHandler(h)
	f.Start(ctx.Done())
	defer f.Shutdown()
	f.WaitForCacheSync(ctx.Done())
	tick := time.NewTicker(2 * time.Second) // and retry what failed
	defer tick.Stop()
	for {
		lb.reconcile(ctx, svcs.Lister().List, pods.Lister().List)
		select {
		case <-ctx.Done():
			return
		case <-trigger:
		case <-tick.C:
		}
	}
}

func (lb *LB) reconcile(ctx context.Context, listSvcs func(labels.Selector) ([]*corev1.Service, error), listPods func(labels.Selector) ([]*corev1.Pod, error)) {
	services, err := listSvcs(labels.Everything())
	if err != nil {
		return
	}
	allPods, _ := listPods(labels.Everything())
	lb.mu.Lock()
	defer lb.mu.Unlock()
	live := map[string]bool{}
	sort.Slice(services, func(i, j int) bool { return services[i].CreationTimestamp.Before(&services[j].CreationTimestamp) })
	for _, svc := range services {
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		k := svc.Namespace + "/" + svc.Name
		live[k] = true
		ip, ok := lb.assigned[k]
		if !ok {
			if ip, ok = lb.allocate(); !ok {
				lb.cfg.Log.Info("load balancer range exhausted", "service", k)
				continue
			}
			lb.assigned[k] = ip
		}
		if ing := svc.Status.LoadBalancer.Ingress; len(ing) != 1 || ing[0].IP != ip.String() {
			cp := svc.DeepCopy()
			cp.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String(), IPMode: ptrTo(corev1.LoadBalancerIPModeVIP)}}
			if _, err := lb.cfg.Client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil {
				lb.cfg.Log.Info("writing load balancer ingress", "service", k, "error", err.Error())
			}
		}
		lb.place(k, ip, svc, allPods)
	}
	for k, ip := range lb.assigned {
		if !live[k] {
			if ns := lb.placed[k]; ns != "" {
				lb.unplace(ns, ip)
			}
			delete(lb.assigned, k)
			delete(lb.placed, k)
		}
	}
}

// place keeps ip on one Ready pod the Service selects.
func (lb *LB) place(k string, ip netip.Addr, svc *corev1.Service, pods []*corev1.Pod) {
	var candidates []string
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	for _, p := range pods {
		if p.Namespace != svc.Namespace || len(svc.Spec.Selector) == 0 || !sel.Matches(labels.Set(p.Labels)) || p.DeletionTimestamp != nil || !podReady(p) {
			continue
		}
		if ns, ok := lb.cfg.Pods.NetNS(p.Namespace, p.Name); ok {
			candidates = append(candidates, ns)
		}
	}
	cur := lb.placed[k]
	for _, c := range candidates {
		if c == cur {
			return // still on a Ready pod
		}
	}
	if cur != "" {
		lb.unplace(cur, ip)
		delete(lb.placed, k)
	}
	if len(candidates) == 0 {
		return
	}
	sort.Strings(candidates)
	ns := candidates[0]
	if err := ipCmd("-n", ns, "addr", "add", fmt.Sprintf("%s/%d", ip, lb.cfg.PrefixLen), "dev", "eth0"); err != nil && !strings.Contains(err.Error(), "File exists") {
		lb.cfg.Log.Info("placing a load balancer IP", "service", k, "netns", ns, "error", err.Error())
		return
	}
	// Forget where the address was, so the next packet ARPs for it.
	ipCmd("neigh", "del", ip.String(), "dev", lb.cfg.Bridge)
	lb.placed[k] = ns
	lb.cfg.Log.Info("load balancer IP placed", "service", k, "ip", ip.String(), "netns", ns)
}

func (lb *LB) unplace(ns string, ip netip.Addr) {
	ipCmd("-n", ns, "addr", "del", fmt.Sprintf("%s/%d", ip, lb.cfg.PrefixLen), "dev", "eth0")
	ipCmd("neigh", "del", ip.String(), "dev", lb.cfg.Bridge)
}

func (lb *LB) allocate() (netip.Addr, bool) {
	used := map[netip.Addr]bool{}
	for _, ip := range lb.assigned {
		used[ip] = true
	}
	for ip := lb.cfg.First; ip.Compare(lb.cfg.Last) <= 0; ip = ip.Next() {
		if !used[ip] {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func ptrTo[T any](v T) *T { return &v }
