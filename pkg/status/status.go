// Package status records what the controller thinks of every input
// resource, in Istio's status shape: conditions (type, status, reason,
// message, observedGeneration) and validation messages with Istio's stable
// analysis codes (IST0101, …) so users can search for them.
package status

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/portico-gateway/portico/pkg/resource"
)

// Level is a validation message's severity, as in istioctl analyze.
type Level string

// Levels.
const (
	Error   Level = "Error"
	Warning Level = "Warning"
	Info    Level = "Info"
)

// Code is a stable analysis code. Istio's codes are reused where Istio has
// one for the same problem; Portico-specific ones use the PTC prefix.
type Code struct {
	ID   string `json:"code"`
	Name string `json:"name"`
}

// Codes.
var (
	ReferencedResourceNotFound      = Code{"IST0101", "ReferencedResourceNotFound"}
	SchemaValidationError           = Code{"IST0106", "SchemaValidationError"}
	DestinationPortSelectorRequired = Code{"IST0112", "VirtualServiceDestinationPortSelectorRequired"}
	InvalidAnnotation               = Code{"IST0125", "InvalidAnnotation"}
	NoMatchingWorkloadsFound        = Code{"IST0127", "NoMatchingWorkloadsFound"}
	VirtualServiceUnreachableRule   = Code{"IST0130", "VirtualServiceUnreachableRule"}
	VirtualServiceIneffectiveMatch  = Code{"IST0131", "VirtualServiceIneffectiveMatch"}
	VirtualServiceHostNotFoundInGW  = Code{"IST0132", "VirtualServiceHostNotFoundInGateway"}
	SchemaWarning                   = Code{"IST0133", "SchemaWarning"}
	GatewayDuplicateCertificate     = Code{"IST0138", "GatewayDuplicateCertificate"}
	ConflictingGateways             = Code{"IST0145", "ConflictingGateways"}
	InvalidGatewayCredential        = Code{"IST0161", "InvalidGatewayCredential"}
	UnsupportedAtGateway            = Code{"PTC0001", "UnsupportedAtGateway"}
	GatewayPortNotOnService         = Code{"PTC0002", "GatewayPortNotOnService"}
	StaleSpec                       = Code{"PTC0003", "StaleSpec"}
	// GatewayNotServed: a proxy selected by the Gateway reports that it
	// cannot serve one of its servers (the port is in use, the listener
	// was rejected). Istio has no analysis code for what a proxy rejects.
	GatewayNotServed = Code{"PTC0004", "GatewayNotServedByProxy"}
	// PolicyBeyondTarget: a policy targeting one Gateway also applies to
	// another's servers sharing the same listener (filter chain).
	PolicyBeyondTarget = Code{"PTC0005", "PolicyAppliesBeyondTarget"}
)

// Condition types.
const (
	// Accepted is False when the resource is not used at all.
	Accepted = "Accepted"
	// ResolvedRefs is False when something the resource refers to is missing.
	ResolvedRefs = "ResolvedRefs"
	// Reconciled is True once the configuration reached every proxy.
	Reconciled = "Reconciled"
)

// Reasons: stable CamelCase words users and tools can match on.
const (
	ReasonAccepted            = "Accepted"
	ReasonResolvedRefs        = "ResolvedRefs"
	ReasonInvalidSpec         = "InvalidSpec"
	ReasonGatewayNotFound     = "GatewayNotFound"
	ReasonHostNotServed       = "HostNotServed"
	ReasonConflictingServer   = "ConflictingServer"
	ReasonSubsetNotFound      = "SubsetNotFound"
	ReasonDestinationNotFound = "DestinationNotFound"
	ReasonPortRequired        = "PortRequired"
	ReasonInvalidCertificate  = "InvalidCertificate"
	ReasonSecretNotFound      = "SecretNotFound"
	ReasonNoGateways          = "NoGateways"
	ReasonPartiallyInvalid    = "PartiallyInvalid"
	ReasonUnsupported         = "Unsupported"
	ReasonStaleSpec           = "StaleSpec"
	// ReasonPortUnavailable: a proxy cannot bind a server's port.
	ReasonPortUnavailable = "PortUnavailable"
	// ReasonProxyRejected: a proxy rejected the configuration of a server.
	ReasonProxyRejected = "ProxyRejected"
	// ReasonProviderNotFound: a Telemetry names an extension provider
	// meshConfig does not define.
	ReasonProviderNotFound = "ProviderNotFound"
	// ReasonNoProxy: no known gateway proxy matches a Gateway's selector.
	ReasonNoProxy = "NoProxy"
	// ReasonEnvoyValidation: the Envoy configuration made from the
	// resource breaks Envoy's validation rules, so it is not used.
	ReasonEnvoyValidation = "EnvoyValidation"
)

// Message is one finding about a resource.
type Message struct {
	Code   Code   `json:"code"`
	Level  Level  `json:"level"`
	Reason string `json:"reason"`
	// Field is the path of the field the message is about, if any.
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
	// Advisory marks an analysis finding (one istioctl analyze reports
	// too) about a resource that is in use exactly as written: it is
	// listed, but does not change the resource's conditions.
	Advisory bool `json:"-"`
}

func (m Message) String() string {
	s := fmt.Sprintf("%s [%s] %s", m.Level, m.Code.ID, m.Message)
	if m.Field != "" {
		s = fmt.Sprintf("%s [%s] %s: %s", m.Level, m.Code.ID, m.Field, m.Message)
	}
	return s
}

// Condition is one Istio status condition.
type Condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason"`
	Message            string `json:"message"`
	ObservedGeneration int64  `json:"observedGeneration"`
}

// Status is the full status of one resource.
type Status struct {
	Key                resource.Key `json:"resource"`
	ObservedGeneration int64        `json:"observedGeneration"`
	Conditions         []Condition  `json:"conditions"`
	Messages           []Message    `json:"validationMessages,omitempty"`
	// Extra carries per-kind facts, e.g. the node ports a Gateway's
	// servers are reachable on.
	Extra map[string]string `json:"extra,omitempty"`

	// rejected is set when the resource is not used at all.
	rejected bool
}

// Report collects statuses for every resource seen during a build.
type Report struct {
	// order is the statuses as first tracked (the binder tracks in
	// Finalize's order, so the sort is usually only a check), keys and
	// gens their keys and generations. A resource tracked and nothing
	// more has no Status until one is asked for (status) or Finalize:
	// most of a build's resources are such, and Finalize hands on the
	// last build's status of one whose status is the same (see reuse),
	// instead of allocating tens of thousands per build.
	order []*Status
	// keys and gens are the keys and generations tracked from position
	// shared on. Those before sat where they sat in the last build
	// (last), whose statuses hold them: their keys are last's, their
	// generations last's but for the few in sharedGens. A change
	// tracks ~60,000 resources at 30,000 routes on one port, nearly all
	// in place; storing their keys again was 2 MB of garbage a change.
	keys       []resource.Key
	gens       []int64
	shared     int
	sharedGens map[int]int64
	// index gives each tracked key's position in order. It may hold
	// other keys too (a ReportMemo's, from the last build): an entry
	// counts only where order holds its key.
	index map[resource.Key]int32
	// last is the order of the build the index was made for (see
	// ReportMemo); while every key tracked so far sits where it sat
	// there (!moved), tracking one more at its old place needs no index
	// write.
	last  []*Status
	moved bool
	// lastSorted is the last build's statuses in Finalize's order, as
	// positions in its order; sorted is this build's (see Finalize).
	lastSorted, sorted []int32
	finalized          bool
	// log is every write, in order (see Mark).
	log []Entry
}

// ReportMemo carries a report's index from build to build. The binder
// tracks every resource of a snapshot, thousands, in the same order
// build after build but for what changed; filling a map of all their
// keys again each time was a tenth of a one-VirtualService change's
// binding, and sorting them for Finalize another. A report made by
// NewReport writes the index only from the first key that is not where it
// was, and sorts them only if one is not; Keep readies the memo for the
// next. Not safe for concurrent use; one report at a time.
type ReportMemo struct {
	index  map[resource.Key]int32
	last   []*Status
	sorted []int32
}

// NewReport returns an empty report using the memo's index.
func (m *ReportMemo) NewReport() *Report {
	if m.index == nil {
		m.index = map[resource.Key]int32{}
	}
	n := len(m.last)
	return &Report{index: m.index, last: m.last, lastSorted: m.sorted, order: make([]*Status, 0, n)}
}

// Keep readies the memo's index for the next report, r being the last
// (finalized) one.
func (m *ReportMemo) Keep(r *Report) {
	if !r.finalized {
		// A build that did not finish: nothing of it is kept.
		m.index, m.last, m.sorted = nil, nil, nil
		return
	}
	if r.index != nil && !r.moved {
		// Every key sat at its old place: the index holds them, and
		// the keys the last build had beyond them, which go.
		for _, s := range m.last[len(r.order):] {
			delete(r.index, s.Key)
		}
	} else {
		clear(r.index)
		for p := range r.order {
			r.index[r.keyAt(p)] = int32(p)
		}
	}
	m.index, m.last, m.sorted = r.index, r.order, r.sorted
}

// Entry is one write to a report: a message on a resource, and whether it
// also rejected the resource.
type Entry struct {
	Key     resource.Key
	Message Message
	Reject  bool
}

// Mark returns a position in the report's writes. A cached computation
// takes one before it runs and Since after, so that reusing its result
// can replay exactly what it reported (Replay) instead of listing its
// side effects by hand. Marks nest: an outer computation sees the inner
// writes too.
func (r *Report) Mark() int { return len(r.log) }

// Since returns the writes made after mark (nil if none).
func (r *Report) Since(mark int) []Entry {
	if len(r.log) == mark {
		return nil
	}
	return append([]Entry(nil), r.log[mark:]...)
}

// Replay repeats recorded writes.
func (r *Report) Replay(entries []Entry) {
	for _, e := range entries {
		if e.Reject {
			r.Reject(e.Key, e.Message)
		} else {
			r.Add(e.Key, e.Message)
		}
	}
}

// NewReport returns an empty report.
func NewReport() *Report { return &Report{index: map[resource.Key]int32{}, moved: true} }

// Len is how many resources are tracked.
func (r *Report) Len() int { return len(r.order) }

// Track registers a resource so it gets a status even if nothing is wrong.
func (r *Report) Track(key resource.Key, generation int64) {
	r.track(key, generation)
}

// track tracks key and returns its position.
func (r *Report) track(key resource.Key, generation int64) int {
	p := len(r.order)
	if !r.moved && p < len(r.last) && r.last[p].Key == key {
		// Where it was: the index has it (and, keys being unique, it
		// cannot have been tracked at another place yet). Every key
		// before it was in place too, so p == r.shared.
		r.order = append(r.order, nil)
		r.shared++
		if g := max(generation, 0); g != r.last[p].ObservedGeneration {
			r.setGen(p, g)
		}
		return p
	}
	if q, ok := r.position(key); ok {
		if generation > r.genAt(q) {
			r.setGen(q, generation)
			if s := r.order[q]; s != nil {
				s.ObservedGeneration = generation
			}
		}
		return q
	}
	r.index[key] = int32(p)
	r.moved = true
	r.order = append(r.order, nil)
	r.keys = append(r.keys, key)
	r.gens = append(r.gens, max(generation, 0))
	return p
}

// keyAt is the key tracked at p.
func (r *Report) keyAt(p int) resource.Key {
	if p < r.shared {
		return r.last[p].Key
	}
	return r.keys[p-r.shared]
}

// genAt is the generation tracked at p.
func (r *Report) genAt(p int) int64 {
	if p < r.shared {
		if g, ok := r.sharedGens[p]; ok {
			return g
		}
		return r.last[p].ObservedGeneration
	}
	return r.gens[p-r.shared]
}

func (r *Report) setGen(p int, g int64) {
	if p >= r.shared {
		r.gens[p-r.shared] = g
		return
	}
	if r.sharedGens == nil {
		r.sharedGens = map[int]int64{}
	}
	r.sharedGens[p] = g
}

// position returns where key was tracked.
func (r *Report) position(key resource.Key) (int, bool) {
	if p, ok := r.index[key]; ok && int(p) < len(r.order) && r.keyAt(int(p)) == key {
		return int(p), true
	}
	return 0, false
}

// status returns the Status at position p, made if it has none yet.
func (r *Report) status(p int) *Status {
	s := r.order[p]
	if s == nil {
		s = &Status{Key: r.keyAt(p), ObservedGeneration: r.genAt(p)}
		r.order[p] = s
	}
	return s
}

// Reject marks the resource as not used at all, without a message of its
// own (its messages say why). Not recorded for Replay: only for decisions
// taken once per build over everything, never inside a cached computation.
func (s *Status) Reject() { s.rejected = true }

// Rejected reports whether the resource is not used at all.
func (s *Status) Rejected() bool { return s.rejected }

// Get returns the status of key, or nil if it is not tracked.
func (r *Report) Get(key resource.Key) *Status {
	if p, ok := r.position(key); ok {
		return r.status(p)
	}
	return nil
}

// Add records a message on a tracked (or newly tracked) resource. Identical
// messages are recorded once: the same resource is bound once per proxy
// class and must not repeat itself.
func (r *Report) Add(key resource.Key, m Message) {
	r.log = append(r.log, Entry{Key: key, Message: m})
	r.add(key, m)
}

func (r *Report) add(key resource.Key, m Message) {
	s := r.status(r.track(key, 0))
	for _, old := range s.Messages {
		if old == m {
			return
		}
	}
	s.Messages = append(s.Messages, m)
}

// Reject marks a resource as not used at all, with the message why.
func (r *Report) Reject(key resource.Key, m Message) {
	r.log = append(r.log, Entry{Key: key, Message: m, Reject: true})
	r.add(key, m)
	r.Get(key).rejected = true
}

// SetExtra records a fact on a resource's status.
func (r *Report) SetExtra(key resource.Key, name, value string) {
	s := r.status(r.track(key, 0))
	if s.Extra == nil {
		s.Extra = map[string]string{}
	}
	s.Extra[name] = value
}

// Finalize derives conditions from messages and returns all statuses sorted
// by key. Call once, after the build.
func (r *Report) Finalize() []*Status {
	good := map[int64][]Condition{}
	for p, s := range r.order {
		if s == nil {
			if s = r.reuse(p); s != nil {
				r.order[p] = s
				continue
			}
			s = r.status(p)
		}
		s.ObservedGeneration = r.genAt(p)
		s.finalizeSharing(good)
	}
	out := make([]*Status, 0, len(r.order))
	if !r.moved && len(r.order) == len(r.last) && len(r.lastSorted) == len(r.order) {
		// The keys of the last build, each in its place: they sort the
		// same way.
		for _, at := range r.lastSorted {
			out = append(out, r.order[at])
		}
		r.sorted, r.finalized = r.lastSorted, true
		return out
	}
	type ranked struct {
		s  *Status
		at int32
	}
	rs := make([]ranked, len(r.order))
	for i, s := range r.order {
		rs[i] = ranked{s, int32(i)}
	}
	sortByKey(rs, func(x ranked) resource.Key { return x.s.Key })
	r.sorted = make([]int32, len(rs))
	for i, x := range rs {
		out = append(out, x.s)
		r.sorted[i] = x.at
	}
	r.finalized = true
	return out
}

// reuse returns the last build's status of the resource tracked at p
// when it is what Finalize would make of it: tracked at the same place,
// with nothing said (no message, extra or rejection) and the same
// generation, its conditions follow from the generation alone. Finalized
// statuses are never changed (gatewayapi's RenameStatuses copies shared
// conditions before a change, and a status with nothing said has no
// message to rename), so handing one on is safe; it also tells the status
// writers, by identity, that nothing changed.
func (r *Report) reuse(p int) *Status {
	if p >= len(r.last) {
		return nil
	}
	s := r.last[p]
	if s.Key != r.keyAt(p) || s.ObservedGeneration != r.genAt(p) || len(s.Messages) > 0 || s.rejected || s.Extra != nil || len(s.Conditions) == 0 {
		return nil
	}
	return s
}

// sortStatuses orders statuses by compareKeys. They arrive grouped by
// kind, each kind in its snapshot's order, which for Istio's kinds is
// name before namespace: a plain sort compared n·log n keys of three
// strings each (14 ms a build at 30,000 statuses). Grouped by kind and
// namespace first (a map lookup each), keeping arrival order within a
// group, the groups are few and their members usually sorted already.
func sortStatuses(out []*Status) {
	sortByKey(out, func(s *Status) resource.Key { return s.Key })
}

// sortByKey is sortStatuses for anything with a key.
func sortByKey[T any](out []T, key func(T) resource.Key) {
	cmp := func(a, b T) int { return compareKeys(key(a), key(b)) }
	if slices.IsSortedFunc(out, cmp) {
		return
	}
	type group struct{ kind, namespace string }
	index := map[group]int{}
	var keys []group
	var members [][]T
	for _, s := range out {
		k := key(s)
		g := group{k.Kind, k.Namespace}
		i, ok := index[g]
		if !ok {
			i = len(keys)
			index[g] = i
			keys = append(keys, g)
			members = append(members, nil)
		}
		members[i] = append(members[i], s)
	}
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := strings.Compare(keys[a].kind, keys[b].kind); c != 0 {
			return c
		}
		return strings.Compare(keys[a].namespace, keys[b].namespace)
	})
	out = out[:0]
	for _, i := range order {
		m := members[i]
		if !slices.IsSortedFunc(m, cmp) {
			slices.SortFunc(m, cmp)
		}
		out = append(out, m...)
	}
}

func compareKeys(a, b resource.Key) int {
	if c := strings.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	// An Istio and a Gateway API Gateway of one name: a stable order.
	return strings.Compare(a.Group, b.Group)
}

// Less orders keys as Finalize sorts statuses.
func Less(a, b resource.Key) bool { return compareKeys(a, b) < 0 }

func isRefReason(reason string) bool {
	switch reason {
	case ReasonSubsetNotFound, ReasonDestinationNotFound, ReasonSecretNotFound, ReasonGatewayNotFound, ReasonProviderNotFound:
		return true
	}
	return false
}

func (s *Status) finalize() { s.finalizeSharing(nil) }

// finalizeSharing is finalize, except that a status with nothing to say
// (no message, not rejected) takes the conditions good holds for its
// generation, or leaves its own there: most of a build's statuses are
// such, and their conditions were a tenth of what a one-route change
// allocated. The shared slice is full (len == cap), so appending to it
// copies; whoever changes a condition in place copies the slice first
// (see gatewayapi's RenameStatuses).
func (s *Status) finalizeSharing(good map[int64][]Condition) {
	share := good != nil && len(s.Messages) == 0 && !s.rejected
	if share {
		if c, ok := good[s.ObservedGeneration]; ok {
			s.Conditions = c
			return
		}
		defer func() { good[s.ObservedGeneration] = s.Conditions }()
	}
	if len(s.Messages) > 1 {
		sort.SliceStable(s.Messages, func(i, j int) bool {
			return levelRank(s.Messages[i].Level) < levelRank(s.Messages[j].Level)
		})
	}
	accepted := Condition{Type: Accepted, Status: "True", Reason: ReasonAccepted, Message: "Configuration is valid and in use"}
	var firstErr, firstWarn *Message
	for i := range s.Messages {
		m := &s.Messages[i]
		if m.Advisory {
			continue
		}
		if m.Level == Error && firstErr == nil {
			firstErr = m
		}
		if m.Level == Warning && firstWarn == nil {
			firstWarn = m
		}
	}
	switch {
	case s.rejected:
		m := firstErr
		if m == nil {
			m = firstWarn
		}
		if m == nil {
			m = &s.Messages[0]
		}
		accepted.Status, accepted.Reason, accepted.Message = "False", m.Reason, m.String()
	case firstErr != nil:
		accepted.Reason, accepted.Message = ReasonPartiallyInvalid, fmt.Sprintf("Partly in use: %s", firstErr)
	case firstWarn != nil:
		accepted.Message = fmt.Sprintf("In use, with warnings: %s", firstWarn)
	}
	resolved := Condition{Type: ResolvedRefs, Status: "True", Reason: ReasonResolvedRefs, Message: "All references resolved"}
	var missing []string
	for _, m := range s.Messages {
		if isRefReason(m.Reason) {
			missing = append(missing, m.String())
		}
	}
	if len(missing) > 0 {
		first := ""
		for _, m := range s.Messages {
			if isRefReason(m.Reason) {
				first = m.Reason
				break
			}
		}
		resolved.Status, resolved.Reason, resolved.Message = "False", first, strings.Join(missing, "; ")
	}
	accepted.ObservedGeneration = s.ObservedGeneration
	resolved.ObservedGeneration = s.ObservedGeneration
	s.Conditions = []Condition{accepted, resolved} // len == cap: see finalizeSharing
}

func levelRank(l Level) int {
	switch l {
	case Error:
		return 0
	case Warning:
		return 1
	}
	return 2
}

// WithMessages returns a copy of s with ms added (identical messages
// once) and its conditions derived again. s itself is not changed: a
// build's statuses may be shared with a cache.
func (s *Status) WithMessages(ms ...Message) *Status {
	cp := *s
	cp.Messages = append([]Message(nil), s.Messages...)
	cp.Extra = maps.Clone(s.Extra)
	for _, m := range ms {
		if !slices.Contains(cp.Messages, m) {
			cp.Messages = append(cp.Messages, m)
		}
	}
	cp.finalize()
	return &cp
}

// Condition returns the condition of the given type, or nil.
func (s *Status) Condition(typ string) *Condition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == typ {
			return &s.Conditions[i]
		}
	}
	return nil
}

// APIStatus is the status of one Gateway API object, in the shape of its
// status subresource: the Gateway API defines its own (per-listener and
// per-parent conditions with the spec's reason names), so these are not
// Istio-shaped. The Gateway API conversion computes them while binding.
type APIStatus struct {
	Key resource.Key `json:"resource"`
	// Status is *gwv1.GatewayClassStatus, *gwv1.GatewayStatus,
	// *gwv1.RouteStatus (every route kind's status is a RouteStatus) or
	// *gwv1.PolicyStatus, marshalled as the object's .status.
	Status any `json:"status"`
}
