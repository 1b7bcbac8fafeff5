#!/bin/bash
# TLS handshakes, switchyard against nginx, in the same run: CPU per handshake on one core.
#
# Each proxy terminates TLS 1.3 with the same ECDSA P-256 certificate, runs alone on CPU 1 (one
# worker), and forwards to peers.sh's nginx backend on CPU 0 (port 9001, started here when it is
# not running). The client is `openssl s_time`, also on CPU 0: a new connection per request,
# `GET /small`, either a full handshake each time (-new) or a resumed one (-reuse: session
# tickets). The figure to compare is the proxy's own CPU time per connection (utime+stime of its
# process tree / connections made), as a ratio to nginx's in the same run; the median of the rounds.
#
# usage: load-tests/tls-handshakes.sh [--secs 8] [--rounds 3] [--clients 2] [--only NAMES] [NAME='PORT:COMMAND' ...]
#   NAME='PORT:COMMAND' adds a proxy that serves https://127.0.0.1:PORT with $work/cert.pem/key.pem
#   (COMMAND may use @CERT@ and @KEY@) in front of http://127.0.0.1:9001.
# Needs nginx (apt-get install nginx-light: installed here when missing) and openssl.
set -u
secs=8 rounds=3 clients=2 only=
while [ $# -gt 0 ]; do case $1 in
  --secs) secs=$2; shift 2;; --rounds) rounds=$2; shift 2;; --clients) clients=$2; shift 2;;
  --only) only=$2; shift 2;; *) break;; esac; done
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${PEERS:-$root/../shared/bench/peers.sh}
work=${BENCH_DIR:-/tmp/switchyard-bench}
mkdir -p "$work/www"
command -v nginx >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
(cd "$root" && npm run build --silent) || exit 1

. "$root/load-tests/bench-lib.sh"
start_backend
make_cert

nginx_tls_conf tls "listen 127.0.0.1:9443 ssl backlog=4096; ssl_session_tickets on;"
cli="node $root/dist/src/cli.js --upstream http://127.0.0.1:9001 --workers 1 --cert $work/cert.pem --key $work/key.pem"
specs=(nginx="9443:nginx -c $work/nginx-tls.conf"
  switchyard="9444:$cli --listen 127.0.0.1:9444"
  switchyard-nolog="9445:$cli --listen 127.0.0.1:9445 --config $root/load-tests/bench-nolog.yaml" "$@")

echo "TLS 1.3, ECDSA P-256, GET /small, a new connection per request; secs=$secs rounds=$rounds clients=$clients (proxy on CPU 1; backend + openssl s_time on CPU 0)"
log_prefix=tls curl_flags= start_proxies "${specs[@]}"

# Connections made by $clients parallel s_time runs of $2 seconds against port $1 in mode $3.
handshakes() {
  local port=$1 t=$2 mode=$3 i total=0 out
  out=$(for i in $(seq "$clients"); do
    taskset -c 0 openssl s_time -connect "127.0.0.1:$port" -tls1_3 "$mode" -time "$t" -www /small 2>/dev/null &
  done; wait)
  for n in $(awk '/connections in [0-9.]+s;/{print $1}' <<<"$out"); do total=$((total + n)); done
  echo "$total"
}

declare -A rows
for mode in -new -reuse; do
  for round in $(seq "$rounds"); do   # proxies take turns, so drift hits all alike
    for i in "${!names[@]}"; do
      name=${names[$i]} pid=${pids[$i]}
      handshakes "${ports[$i]}" 1 "$mode" >/dev/null   # warm-up
      c0=$(cpu_ticks "$pid")
      n=$(handshakes "${ports[$i]}" "$secs" "$mode")
      c1=$(cpu_ticks "$pid")
      cpc=$(per_unit $((c1 - c0)) "$n")
      rows[$name$mode]+="$(awk -v n="$n" -v s="$secs" 'BEGIN{printf "%.0f", n/s}') $cpc|"
    done
  done
done
fmt="%-20s %-8s %12s %14s %9s\n"
printf "$fmt" proxy mode "handshakes/s" "cpu-us/conn" "x nginx"
print_medians -new -reuse
