#!/bin/bash
# The shared side-by-side benchmark (peers.sh; read its header first: it installs nginx, HAProxy
# and wrk with apt) with switchyard's rows added, each one worker on the proxy CPU:
#   switchyard         the defaults: JSON access log (to stdout, a file under peers.sh) and metrics
#   switchyard-nolog   access log off, like for like with peers.sh's nginx (access_log off)
#   nginx-log          nginx with a JSON access log in 64 KiB batches, like for like with the defaults
# usage: load-tests/peers.sh [--path /small|/64k] [--close] [--rounds N] [--only NAMES] ...
# PEERS=/path/to/peers.sh when the shared script is not at ../shared/bench/peers.sh.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS:-$root/../shared/bench/peers.sh}
[ -f "$peers" ] || { echo "load-tests/peers.sh: no peers.sh at $peers (set PEERS=/path/to/peers.sh)" >&2; exit 2; }
[ -f "$root/dist/src/cli.js" ] || (cd "$root" && npm run build --silent) || exit 1
work=${BENCH_DIR:-/tmp/switchyard-bench}
mkdir -p "$work"
sed "s#@WORK@#$work#g" "$root/load-tests/nginx-proxy-log.conf" > "$work/nginx-proxy-log.conf"
cli="node $root/dist/src/cli.js --upstream http://127.0.0.1:9001 --workers 1"
BENCH_DIR=$work bash "$peers" "$@" \
  nginx-log="9105:nginx -c $work/nginx-proxy-log.conf" \
  switchyard="9200:$cli --listen 127.0.0.1:9200" \
  switchyard-nolog="9201:$cli --listen 127.0.0.1:9201 --config $root/load-tests/bench-nolog.yaml"
rc=$?
# Both access logs grow by hundreds of MB a run.
rm -f "$work/nginx-access.log" "$work/switchyard.log"
exit $rc
