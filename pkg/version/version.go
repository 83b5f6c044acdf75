// Package version is the build version of Portico's binaries: the
// controller serves it on /version and the portico CLI prints it.
package version

// Version is set at build time (-ldflags "-X github.com/portico-gateway/portico/pkg/version.Version=…").
var Version = "0.1.0"
