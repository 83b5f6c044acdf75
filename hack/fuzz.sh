#!/usr/bin/env bash
# make fuzz: run each fuzz target for a bounded time and report how many
# inputs per second it executed (a fuzzer that manages a few dozen a
# second finds nothing).
#
#   hack/fuzz.sh [-t 30s] [-o results.md] pkg/path:FuzzName ...
#
# FUZZFLAGS adds flags to every `go test` (e.g. -fuzzminimizetime=5s).
# FUZZ_FRESH=1 empties the target's cached corpus first, so that runs
# compare like with like (the cache lives in $(go env GOCACHE)/fuzz).
# The rate is total executions over the time spent fuzzing, after the
# baseline-coverage pass over the corpus. A crash fails the script and
# leaves the crasher in the package's testdata/fuzz/ as go test does.
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=30s
out=
while getopts "t:o:" opt; do
  case $opt in
    t) fuzztime=$OPTARG ;;
    o) out=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if (($# == 0)); then
  echo "usage: $0 [-t 30s] [-o results.md] pkg/path:FuzzName ..." >&2
  exit 2
fi
module=$(go list -m)
# Every fuzz target in the repository should be in the list (Makefile
# FUZZ_TARGETS): say which are not.
while IFS=: read -r file _ decl; do
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*).*/\1/' <<<"$decl")
  spec="$(dirname "$file"):$name"
  [[ " $* " == *" $spec "* ]] || echo "fuzz: warning: $spec is not in the list" >&2
done < <(git grep -n -E '^func Fuzz[A-Za-z0-9_]*\(' -- '*_test.go')
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
table="| Target | Package | Executions | Seconds fuzzing | Executions/s | Result |
| --- | --- | ---: | ---: | ---: | --- |"
failed=0
for spec in "$@"; do
  pkg=${spec%%:*} name=${spec##*:}
  if [[ ${FUZZ_FRESH:-0} == 1 ]]; then
    rm -rf "$(go env GOCACHE)/fuzz/$module/$pkg/$name"
  fi
  log=$logs/$name.log
  echo "fuzz: $pkg $name for $fuzztime" >&2
  # The build is not part of the budget: compile first.
  go test -c -o /dev/null "./$pkg" >/dev/null
  # shellcheck disable=SC2086
  go test -run='^$' -fuzz="^$name\$" -fuzztime="$fuzztime" ${FUZZFLAGS:-} "./$pkg" >"$log" 2>&1
  rc=$?
  tail -n 3 "$log" >&2
  # Fuzzing starts when the baseline pass ends ("… completed, now fuzzing").
  start=$(grep -m1 'now fuzzing' "$log" | sed -E 's/.*elapsed: ([0-9]+)s.*/\1/')
  last=$(grep -E 'elapsed: [0-9]+s, execs: [0-9]+' "$log" | tail -n 1)
  end=$(sed -E 's/.*elapsed: ([0-9]+)s.*/\1/' <<<"$last")
  execs=$(sed -E 's/.*execs: ([0-9]+).*/\1/' <<<"$last")
  secs=$(( ${end:-0} - ${start:-0} ))
  rate=—
  if ((secs > 0)) && [[ -n $execs ]]; then rate=$(( execs / secs )); fi
  result=ok
  if ((rc != 0)); then result="FAIL: $(grep -m1 -E 'Failing input|--- FAIL|panic' "$log" | sed 's/|/\\|/g')"; failed=1; fi
  if ((rc == 0)) && ! grep -q 'fuzz: elapsed' "$log"; then result="FAIL: no fuzz target $name in $pkg"; failed=1; fi
  table+="
| $name | $pkg | ${execs:-0} | $secs | $rate | $result |"
done
echo
echo "$table"
if [[ -n $out ]]; then
  {
    echo "Fuzzing, $(date -u +%Y-%m-%d) on $(hostname) ($(nproc) CPUs), -fuzztime=$fuzztime ${FUZZFLAGS:-}, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "$table"
  } >"$out"
fi
exit $failed
