#!/bin/bash
# HTTP/2 over TLS, switchyard against nginx and @fastify/http-proxy, in the same run: CPU per
# request on one core.
#
# Each proxy terminates TLS 1.3 (ECDSA P-256) with ALPN h2, runs alone on CPU 1 (one worker), and
# forwards over HTTP/1.1 keep-alive to peers.sh's nginx backend on CPU 0 (port 9001, started here
# when it is not running). The client is h2load on CPU 0: 50 connections x 10 concurrent streams,
# GET /small and /64k. The figure to compare is the proxy's own CPU time per request (utime+stime
# of its process tree / requests done), as a ratio to nginx's in the same run; the median of the
# rounds, the proxies taking turns within each round so that drift hits all alike.
#
# usage: load-tests/h2load.sh [--secs 8] [--rounds 3] [--only NAMES] [NAME='PORT:COMMAND' ...]
#   NAME='PORT:COMMAND' adds a proxy serving h2 on https://127.0.0.1:PORT with $work/cert.pem and
#   key.pem (COMMAND may use @CERT@ and @KEY@) in front of http://127.0.0.1:9001.
# Needs nginx (nginx-light) and h2load (nghttp2-client): installed with apt when missing.
set -u
secs=8 rounds=3 only=
while [ $# -gt 0 ]; do case $1 in
  --secs) secs=$2; shift 2;; --rounds) rounds=$2; shift 2;; --only) only=$2; shift 2;; *) break;; esac; done
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${PEERS:-$root/../shared/bench/peers.sh}
work=${BENCH_DIR:-/tmp/switchyard-bench}
mkdir -p "$work/www" "$work/peers"
missing=
command -v nginx >/dev/null || missing+=" nginx-light"
command -v h2load >/dev/null || missing+=" nghttp2-client"
[ -n "$missing" ] && { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; }
(cd "$root" && npm run build --silent) || exit 1
# The Node reference, as peers.sh installs it.
[ -d "$work/peers/node_modules/@fastify/http-proxy" ] || (cd "$work/peers" && echo '{"private":true}' > package.json &&
  npm i --silent --no-audit --no-fund fastify@5 @fastify/http-proxy@11 >/dev/null)

. "$root/load-tests/bench-lib.sh"
start_backend
make_cert

# nginx 1.25.1+ says `http2 on;`, older ones `listen ... http2`.
if nginx -V 2>&1 | grep -qE 'nginx/1\.(2[5-9]|[3-9][0-9])'; then h2listen="listen 127.0.0.1:9453 ssl; http2 on;"
else h2listen="listen 127.0.0.1:9453 ssl http2;"; fi
nginx_tls_conf h2 "$h2listen http2_max_concurrent_streams 128; keepalive_requests 1000000;"
cat > "$work/peers/peer-fastify-h2.js" <<'EOF'
// @fastify/http-proxy behind fastify's own HTTP/2 over TLS: the Node reference.
const { readFileSync } = require('node:fs');
const [port, target, cert, key] = process.argv.slice(2);
const fastify = require('fastify')({ logger: false, http2: true, https: { cert: readFileSync(cert), key: readFileSync(key) } });
fastify.register(require('@fastify/http-proxy'), { upstream: target });
fastify.listen({ port: +port, host: '127.0.0.1' });
EOF

cli="node $root/dist/src/cli.js --upstream http://127.0.0.1:9001 --workers 1 --cert $work/cert.pem --key $work/key.pem"
specs=(nginx="9453:nginx -c $work/nginx-h2.conf"
  switchyard="9454:$cli --listen 127.0.0.1:9454"
  switchyard-nolog="9455:$cli --listen 127.0.0.1:9455 --config $root/load-tests/bench-nolog.yaml"
  fastify-http-proxy="9456:node $work/peers/peer-fastify-h2.js 9456 http://127.0.0.1:9001 @CERT@ @KEY@" "$@")

echo "HTTP/2 over TLS 1.3 (ALPN h2), h2load -c 50 -m 10; secs=$secs rounds=$rounds (proxy on CPU 1; backend + h2load on CPU 0)"
log_prefix=h2 curl_flags=--http2 start_proxies "${specs[@]}"

# "DONE SECONDS" of h2load sending $3 requests to port $1, path $2; DONE says how many were not 2xx.
# By count, not duration: h2load's -D waited forever on fastify's HTTP/2 server.
load() {
  # A proxy that stops answering under load ends its row (n/a) instead of the whole run.
  local out; out=$(timeout 120 taskset -c 0 h2load -c 50 -m 10 -n "$3" "https://127.0.0.1:$1$2" 2>/dev/null)
  awk '/^finished in/{t=$3+0; if ($3 ~ /ms,$/) t/=1000; else if ($3 ~ /us,$/) t/=1000000} /^requests:/{done=$6} /^status codes:/{ok=$3}
    END{ if (done != ok) printf "%s(%s-non-2xx) %s\n", done, done-ok, t; else print done+0, t }' <<<"$out"
}

declare -A rows
paths=(/small /64k)
for path in "${paths[@]}"; do
  for round in $(seq "$rounds"); do
    for i in "${!names[@]}"; do
      name=${names[$i]} pid=${pids[$i]}
      # Warm-up, which also sizes the measured run to about $secs seconds.
      read -r wn wt <<<"$(load "${ports[$i]}" "$path" 2000)"
      count=$(awk -v n="${wn%%(*}" -v t="${wt:-0}" -v s="$secs" 'BEGIN{ c = (t > 0) ? int(n / t * s) : 0; print (c < 5000) ? 5000 : c }')
      c0=$(cpu_ticks "$pid")
      read -r n t <<<"$(load "${ports[$i]}" "$path" "$count")"
      c1=$(cpu_ticks "$pid")
      [[ ${n:-} == *"("* ]] && echo "warning: $name $path: ${n#*(}" >&2
      n=${n%%(*}
      cpr=$(per_unit $((c1 - c0)) "$n")
      rows[$name$path]+="$(awk -v n="${n:-0}" -v t="${t:-0}" 'BEGIN{ if (t > 0) printf "%.0f", n/t; else print 0 }') $cpr|"
    done
  done
done
fmt="%-20s %-7s %10s %13s %9s\n"
printf "$fmt" proxy path "req/s" "cpu-us/req" "x nginx"
print_medians "${paths[@]}"
