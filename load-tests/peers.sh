#!/bin/bash
# The shared side-by-side benchmark (peers.sh; read its header first: it installs nginx, HAProxy
# and wrk with apt) with switchyard's rows added, each one worker on the proxy CPU:
#   switchyard         the defaults: JSON access log (to stdout, a file under peers.sh) and metrics
#   switchyard-nolog   access log off, like for like with peers.sh's nginx (access_log off)
#   nginx-log          peers.sh's nginx plus a JSON access log in 64 KiB batches (as ours is to a
#                      file), like for like with the defaults
# usage: load-tests/peers.sh [--path /small|/64k] [--close] [--rounds N] [--only NAMES] ...
# PEERS=/path/to/peers.sh when the shared script is not at ../shared/bench/peers.sh.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS:-$root/../shared/bench/peers.sh}
[ -f "$peers" ] || { echo "load-tests/peers.sh: no peers.sh at $peers (set PEERS=/path/to/peers.sh)" >&2; exit 2; }
# Always from the current sources: a stale dist/ would be measured under the new name.
(cd "$root" && npm run build --silent) || exit 1
work=${BENCH_DIR:-/tmp/switchyard-bench}
mkdir -p "$work"
# peers.sh's own nginx config, on its own port, pid and error log, with the log switched on.
nginx_conf=$(dirname "$peers")/nginx-proxy.conf
grep -q 'access_log off;' "$nginx_conf" || { echo "load-tests/peers.sh: no 'access_log off;' in $nginx_conf to replace" >&2; exit 2; }
log_format='{"time":$msec,"reqId":"$request_id","remote":"$remote_addr","method":"$request_method","path":"$request_uri","status":$status,"bytesIn":$request_length,"bytesOut":$bytes_sent,"duration":$request_time,"upstreamTime":"$upstream_response_time","upstream":"$upstream_addr"}'
sed -e "s#@WORK@#$work#g; s#127.0.0.1:9100#127.0.0.1:9105#; s#nginx-proxy\.\(pid\|err\)#nginx-proxy-log.\1#g" \
    -e "s#access_log off;#log_format jsonlog escape=json '$log_format'; access_log $work/nginx-access.log jsonlog buffer=64k flush=1s;#" \
    "$nginx_conf" > "$work/nginx-proxy-log.conf"
cli="node $root/dist/src/cli.js --upstream http://127.0.0.1:9001 --workers 1"
BENCH_DIR=$work bash "$peers" "$@" \
  nginx-log="9105:nginx -c $work/nginx-proxy-log.conf" \
  switchyard="9200:$cli --listen 127.0.0.1:9200" \
  switchyard-nolog="9201:$cli --listen 127.0.0.1:9201 --config $root/load-tests/bench-nolog.yaml"
rc=$?
# Both access logs grow by hundreds of MB a run.
rm -f "$work/nginx-access.log" "$work/switchyard.log"
exit $rc
