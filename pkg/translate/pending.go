package translate

import "google.golang.org/protobuf/proto"

// pending hands new messages to a Stream in batches, on a goroutine of
// its own, while the translator goes on: on a cold start the Stream's
// work (encoding, hashing, validating every message, spread over the
// CPUs) and translating are then done at the same time instead of in
// turns. What the Stream returns is put in place by the translator's
// goroutine alone (the setters write the output lists and maps), after
// each batch and, at the latest, in flush. At most two batches are with
// the worker, so the full messages alive at once stay a few batches'
// worth.
type pending struct {
	stream Stream
	msgs   []proto.Message
	set    []func(proto.Message)
	// Started with the first full batch.
	work     chan batch // to the worker; unbuffered
	done     chan batch // from it; room for every batch in flight
	exited   chan struct{}
	inFlight int
}

type batch struct {
	msgs []proto.Message
	set  []func(proto.Message)
}

// maxInFlight is how many batches may be with the worker at once.
const maxInFlight = 2

func (p *pending) add(m proto.Message, set func(proto.Message)) {
	if p.stream == nil {
		return
	}
	p.msgs, p.set = append(p.msgs, m), append(p.set, set)
	if len(p.msgs) >= streamBatch {
		p.submit()
	}
}

// submit hands the current batch to the worker, first putting in place
// whatever it finished.
func (p *pending) submit() {
	if len(p.msgs) == 0 {
		return
	}
	if p.work == nil {
		p.work, p.done, p.exited = make(chan batch), make(chan batch, maxInFlight), make(chan struct{})
		go func() {
			defer close(p.exited)
			for b := range p.work {
				p.stream(b.msgs)
				p.done <- b // never blocks: inFlight ≤ maxInFlight
			}
		}()
	}
	for p.inFlight >= maxInFlight {
		p.apply(<-p.done)
	}
	for drained := false; !drained; {
		select {
		case b := <-p.done:
			p.apply(b)
		default:
			drained = true
		}
	}
	p.inFlight++
	p.work <- batch{msgs: p.msgs, set: p.set}
	p.msgs, p.set = nil, nil
}

// apply puts back what the Stream returned for a batch.
func (p *pending) apply(b batch) {
	p.inFlight--
	for i, m := range b.msgs {
		b.set[i](m)
	}
}

// flush hands over what is left and waits until every batch is back in
// place.
func (p *pending) flush() {
	if p.stream == nil {
		return
	}
	p.submit()
	for p.inFlight > 0 {
		p.apply(<-p.done)
	}
}

// stop ends the worker (after flush, or when translation failed).
func (p *pending) stop() {
	if p.work == nil {
		return
	}
	close(p.work)
	p.work = nil
	for p.inFlight > 0 {
		p.inFlight-- // a failed translation's batches: nothing to put back
		<-p.done
	}
	<-p.exited
}
