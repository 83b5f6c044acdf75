#!/usr/bin/env bash
# hack/istio-diff.sh [CASE_NAME...] — the Istio fidelity suite (`make istio-diff`).
#
# Serves every case under test/istiodiff/cases/ (or the named ones) once with
# Istio's own xDS generator (the istio-oracle's istio-diff: istiodfiles, built
# from istio.io/istio and cached under ~/.cache/portico/istio-oracle) and once
# with Portico standalone, and diffs route tables, clusters and listeners in
# the oracle's "behaviour" profile (fields that change traffic only).
#
# A differing line is "explained" when a row of test/istiodiff/explained.tsv
# (TYPE<TAB>CASE regex<TAB>LINE extended regex<TAB>reason) has that type, a
# CASE regex matching the case's name and a LINE regex matching the line: those are the documented
# "Differences from Istio" in README.md. The run fails when any route-table
# (rds) line is unexplained; ISTIO_DIFF_STRICT=1 also fails on clusters and
# listeners. Not part of `make test`: it builds Istio's module (minutes, once)
# and needs root for a private network namespace per case.
#
#   ISTIO_ORACLE   path of the oracle's istio-diff script (default: the shared copy)
#   ISTIO_DIFF_OUT where per-case diffs go (default /tmp/istio-diff)
#   ISTIO_DIFF_JOBS cases run side by side (default 4)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ORACLE=${ISTIO_ORACLE:-}
if [ -z "$ORACLE" ]; then
  for c in "$ROOT/../shared/istio-oracle/istio-diff" "$ROOT/../../shared/istio-oracle/istio-diff"; do
    [ -x "$c" ] && ORACLE=$c && break
  done
fi
[ -n "$ORACLE" ] && [ -x "$ORACLE" ] || { echo "istio-diff: set ISTIO_ORACLE to the istio-oracle's istio-diff script" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "istio-diff: needs root (ip netns)" >&2; exit 2; }
OUT=${ISTIO_DIFF_OUT:-/tmp/istio-diff}
EXPLAINED=$ROOT/test/istiodiff/explained.tsv
CASES=$ROOT/test/istiodiff/cases
mkdir -p "$OUT"

if [ $# -gt 0 ]; then names=("$@"); else mapfile -t names < <(ls "$CASES"); fi

# unexplained TYPE CASE FILE: prints the differing lines of FILE no row explains.
unexplained() {
  local t=$1 n=$2 f=$3 pats
  pats=$(awk -F'\t' -v t="$t" -v n="$n" '$1==t && $3!="" && n ~ $2 {print $3}' "$EXPLAINED")
  { grep -E '^[-+][^-+]' "$f" 2>/dev/null || true; } | { if [ -n "$pats" ]; then grep -v -E -f <(printf '%s\n' "$pats") || true; else cat; fi; }
}

# Each case runs in its own network namespace, so cases run side by side;
# most of a case's time is waiting for xDS to settle.
# ISTIO_DIFF_REUSE=1 only re-checks the diffs already in $OUT (after an
# edit of explained.tsv).
JOBS=${ISTIO_DIFF_JOBS:-4}
if [ "${ISTIO_DIFF_REUSE:-0}" != 1 ]; then
  for n in "${names[@]}"; do rm -rf "${OUT:?}/$n"; done
  printf '%s\n' "${names[@]}" | xargs -P "$JOBS" -I{} sh -c '"$1" "$2/$4" "$3/$4" >/dev/null 2>"$3/$4.err" || echo "$4: oracle failed (see $3/$4.err)" >&2' _ "$ORACLE" "$CASES" "$OUT" {}
fi

fail=0; tot_r=0; tot_c=0; tot_l=0; un_r=0; un_c=0; un_l=0
printf '%-34s %6s %6s %6s   %s\n' CASE RDS CDS LDS 'UNEXPLAINED (rds/cds/lds)' | tee "$OUT/summary.txt"
for n in "${names[@]}"; do
  d=$OUT/$n
  [ -f "$d/rds-behaviour.diff" ] || { echo "$n: no diff (oracle failed? see $d.err)"; fail=1; continue; }
  row=()
  urow=()
  for t in rds cds lds; do
    f=$d/$t-behaviour.diff
    c=$(grep -c -E '^[-+][^-+]' "$f" 2>/dev/null || true); c=${c:-0}
    unexplained "$t" "$n" "$f" >"$d/$t-unexplained.diff"
    u=$(wc -l <"$d/$t-unexplained.diff")
    row+=("$c"); urow+=("$u")
  done
  tot_r=$((tot_r+row[0])); tot_c=$((tot_c+row[1])); tot_l=$((tot_l+row[2]))
  un_r=$((un_r+urow[0])); un_c=$((un_c+urow[1])); un_l=$((un_l+urow[2]))
  printf '%-34s %6s %6s %6s   %s/%s/%s\n' "$n" "${row[0]}" "${row[1]}" "${row[2]}" "${urow[0]}" "${urow[1]}" "${urow[2]}" | tee -a "$OUT/summary.txt"
  if [ "${urow[0]}" -gt 0 ]; then
    fail=1; echo "  unexplained route-table differences ($d/rds-unexplained.diff):"; sed 's/^/    /' "$d/rds-unexplained.diff" | head -20
  fi
  if [ "${ISTIO_DIFF_STRICT:-0}" = 1 ] && [ $((urow[1]+urow[2])) -gt 0 ]; then fail=1; fi
done
printf 'total: %d cases; differing lines rds %d, cds %d, lds %d; unexplained rds %d, cds %d, lds %d\n' \
  "${#names[@]}" "$tot_r" "$tot_c" "$tot_l" "$un_r" "$un_c" "$un_l" | tee -a "$OUT/summary.txt"
exit $fail
