// Package fuzzbudget bounds how long `go test -fuzz` spends minimizing
// each new interesting input, for packages whose inputs are large or slow.
//
// By default the fuzzer minimizes every input that adds coverage for up
// to 60 s (-fuzzminimizetime). Its byte minimizer tries removing every
// substring — about n²/2 executions for an n-byte input — so a 2 KB YAML
// stream or a 1.5 KB ClientHello never finishes; at the deadline the
// coordinator kills the worker and the executions it made are not counted
// (golang/go#48820, #52569). A fuzzer that spends its time in such
// minimizations reports a few executions per second and finds little.
// A budget in executions ("2000x") has no deadline race: the worker stops
// by itself, its count is kept, and fuzzing resumes.
package fuzzbudget

import (
	"flag"
	"testing"
)

// DefaultMinimize is the budget Main applies.
const DefaultMinimize = "2000x"

// Main runs the tests with -test.fuzzminimizetime defaulting to
// DefaultMinimize (an explicit -fuzzminimizetime still wins). Use it as
// the package's TestMain body: os.Exit(fuzzbudget.Main(m)).
func Main(m *testing.M) int {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.fuzzminimizetime" {
			explicit = true
		}
	})
	if !explicit {
		if err := flag.Set("test.fuzzminimizetime", DefaultMinimize); err != nil {
			panic(err)
		}
	}
	return m.Run()
}
