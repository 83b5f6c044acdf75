//go:build linux

package nodeagent

import (
	"fmt"

	"github.com/go-logr/logr"
	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
)

// vkLogger passes virtual-kubelet's warnings and errors (a failed pod
// status write, a sync error) to the agent's logr logger; its debug and
// info chatter is dropped.
type vkLogger struct{ l logr.Logger }

var _ vklog.Logger = vkLogger{}

func (v vkLogger) Debug(...any)          {}
func (v vkLogger) Debugf(string, ...any) {}
func (v vkLogger) Info(...any)           {}
func (v vkLogger) Infof(string, ...any)  {}
func (v vkLogger) Warn(a ...any)         { v.l.Info("virtual-kubelet warning: " + fmt.Sprint(a...)) }
func (v vkLogger) Warnf(f string, a ...any) {
	v.l.Info("virtual-kubelet warning: " + fmt.Sprintf(f, a...))
}
func (v vkLogger) Error(a ...any) { v.l.Error(nil, "virtual-kubelet: "+fmt.Sprint(a...)) }
func (v vkLogger) Errorf(f string, a ...any) {
	v.l.Error(nil, "virtual-kubelet: "+fmt.Sprintf(f, a...))
}
func (v vkLogger) Fatal(a ...any)                         { v.Error(a...) }
func (v vkLogger) Fatalf(f string, a ...any)              { v.Errorf(f, a...) }
func (v vkLogger) WithField(k string, x any) vklog.Logger { return vkLogger{v.l.WithValues(k, x)} }
func (v vkLogger) WithError(err error) vklog.Logger {
	return vkLogger{v.l.WithValues("error", fmt.Sprint(err))}
}
func (v vkLogger) WithFields(f vklog.Fields) vklog.Logger {
	l := v.l
	for k, x := range f {
		l = l.WithValues(k, x)
	}
	return vkLogger{l}
}
