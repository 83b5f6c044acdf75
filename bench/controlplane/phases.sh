#!/bin/bash
# Where one change's propagation time goes, stage by stage, from the debug logs
# of a controller and a proxy run on a configuration that bench/controlplane
# wrote (run it with -keep; one-port configurations hold probe.yaml):
#
#   go run ./bench/controlplane -keep -sizes "" -memory 0 -routes 3000 -modes standalone-one-port -changes 1
#   bench/controlplane/phases.sh BINDIR /tmp/portico-cp-bench-*/standalone-3000-one-port/config 25
#
# file: write → file provider loaded it (holdoff included); build: → snapshot
# published; transfer: → proxy received it; apply: → proxy applied it.
# BINDIR holds gateway-controller and edge-proxy (go build -o BINDIR/ ./cmd/...).
# Ports 19901-19905 on 127.0.0.1 must be free. CTL_GODEBUG and PROXY_GODEBUG
# (e.g. gctrace=1) go to each process; with gctrace=1 the slowest changes
# are listed with the collections they overlapped. PHASES_LOGS=DIR keeps
# both logs.
B=$1; D=$2; N=${3:-20}
[ -d "$D" ] && [ -f "$D/probe.yaml" ] || { echo "usage: $0 BINDIR CONFIGDIR [CHANGES]" >&2; exit 2; }
W=$(mktemp -d)
trap 'pkill -f "xds-address 127.0.0.1:19901"; [ -n "${PHASES_LOGS:-}" ] && cp $W/*.log "$PHASES_LOGS"/; rm -rf "$W"' EXIT
GODEBUG=${CTL_GODEBUG:-} $B/gateway-controller --standalone --no-proxy --config-dir $D --xds-address 127.0.0.1:19901 --debug-address 127.0.0.1:19902 --log-level debug > $W/ctl.log 2>&1 &
sleep 0.3
(cd /tmp && GODEBUG=${PROXY_GODEBUG:-} $B/edge-proxy --xds-address 127.0.0.1:19901 --admin-address 127.0.0.1:19903 --status-address "" --access-log off --termination-drain-duration 0s --port-map 80:19904,443:19905 --log-level debug > $W/proxy.log 2>&1 &)
# Ready, and the route configuration applied (at 30,000 routes the first
# one takes seconds after "ready").
for i in $(seq 1 300); do grep -q "proxy is ready" $W/proxy.log && grep -q 'update.*RouteConfiguration' $W/proxy.log && break; sleep 0.2; done
sleep 2
: > $W/writes.log
cd $D
for rev in $(seq 1000 $((1000+N-1))); do
  sed "s/x-revision: \"[0-9]*\"/x-revision: \"$rev\"/" probe.yaml > .probe.yaml.tmp
  echo "$(date +%s.%N) write" >> $W/writes.log
  mv .probe.yaml.tmp probe.yaml
  sleep 0.5
done

W="$W" python3 - <<'PY'
import os,datetime,statistics
def ts(line):
    t=line.split('\t')[0]
    return datetime.datetime.strptime(t,"%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
writes=[float(l.split()[0]) for l in open(os.environ['W']+'/writes.log')]
ctl=[l for l in open(os.environ['W']+'/ctl.log')]
loaded=[ts(l) for l in ctl if 'loaded config file' in l and 'probe.yaml' in l]
pub=[ts(l) for l in ctl if '\tpublished\t' in l]
prox=[l for l in open(os.environ['W']+'/proxy.log')]
recv=[ts(l) for l in prox if 'received' in l and 'RouteConfiguration' in l]
upd=[ts(l) for l in prox if '\tupdate\t' in l and 'RouteConfiguration' in l]
def after(lst,t):
    c=[x for x in lst if x>=t]
    return c[0] if c else None
rows=[]
for w in writes:
    l=after(loaded,w); p=after(pub,l) if l else None; r=after(recv,p) if p else None; u=after(upd,r) if r else None
    if None in (l,p,r,u): continue
    rows.append(((l-w)*1e3,(p-l)*1e3,(r-p)*1e3,(u-r)*1e3,(u-w)*1e3,w))
names=['file','build','transfer','apply','total']
for i,n in enumerate(names):
    v=[r[i] for r in rows]
    print(f"{n:9s} median {statistics.median(v):6.1f} ms  max {max(v):6.1f}  (n={len(v)})")
# With gctrace=1, the collections each process ran while a change
# propagated: "gc 17 @12.847s ... 241 ms" lines count from the process's
# start, taken as its first log line's time (a few ms late at most).
def collections(lines):
    logged=[ts(l) for l in lines if l[:2]=='20']
    if not logged:
        return []
    out=[]
    for l in lines:
        if l.startswith('gc ') and ' @' in l:
            p=l.split()
            clock=sum(float(x) for x in p[4].split('+'))/1e3
            out.append((logged[0]+float(p[2][1:-1]), clock))
    return out
gcs=[('controller',t,d) for t,d in collections(ctl)]+[('proxy',t,d) for t,d in collections(prox)]
print("slowest changes (ms):", "  ".join(names), "  collections overlapping" if gcs else "")
for r in sorted(rows,key=lambda r:-r[4])[:5]:
    w=r[5]; end=w+r[4]/1e3
    over=[f"{who} {d*1e3:.0f} ms at +{(t-w)*1e3:.0f}" for who,t,d in gcs if t<end and t+d>w]
    print("  " + "  ".join(f"{x:6.1f}" for x in r[:5]) + ("  " + ", ".join(over) if over else ""))
PY
