#!/usr/bin/env bash
# The IM live-state benchmarks of docs/benchmarks.md (issue 13): `herald bench im-kick`,
# `im-storm` and `im-presence` against the `herald` server and the Node IM peer
# (bench/peers/node/im.mjs), the servers alternating, each pinned to core 0 and the load
# generator to core 1, from several loopback source addresses. Each server gets the
# settings its mode needs, the same on both:
#   im-kick:     the device policy `single`;
#   im-storm:    a send rate of 20/s (bursts of 40) per user and a budget of 10,000 member
#                deliveries a second per conversation; no per-socket event limit (so that
#                the IM limits are what holds the flooder); commits synced as `normal`;
#   im-presence: the defaults (a 2 s grace; Herald damps flapping, the peer does not).
# Loopback only; every run is bounded and stops by itself.
#   scripts/bench-im-live.sh MODE [runs] [servers]   e.g. scripts/bench-im-live.sh im-kick 2 herald,node
# ARGS is appended to the mode's arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: scripts/bench-im-live.sh im-kick|im-storm|im-presence [runs] [servers]}
runs=${2:-1}
servers=${3:-herald,node}
port=${PORT:-7300}
secret=bench-im-live-secret-0123456789abcdef
bin=target/release
[ -x "$bin/herald" ] || cargo build --release -p herald-server >/dev/null
[ -d bench/peers/node/node_modules/better-sqlite3 ] || (cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error)

start() {
  local name=$1 dir=$2
  local env=() peer=()
  case $mode in
    im-kick) env=(HERALD_IM__DEVICE_POLICY=single) peer=(--device-policy single) ;;
    im-storm)
      env=(HERALD_LIMITS__EVENTS_PER_SECOND=0 HERALD_IM__DURABILITY=normal)
      peer=(--send-rate 20 --send-burst 40 --fanout-rate 10000 --synchronous NORMAL)
      ;;
  esac
  case $name in
    herald)
      env HERALD_AUTH__JWT_SECRET=$secret HERALD_IM__STORE="sqlite://$dir/herald.db" "${env[@]}" \
        taskset -c 0 "$bin/herald" --port "$port" >/dev/null 2>"$dir/log" &
      ;;
    node)
      taskset -c 0 node bench/peers/node/im.mjs --port "$port" --secret "$secret" \
        --db "$dir/im.db" "${peer[@]}" >"$dir/log" 2>&1 &
      ;;
  esac
  echo $!
}

for r in $(seq "$runs"); do
  for name in ${servers//,/ }; do
    dir=$(mktemp -d)
    pid=$(start "$name" "$dir")
    for _ in $(seq 100); do
      (grep -q "LISTENING\|listening on" "$dir/log" 2>/dev/null) && break
      sleep 0.1
    done
    sleep 1
    printf '%s, run %s: ' "$name" "$r"
    taskset -c 1 "$bin/herald" bench --target "127.0.0.1:$port" --server-pid "$pid" \
      --sources 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 \
      "$mode" --secret "$secret" ${ARGS:-} 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -rf "$dir"
  done
done
