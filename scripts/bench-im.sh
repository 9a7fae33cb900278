#!/usr/bin/env bash
# IM persisted-throughput benchmark of docs/benchmarks.md (1:1): `herald bench im-direct`
# against the `herald` server (IM on SQLite, or PostgreSQL with STORE=postgres://...) and
# against the Node IM peer (socket.io 4 + better-sqlite3, bench/peers/node/im.mjs), the
# servers alternating, each pinned to core 0 and the load generator to core 1. Both
# commit with synchronous=FULL unless DURABILITY=normal. Loopback only; every run is
# bounded and stops by itself.
#   scripts/bench-im.sh [clients] [rate] [seconds] [runs] [servers]
#   e.g. scripts/bench-im.sh 10000 50000 10 2 herald,node
# MODE picks the `herald bench` mode: im-direct (the default), im-mixed (half the clients in
# groups of 50), im-sync or im-catchup (these take no clients, rate or seconds: put their
# options in ARGS). ARGS is appended to the mode's arguments, e.g.
#   MODE=im-catchup ARGS="--clients 10000 --behind 100" scripts/bench-im.sh - - - 2 herald,node
# The Node peer has no send rate and no conversation budget: Herald runs without them
# too (im.send_rate = 0, im.conversation_fanout_rate = 0) unless SEND_RATE or FANOUT_RATE
# is set.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-10000}
rate=${2:-20000}
secs=${3:-10}
runs=${4:-2}
servers=${5:-herald,node}
durability=${DURABILITY:-full}
mode=${MODE:-im-direct}
port=${PORT:-3291}
secret=bench-im-secret-bench-im-secret-0123456789
bin=target/release
[ -x "$bin/herald" ] || cargo build --release -p herald-server >/dev/null
[ -d bench/peers/node/node_modules/better-sqlite3 ] || (cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error)

start() {
  local name=$1 dir=$2
  case $name in
    herald)
      HERALD_AUTH__JWT_SECRET=$secret HERALD_IM__STORE=${STORE:-sqlite://$dir/herald.db} \
        HERALD_IM__DURABILITY=$durability HERALD_IM__SEND_RATE=${SEND_RATE:-0} \
        HERALD_IM__CONVERSATION_FANOUT_RATE=${FANOUT_RATE:-0} \
        taskset -c 0 "$bin/herald" --port "$port" >/dev/null 2>"$dir/log" &
      ;;
    node)
      local sync=FULL
      [ "$durability" = normal ] && sync=NORMAL
      taskset -c 0 node bench/peers/node/im.mjs --port "$port" --secret "$secret" \
        --synchronous "$sync" --db "$dir/im.db" >"$dir/log" 2>&1 &
      ;;
  esac
  echo $!
}

case $mode in
  im-direct | im-mixed) args=(--clients "$clients" --rate "$rate" --duration "$secs") ;;
  *) args=() ;;
esac

for r in $(seq "$runs"); do
  for name in ${servers//,/ }; do
    dir=$(mktemp -d)
    pid=$(start "$name" "$dir")
    for _ in $(seq 100); do
      (grep -q "LISTENING\|listening on" "$dir/log" 2>/dev/null) && break
      sleep 0.1
    done
    sleep 1
    printf '%s (durability %s), run %s: ' "$name" "$durability" "$r"
    taskset -c 1 "$bin/herald" bench --target "127.0.0.1:$port" --server-pid "$pid" \
      "$mode" "${args[@]}" --secret "$secret" ${ARGS:-} 2>/dev/null || true
    # Not this shell's child (started in $(...)): wait for it to be gone, so the next
    # server finds the port free.
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    [ -n "${KEEP:-}" ] && cat "$dir/log" | tail -5 >&2
    rm -rf "$dir"
  done
done
