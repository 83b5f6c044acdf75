// Package version is the build version of Portico's binaries: the
// controller serves it on /version, the portico CLI prints it, and the
// edge proxy reports it to the control plane and on /server_info.
package version

import (
	"strconv"
	"strings"
)

// Version is set at build time (-ldflags "-X github.com/portico-gateway/portico/pkg/version.Version=…").
var Version = "0.1.0"

// Semantic is Version as major, minor and patch numbers (Envoy's
// node.user_agent_build_version, which istioctl prints as the "Envoy
// Version"): a leading "v" and anything after the patch number (a
// pre-release or build suffix) are ignored, and a part that is not a
// number reads as 0.
func Semantic() (major, minor, patch uint32) {
	v := strings.TrimPrefix(Version, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	var n [3]uint32
	for i, s := range strings.SplitN(v, ".", 3) {
		u, _ := strconv.ParseUint(s, 10, 32)
		n[i] = uint32(u)
	}
	return n[0], n[1], n[2]
}
