#!/bin/bash
# What a running proxy is sent when its controller restarts: starts a
# controller and a proxy on a configuration bench/controlplane wrote (run it
# with -keep), waits until the proxy has applied everything, restarts the
# controller and prints what the proxy received and applied afterwards.
#
#   bench/controlplane/reconnect.sh BINDIR /tmp/portico-cp-bench-*/standalone-30000-one-port/config
#
# BINDIR holds gateway-controller and edge-proxy. Ports 19901-19905 on
# 127.0.0.1 must be free.
B=$1; D=$2
[ -d "$D" ] && [ -x "$B/gateway-controller" ] || { echo "usage: $0 BINDIR CONFIGDIR" >&2; exit 2; }
W=$(mktemp -d)
trap 'pkill -f "xds-address 127.0.0.1:19901"; rm -rf "$W"' EXIT
start_controller() {
  $B/gateway-controller --standalone --no-proxy --config-dir "$D" --xds-address 127.0.0.1:19901 --debug-address 127.0.0.1:19902 --log-level debug > "$W/controller-$1.log" 2>&1 &
  echo $! > "$W/controller.pid"
}
start_controller 1
sleep 0.3
(cd /tmp && $B/edge-proxy --xds-address 127.0.0.1:19901 --admin-address 127.0.0.1:19903 --status-address "" --access-log off --termination-drain-duration 0s --port-map 80:19904,443:19905 --log-level debug > "$W/proxy.log" 2>&1 &)
for i in $(seq 1 600); do grep -q 'update.*RouteConfiguration' "$W/proxy.log" && break; sleep 0.2; done
sleep 3
from=$(( $(wc -l < "$W/proxy.log") + 1 ))
kill "$(cat "$W/controller.pid")"
sleep 1
echo "controller restarted at $(date -u +%H:%M:%S.%N)"
start_controller 2
# Until the new controller published and the proxy has been quiet for 3 s.
for i in $(seq 1 600); do grep -q published "$W/controller-2.log" && break; sleep 0.2; done
grep -m1 published "$W/controller-2.log" | cut -f1,4
last=0
for i in $(seq 1 300); do
  n=$(wc -l < "$W/proxy.log")
  [ "$n" = "$last" ] && [ "$i" -gt 15 ] && break
  last=$n; sleep 0.2
done
tail -n +$from "$W/proxy.log" | grep -P "\treceived\t|\tupdate\t" | sed -E 's/\t(DEBUG|INFO)\t[a-z.]+\t/ /; s/type.googleapis.com\/envoy.//'
