package gateway

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/portico-gateway/portico/pkg/resource"
)

// wins says why winner was preferred to loser, by the rule actually
// applied (resource.Sort's order): the older creationTimestamp, then
// name, then namespace (Istio's order). Resources read from files have no creation time, so
// there the order is by name alone, and saying "the older resource wins"
// would send users looking for a difference in age that is not there.
func wins(winner, loser metav1.Object) string {
	if winner == nil || loser == nil {
		return "it came first"
	}
	if winner == loser {
		return "it comes first in the same resource"
	}
	wt, lt := winner.GetCreationTimestamp(), loser.GetCreationTimestamp()
	switch {
	case wt.IsZero() && lt.IsZero():
		return "it sorts first by name, then namespace, as in Istio; files have no creation time"
	case !wt.IsZero() && (lt.IsZero() || wt.Before(&lt)):
		return fmt.Sprintf("it is older (created %s)", resource.Age(wt.Time))
	}
	return "it was created at the same time and sorts first by name, then namespace, as in Istio"
}

// serverOutcome counts, per Gateway, the servers bound and the servers
// that lost a conflict on their port, over every class.
type serverOutcome struct {
	kept, lost int
}

func (b *builder) noteServer(s *gwServer, kept bool) {
	if b.outcomes == nil {
		b.outcomes = map[resource.Key]*serverOutcome{}
	}
	o := b.outcomes[s.gwKey]
	if o == nil {
		o = &serverOutcome{}
		b.outcomes[s.gwKey] = o
	}
	if kept {
		o.kept++
	} else {
		o.lost++
	}
}

// rejectLosingGateways marks Gateways none of whose servers is used,
// because each lost a conflict, as not Accepted: their conflict messages
// name the winners. A Gateway with no valid server at all is reported by
// its validation.
func (b *builder) rejectLosingGateways() {
	for key, o := range b.outcomes {
		if o.kept == 0 && o.lost > 0 {
			if st := b.report.Get(key); st != nil {
				st.Reject()
			}
		}
	}
}

// vsObject returns the VirtualService of a bound reference, or nil.
func (b *builder) vsObject(namespace, name string) metav1.Object {
	for _, info := range b.vss {
		if info.obj.Namespace == namespace && info.obj.Name == name {
			return info.obj
		}
	}
	return nil
}

// serverWins says why the server that owns a port keeps it.
func serverWins(owner, s *gwServer) string {
	if owner.gw == s.gw {
		return fmt.Sprintf("it comes first in the Gateway's servers (server %d before %d)", owner.index, s.index)
	}
	return wins(owner.gw, s.gw)
}

// sniWins says why an SNI name stays with its first claimant: a
// terminated server (no resource recorded) always, a passthrough route by
// resource order.
func sniWins(owner metav1.Object, loser metav1.Object) string {
	if owner == nil {
		return "terminated TLS servers claim their SNI names before passthrough routes"
	}
	return wins(owner, loser)
}
