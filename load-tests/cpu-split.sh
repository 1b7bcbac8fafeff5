#!/bin/bash
# Where each proxy's run spends the machine: the busy share of both CPUs in peers.sh's layout (the
# proxy alone on CPU 1; wrk and the backend on CPU 0), and each CPU's time per request.
#
# Why: with a new connection per request (--close) both CPUs run near their limit, and wrk's
# latency then depends on which one saturates first. A proxy that leaves CPU 1 idle part of the
# time (nginx) lets requests queue on CPU 0, part of it before wrk starts a request's clock; one
# that saturates CPU 1 holds the queue itself, inside the measured latency (docs/performance.md).
# peers.sh reports only the proxy's own CPU; this shows the other side of it. A CPU's time here is
# all of it (interrupts included), so CPU 1's runs a little above peers.sh's figure for the proxy.
# With perf, it also counts the inter-processor interrupts each CPU sends per request: a write that
# wakes a peer asleep on the other CPU, or one that preempts what runs there, sends one, and on a
# VM each costs the sender far more than the write (docs/performance.md). Without perf: "-".
# Last, each row's p99 round by round and its ratio to nginx's in the same round, with the median
# of those ratios: the latency comparison that one peers.sh run (one round's p99) cannot make.
#
# usage: load-tests/cpu-split.sh [--path /small] [--close] [--rounds 3] [--secs 8] [--only NAMES]
# Rows (as load-tests/peers.sh starts them, one worker each): nginx, nginx-log, switchyard,
# switchyard-nolog. Needs the configs a run of load-tests/peers.sh leaves in $BENCH_DIR
# (/tmp/switchyard-bench), and its backend (started here if it is not running).
set -u
path=/small close= rounds=3 secs=8 only=
while [ $# -gt 0 ]; do case $1 in
  --path) path=$2; shift 2;; --close) close=1; shift;; --rounds) rounds=$2; shift 2;;
  --secs) secs=$2; shift 2;; --only) only=$2; shift 2;;
  *) echo "load-tests/cpu-split.sh: unknown option $1" >&2; exit 2;; esac; done
root=$(cd "$(dirname "$0")/.." && pwd)
work=${BENCH_DIR:-/tmp/switchyard-bench}
for f in nginx-backend.conf nginx-proxy.conf nginx-proxy-log.conf; do
  [ -f "$work/$f" ] || { echo "load-tests/cpu-split.sh: no $work/$f: run load-tests/peers.sh once first" >&2; exit 2; }
done
(cd "$root" && npm run build --silent) || exit 1
if ! { [ -s "$work/backend.pid" ] && kill -0 "$(cat "$work/backend.pid")" 2>/dev/null; }; then
  taskset -c 0 nginx -c "$work/nginx-backend.conf" >/dev/null 2>&1 & sleep 0.7; fi
cli="node $root/dist/src/cli.js --upstream http://127.0.0.1:9001 --workers 1"
specs=("nginx=9100:nginx -c $work/nginx-proxy.conf"
  "nginx-log=9105:nginx -c $work/nginx-proxy-log.conf"
  "switchyard=9200:$cli --listen 127.0.0.1:9200"
  "switchyard-nolog=9201:$cli --listen 127.0.0.1:9201 --config $root/load-tests/bench-nolog.yaml")
hdr=(); [ -n "$close" ] && hdr=(-H 'Connection: close')
names=() ports=() pids=()
for spec in "${specs[@]}"; do
  name=${spec%%=*} rest=${spec#*=} port=${rest%%:*} cmd=${rest#*:}
  [ -n "$only" ] && [[ ",$only," != *",$name,"* ]] && continue
  # Both CPUs are measured whole: a leftover proxy on the port would be measured in this one's name.
  curl -s -o /dev/null "http://127.0.0.1:$port/" && { echo "load-tests/cpu-split.sh: port $port is already in use" >&2; exit 2; }
  setsid taskset -c 1 bash -c "exec $cmd" >"$work/$name.split.log" 2>&1 & pid=$!
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port$path" && break; sleep 0.2; done
  names+=("$name") ports+=("$port") pids+=("$pid")
done
trap 'for p in "${pids[@]}"; do kill -- -$p 2>/dev/null; done; rm -f "$work"/*.split.log "$work/nginx-access.log"; trap_ipis' EXIT
# jiffies (busy, total) of cpu0 and cpu1 from /proc/stat: busy is user, nice, system, irq and
# softirq; the total adds idle, iowait and steal (guest time is already counted in user and nice)
ticks() { awk '$1=="cpu0"||$1=="cpu1"{b=$2+$3+$4+$7+$8; printf "%d %d ", b, b+$5+$6+$9}' /proc/stat; }
hz=$(getconf CLK_TCK)
# perf stat counting the IPIs sent from each CPU while the measured wrk runs, if this machine lets it.
ipis=$(mktemp); trap_ipis() { rm -f "$ipis"; }
perf_ok=; perf stat -a -A -C 0,1 -e ipi:ipi_send_cpu -x, -o "$ipis" -- true >/dev/null 2>&1 && perf_ok=1
echo "path=$path close=${close:-0} secs=$secs rounds=$rounds (proxy on CPU 1; backend + wrk on CPU 0)"
declare -A rows
for round in $(seq "$rounds"); do
  for i in "${!names[@]}"; do
    url=http://127.0.0.1:${ports[$i]}$path
    taskset -c 0 wrk -t1 -c50 -d2s "${hdr[@]}" "$url" >/dev/null 2>&1
    : > "$ipis"
    a=$(ticks)
    if [ -n "$perf_ok" ]; then
      out=$(perf stat -a -A -C 0,1 -e ipi:ipi_send_cpu -x, -o "$ipis" -- taskset -c 0 wrk -t1 -c50 -d"${secs}s" --latency "${hdr[@]}" "$url" 2>&1)
    else
      out=$(taskset -c 0 wrk -t1 -c50 -d"${secs}s" --latency "${hdr[@]}" "$url" 2>&1)
    fi
    b=$(ticks)
    i0=$(awk -F, '$1=="CPU0"{print $2}' "$ipis") i1=$(awk -F, '$1=="CPU1"{print $2}' "$ipis")
    n=$(awk '/requests in/{print $1}' <<<"$out") rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    p99=$(awk '$1=="99%"{print $2}' <<<"$out")
    grep -qE 'Non-2xx|Socket errors' <<<"$out" && echo "! ${names[$i]} round $round: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ')"
    rows[${names[$i]}]+=$(echo "$a $b" | awk -v n="${n:-0}" -v hz="$hz" -v rps="${rps:-0}" -v p99="${p99:--}" -v i0="${i0:-}" -v i1="${i1:-}" '{
      b0=$5-$1; t0=$6-$2; b1=$7-$3; t1=$8-$4; if (n == 0 || t0 == 0 || t1 == 0) { print "0 - 0 0 0 0 - -|"; exit }
      q0 = (i0 ~ /^[0-9]+$/) ? sprintf("%.3f", i0/n) : "-"; q1 = (i1 ~ /^[0-9]+$/) ? sprintf("%.3f", i1/n) : "-"
      printf "%s %s %.1f %.1f %.1f %.1f %s %s|", rps, p99, b0/t0*100, b0/hz*1e6/n, b1/t1*100, b1/hz*1e6/n, q0, q1 }')
  done
done
# the median round of each row, by CPU 1's time per request
printf "%-18s %9s %8s %11s %13s %11s %13s %10s %10s\n" proxy req/s p99 "cpu0 busy" "cpu0 us/req" "cpu1 busy" "cpu1 us/req" "cpu0 ipi" "cpu1 ipi"
for name in "${names[@]}"; do
  tr '|' '\n' <<<"${rows[$name]}" | sed '/^$/d' | sort -g -k6 \
    | awk -v n="$name" '{a[NR]=$0} END{split(a[int((NR+1)/2)],f," "); printf "%-18s %9s %8s %10s%% %13s %10s%% %13s %10s %10s\n", n, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]}'
done
if [ -n "$perf_ok" ]; then echo "(ipi: inter-processor interrupts sent from that CPU per request, perf's ipi:ipi_send_cpu)"; fi
# p99 round by round, and its ratio to nginx's in the same round: one round's p99 is one 8 s sample
# of the tail, and the host's load moves every proxy's from round to round (nginx's /small p99 has
# measured 1.18 ms in one run and 5.54 in the next), so the ratio is taken where the rows ran side
# by side, and its median over the rounds is the figure to compare with a latency target.
ms() { awk '{ v=$1; if (v ~ /us$/) v/=1000; else if (v ~ /ms$/) v+=0; else if (v ~ /s$/) v*=1000; else { print "-"; next }; printf "%.2f\n", v }'; }
declare -A p99s
for name in "${names[@]}"; do
  p99s[$name]=$(tr '|' '\n' <<<"${rows[$name]}" | sed '/^$/d' | awk '{print $2}' | ms | tr '\n' ' ')
done
printf "%-18s %-40s %12s %s\n" proxy "p99 by round, ms" "median" "p99 / nginx's, median of the rounds (each round)"
ref=${p99s[nginx]:-}
for name in "${names[@]}"; do
  echo "${p99s[$name]}|$ref" | awk -v n="$name" -F'|' '
    function median(a, k,   t, i, j) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
    { k = split($1, v, " "); m = split($2, r, " "); c = 0; nw = 0; each = ""
      for (i = 1; i <= k; i++) if (v[i] != "-") {
        w[++nw] = v[i]; if (i <= m && r[i] > 0) { q[++c] = v[i] / r[i]; each = each sprintf(" %.2f", v[i] / r[i]) } }
      med = nw > 0 ? sprintf("%9.2f ms", median(w, nw)) : "-"; rat = c > 0 ? sprintf("%.2fx (%s)", median(q, c), substr(each, 2)) : "-"
      printf "%-18s %-40s %12s %s\n", n, $1, med, rat }'
done
