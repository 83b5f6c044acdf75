package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/portico-gateway/portico/pkg/gateway"
	"github.com/portico-gateway/portico/pkg/resource"
	"github.com/portico-gateway/portico/pkg/status"
)

// StatusWriter writes statuses back onto the Istio resources, in Istio's
// shape, and onto Gateway API resources, in theirs, from the elected
// replica only; it also runs the provisioning of Gateway API Gateways'
// proxies there. A status is written only when it differs from what the
// resource already carries, and writes are rate-limited so a large
// change cannot flood the API server.
type StatusWriter struct {
	p       *Provider
	log     logr.Logger
	limiter *rate.Limiter
	ports   *ServicePorts
	// controllerName is the GatewayClass controllerName whose statuses
	// (and route parent entries) this controller owns.
	controllerName string
	provisioner    *Provisioner

	mu      sync.Mutex
	pending []*status.Status
	result  *gateway.Result
	kick    chan struct{}
	// checked is, per resource, the status last found on it or written
	// to it, and the resourceVersion it was found at. While both are the
	// same there is nothing to compare: a pass used to copy every object
	// out of the cache and round-trip two statuses through JSON per
	// resource, on every change, although one changed. Only the writer
	// loop touches it.
	checked map[resource.Key]checkedStatus
	// compared counts the statuses compared in full (tests).
	compared int
	// elected, if set, replaces the manager's election (tests).
	elected <-chan struct{}
}

// NewStatusWriter returns a writer; Run starts it.
func NewStatusWriter(p *Provider, ports *ServicePorts, log logr.Logger) *StatusWriter {
	return &StatusWriter{p: p, log: log, limiter: rate.NewLimiter(50, 100), ports: ports, kick: make(chan struct{}, 1),
		controllerName: DefaultControllerName, provisioner: NewProvisioner(p, log.WithName("provision"), DefaultControllerName)}
}

// SetControllerName changes the GatewayClass controllerName this
// controller implements (default DefaultControllerName).
func (w *StatusWriter) SetControllerName(name string) {
	w.controllerName = name
	if w.provisioner != nil {
		w.provisioner.controllerName = name
	}
}

// Provisioner is the provisioner the writer runs (to tune its image and
// xDS address).
func (w *StatusWriter) Provisioner() *Provisioner { return w.provisioner }

// Update implements controller.StatusSink: it records the latest statuses
// and lets the writer loop catch up.
func (w *StatusWriter) Update(_ context.Context, result *gateway.Result) {
	w.mu.Lock()
	w.pending, w.result = result.Statuses, result
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run writes statuses while this replica is the leader, until ctx ends.
func (w *StatusWriter) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-w.electedC():
	}
	w.log.Info("elected: writing statuses and gateway Service ports")
	// A failed pass is tried again after a backoff: the failure (a
	// conflict, a node port taken, the API server restarting) may be
	// followed by no event that would start another build.
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.kick:
		case <-retry.C:
		}
		if w.pass(ctx) {
			backoff = min(max(2*backoff, retryMin), retryMax)
			retry.Reset(backoff)
		} else {
			backoff = 0
			retry.Stop()
		}
	}
}

func (w *StatusWriter) electedC() <-chan struct{} {
	if w.elected != nil {
		return w.elected
	}
	return w.p.Elected()
}

// Backoff between failed status passes.
const (
	retryMin = 250 * time.Millisecond
	retryMax = 30 * time.Second
)

// pass writes the latest statuses and reconciles provisioned proxies and
// gateway Service ports; it reports whether anything failed.
func (w *StatusWriter) pass(ctx context.Context) (failed bool) {
	w.mu.Lock()
	statuses, result := w.pending, w.result
	w.mu.Unlock()
	if w.provisioner != nil && result != nil {
		// First, so the addresses of a Service created now follow
		// with the next build.
		w.provisioner.Reconcile(ctx)
	}
	if w.ports != nil && result != nil {
		exposed, err := w.ports.Reconcile(ctx, result)
		if err != nil && ctx.Err() == nil {
			w.log.Error(err, "reconciling gateway Service ports; trying again")
			failed = true
		}
		statuses = withExposure(statuses, exposed)
	}
	next := make(map[resource.Key]checkedStatus, len(statuses))
	defer func() { w.checked = next }()
	for _, st := range statuses {
		if err := w.write(ctx, st, next); err != nil {
			if ctx.Err() != nil {
				return false
			}
			w.log.Error(err, "writing status", "resource", st.Key.String())
			failed = true
		}
	}
	if result != nil && len(w.p.gatewayAPIGVKs()) > 0 {
		failed = w.writeAPIStatuses(ctx, result.APIStatuses) || failed
	}
	return failed && ctx.Err() == nil
}

// withExposure adds each Gateway's "Exposed" condition.
func withExposure(statuses []*status.Status, exposed map[resource.Key]status.Condition) []*status.Status {
	if len(exposed) == 0 {
		return statuses
	}
	out := make([]*status.Status, len(statuses))
	for i, st := range statuses {
		cond, ok := exposed[st.Key]
		if !ok {
			out[i] = st
			continue
		}
		cp := *st
		cond.ObservedGeneration = st.ObservedGeneration
		cp.Conditions = append(append([]status.Condition(nil), st.Conditions...), cond)
		out[i] = &cp
	}
	return out
}

var levels = map[status.Level]string{status.Error: "ERROR", status.Warning: "WARNING", status.Info: "INFO"}

// istioStatus renders a status as Istio's IstioStatus (protojson spelling:
// int64 as strings), keeping transition times of unchanged conditions.
func istioStatus(st *status.Status, current map[string]any, now time.Time) map[string]any {
	prevLTT := map[string]any{}
	if conds, ok := current["conditions"].([]any); ok {
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok {
				prevLTT[fmt.Sprint(m["type"], "/", m["status"])] = m["lastTransitionTime"]
			}
		}
	}
	var conds []any
	for _, c := range st.Conditions {
		ltt := prevLTT[c.Type+"/"+c.Status]
		if ltt == nil {
			ltt = now.UTC().Format(time.RFC3339)
		}
		conds = append(conds, map[string]any{
			"type": c.Type, "status": c.Status, "reason": c.Reason, "message": c.Message,
			"lastTransitionTime": ltt, "observedGeneration": strconv.FormatInt(c.ObservedGeneration, 10),
		})
	}
	out := map[string]any{"conditions": conds, "observedGeneration": strconv.FormatInt(st.ObservedGeneration, 10)}
	var msgs []any
	for _, m := range st.Messages {
		vm := map[string]any{
			"type":  map[string]any{"code": m.Code.ID, "name": m.Code.Name},
			"level": levels[m.Level],
			// Istio's AnalysisMessageBase has no text; the status schema
			// preserves unknown fields, so the text travels along.
			"message": m.Message,
		}
		if strings.HasPrefix(m.Code.ID, "IST") {
			vm["documentationUrl"] = "https://istio.io/latest/docs/reference/config/analysis/" + strings.ToLower(m.Code.ID) + "/"
		}
		if m.Field != "" {
			vm["field"] = m.Field
		}
		msgs = append(msgs, vm)
	}
	if len(msgs) > 0 {
		out["validationMessages"] = msgs
	}
	return out
}

// normalise round-trips through JSON so comparisons ignore Go types.
func normalise(v any) any {
	b, _ := json.Marshal(v)
	var out any
	json.Unmarshal(b, &out)
	return out
}

// checkedStatus is a status found on a resource, or written to it, and
// the resource's version then.
type checkedStatus struct {
	resourceVersion string
	status          *status.Status
}

// sameStatus reports whether a and b render to the same Istio status.
func sameStatus(a, b *status.Status) bool {
	return a.ObservedGeneration == b.ObservedGeneration && slices.Equal(a.Conditions, b.Conditions) && slices.Equal(a.Messages, b.Messages)
}

// cachedObject returns the cache's object for key: the informer store's
// own (never to be modified) when there is one, a copy otherwise; nil
// when there is none.
func (w *StatusWriter) cachedObject(ctx context.Context, gvk schema.GroupVersionKind, key resource.Key) (*unstructured.Unstructured, error) {
	if s := w.p.stores[gvk]; s != nil {
		obj, ok, err := s.GetByKey(key.Namespace + "/" + key.Name)
		if err != nil {
			return nil, err
		}
		if u, isU := obj.(*unstructured.Unstructured); ok && isU {
			return u, nil
		}
		if !ok {
			return nil, nil
		}
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if err := w.p.cached.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: key.Name}, u); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return u, nil
}

// write brings one resource's status up to date, recording in next what
// it found or wrote.
func (w *StatusWriter) write(ctx context.Context, st *status.Status, next map[resource.Key]checkedStatus) error {
	gvk, ok := w.p.gvks[st.Key.Kind]
	if !ok || st.Key.Group != "" {
		return nil // not an Istio kind
	}
	u, err := w.cachedObject(ctx, gvk, st.Key)
	if err != nil || u == nil {
		return err // nil: deleted meanwhile
	}
	rv := u.GetResourceVersion()
	if c, ok := w.checked[st.Key]; ok && c.resourceVersion == rv && sameStatus(c.status, st) {
		next[st.Key] = c
		return nil
	}
	if st.ObservedGeneration < u.GetGeneration() {
		return nil // a newer generation is being built; its status follows
	}
	w.compared++
	current, _ := u.Object["status"].(map[string]any)
	desired := istioStatus(st, current, time.Now())
	if reflect.DeepEqual(normalise(current), normalise(desired)) {
		next[st.Key] = checkedStatus{resourceVersion: rv, status: st}
		return nil
	}
	if err := w.limiter.Wait(ctx); err != nil {
		return err
	}
	// A merge patch keeps keys it does not name: validation messages that
	// went away are deleted by name (null), or they would stay, and every
	// pass would find the status different and write it again.
	body := desired
	if _, ok := desired["validationMessages"]; !ok {
		body = maps.Clone(desired)
		body["validationMessages"] = nil
	}
	patch, err := json.Marshal(map[string]any{"status": body})
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gvk)
	obj.SetNamespace(st.Key.Namespace)
	obj.SetName(st.Key.Name)
	err = w.p.api.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("portico"))
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		// The version the patch made: the cache has it once its watch
		// catches up, and then nothing is left to compare.
		next[st.Key] = checkedStatus{resourceVersion: obj.GetResourceVersion(), status: st}
	}
	return err
}
