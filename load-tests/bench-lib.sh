# What tls-handshakes.sh and h2load.sh share (sourced, not run): the backend, the certificate, the
# proxies' start, nginx's TLS proxy config, CPU accounting and the median table. Expects $root, $shared, $work and $only.

# peers.sh's nginx backend on 127.0.0.1:9001 (CPU 0), from its config when it is at hand.
start_backend() {
  mkdir -p "$work/www"
  [ -s "$work/www/64k" ] || head -c 49152 /dev/urandom | base64 -w 76 | head -c 65536 > "$work/www/64k"
  if [ -f "$(dirname "$shared")/nginx-backend.conf" ]; then
    sed "s#@WWW@#$work/www#g; s#@WORK@#$work#g" "$(dirname "$shared")/nginx-backend.conf" > "$work/nginx-backend.conf"
  else
    cat > "$work/nginx-backend.conf" <<EOF
worker_processes 1; daemon off; pid $work/backend.pid; error_log $work/backend.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:9001 backlog=4096;
    location = /small { default_type text/plain; return 200 "hello world\n"; }
    location = /64k { root $work/www; default_type application/octet-stream; } } }
EOF
  fi
  if ! { [ -s "$work/backend.pid" ] && kill -0 "$(cat "$work/backend.pid")" 2>/dev/null; }; then
    taskset -c 0 nginx -c "$work/nginx-backend.conf" >/dev/null 2>&1 & sleep 0.7; fi
}

# One certificate for every proxy: ECDSA P-256, as the TLS benchmarks ask.
make_cert() {
  [ -s "$work/cert.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=bench.example -addext subjectAltName=DNS:bench.example -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  chmod 600 "$work/key.pem"
}

# nginx as a TLS 1.3 proxy to the backend, with the certificate: $work/nginx-$1.conf, whose server
# block starts with the directives in $2 (its listen line and what the benchmark sets besides).
nginx_tls_conf() {
  cat > "$work/nginx-$1.conf" <<EOF
worker_processes 1; daemon off; pid $work/nginx-$1.pid; error_log $work/nginx-$1.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:9001; keepalive 64; }
  server {
    $2
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_protocols TLSv1.3;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$proxy_host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; }
  }
}
EOF
}

# Each NAME=PORT:COMMAND of "$@" not left out by --only, started alone on CPU 1 and waited for
# with `curl $curl_flags https://127.0.0.1:PORT/small`; fills names, ports and pids.
names=() ports=() pids=()
start_proxies() {
  local spec name rest port cmd pid
  for spec in "$@"; do
    name=${spec%%=*} rest=${spec#*=} port=${rest%%:*} cmd=${rest#*:}
    [ -n "$only" ] && [[ ",$only," != *",$name,"* ]] && continue
    cmd=${cmd//@CERT@/$work/cert.pem}; cmd=${cmd//@KEY@/$work/key.pem}
    setsid taskset -c 1 bash -c "exec $cmd" >"$work/$log_prefix-$name.log" 2>&1 & pid=$!
    for _ in $(seq 50); do curl -skf $curl_flags -o /dev/null "https://127.0.0.1:$port/small" && break; sleep 0.2; done
    names+=("$name") ports+=("$port") pids+=("$pid")
  done
  trap 'for p in "${pids[@]}"; do kill -- -$p 2>/dev/null; done' EXIT
}

cpu_ticks() { # utime+stime of a process and its descendants, in clock ticks
  local t=0 p; for p in $(pstree -pT "$1" 2>/dev/null | grep -o '([0-9]\+)' | tr -d '()'); do
    [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
hz=$(getconf CLK_TCK)

# Microseconds of CPU per unit from a tick difference $1 over $2 units ("n/a" for none).
per_unit() { awk -v d="$1" -v n="${2:-0}" -v hz="$hz" 'BEGIN{ if (n>0) printf "%.1f", d*1e6/hz/n; else print "n/a" }'; }

# The round with the median CPU of "RATE CPU|RATE CPU|...".
median() { tr '|' '\n' <<<"$1" | sed '/^$/d' | sort -g -k2 | awk '{a[NR]=$0} END{print a[int((NR+1)/2)]}'; }

# CPU $1 as a ratio to nginx's $2 ("-" when either is missing).
ratio() { awk -v c="$1" -v g="$2" 'BEGIN{ if (g+0>0 && c ~ /^[0-9.]+$/) printf "%.2f", c/g; else print "-" }'; }

# One row per proxy and key ("$@": paths, modes...): the median round of rows[NAMEKEY] ("RATE
# CPU|..."), and its CPU as a ratio to nginx's for the same key. $fmt formats a row from name,
# key (a leading "-" dropped), rate, CPU and ratio.
print_medians() {
  local key name rate cpu ng
  declare -A med=()
  for key in "$@"; do
    for name in "${names[@]}"; do med[$name]=$(median "${rows[$name$key]}"); done
    ng=$(cut -d' ' -f2 <<<"${med[nginx]:-0 0}")
    for name in "${names[@]}"; do
      read -r rate cpu <<<"${med[$name]}"
      printf "$fmt" "$name" "${key#-}" "$rate" "$cpu" "$(ratio "$cpu" "$ng")"
    done
  done
}
