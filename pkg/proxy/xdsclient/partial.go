package xdsclient

import "errors"

// PartialError reports an update the handler applied except for some of
// its resources, which it rejected alone, as Envoy rejects a listener
// that cannot bind while it starts the others. The client takes the update
// as its new state (the control plane believes it was delivered, and
// later delta updates build on it) and NACKs it with the message, so the
// control plane learns what was rejected and why.
type PartialError struct{ Err error }

func (e *PartialError) Error() string { return e.Err.Error() }

func (e *PartialError) Unwrap() error { return e.Err }

// Partial marks err (nil stays nil) as a partial rejection.
func Partial(err error) error {
	if err == nil {
		return nil
	}
	return &PartialError{Err: err}
}

// IsPartial reports whether err is a partial rejection.
func IsPartial(err error) bool {
	var p *PartialError
	return errors.As(err, &p)
}

// Reporter is implemented by handlers whose verdict on an applied type
// can change later without an update: a listener binds once its port is
// freed, a certificate loads once its files appear. After Resync, the
// client asks Status and, if the verdict changed since it last answered
// the control plane, ACKs (nil) or NACKs (the error) the latest response
// again, so the control plane's view of the proxy stays true.
type Reporter interface {
	Status(typeURL string) error
}
