#!/usr/bin/env bash
# Documents benchmarks of docs/benchmarks.md: `herald bench docs-*` against the `herald`
# server (documents on the embedded SQLite store) and against the npm `y-socket.io` 1.1.3
# server (bench/peers/node/docs.mjs, in memory; LevelDB for the cold load, its own
# persistence), the servers alternating, each pinned to core 0 and the load generator to
# core 1. Loopback only; every run is bounded and stops by itself.
#   scripts/bench-docs.sh [scenario] [runs] [servers]
#   e.g. scripts/bench-docs.sh busy-500 2 herald,node
# Scenarios:
#   busy-500    one document, 50 editors, 500 updates/s together, 10 s
#   busy-2000   the same at 2,000 updates/s
#   many        10,000 documents, 3 editors each over 3,000 connections, 1 update/s each
#   many-light  the same documents, 1 update/s each document (a third of the editors' rate)
#   cursors     100 users on one document moving their cursors 30 times a second
#   cold        100,000 updates written, the document unloaded, then loaded 5 times
# ARGS is appended to the mode's arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-busy-500}
runs=${2:-2}
servers=${3:-herald,node}
port=${PORT:-3295}
bin=target/release
[ -x "$bin/herald" ] || cargo build --release -p herald-server -p herald-bench >/dev/null
[ -d bench/peers/node/node_modules/y-socket.io ] || (cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error)

case $scenario in
  busy-500) args=(docs-edit --editors 50 --rate 500 --duration 10) ;;
  busy-2000) args=(docs-edit --editors 50 --rate 2000 --duration 10) ;;
  many) args=(docs-edit --docs 10000 --editors 3 --connections 3000 --rate 30000 --duration 20 \
    --join-rate 5000 --settle 5 --verify-docs 100) ;;
  many-light) args=(docs-edit --docs 10000 --editors 3 --connections 3000 --rate 10000 --duration 20 \
    --join-rate 5000 --settle 5 --verify-docs 100) ;;
  cursors) args=(docs-cursors --users 100 --hz 30 --duration 10) ;;
  cold) args=(docs-cold --updates 100000 --chars 10 --loads 5 --unload-wait 4) ;;
  *) echo "unknown scenario $scenario" >&2; exit 64 ;;
esac

start() {
  local name=$1 dir=$2
  case $name in
    herald)
      # The cold load needs the document unloaded soon after its last client leaves, and
      # its writer sending faster than a client's default event rate.
      local extra=()
      [ "$scenario" = cold ] && extra=(HERALD_DOCS__IDLE_UNLOAD_MS=1000 HERALD_DOCS__EVENTS_PER_SECOND=0)
      env HERALD_IM__STORE="sqlite://$dir/herald.db" "${extra[@]}" \
        taskset -c 0 "$bin/herald" --port "$port" >/dev/null 2>"$dir/log" &
      ;;
    node)
      local persist=()
      [ "$scenario" = cold ] && persist=(--persist "$dir/leveldb")
      taskset -c 0 node bench/peers/node/docs.mjs --port "$port" "${persist[@]}" >"$dir/log" 2>&1 &
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
    printf '%s %s, run %s: ' "$name" "$scenario" "$r"
    taskset -c 1 "$bin/herald" bench --target "127.0.0.1:$port" --server-pid "$pid" \
      "${args[@]}" ${ARGS:-} 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    [ -n "${KEEP:-}" ] && tail -5 "$dir/log" >&2
    rm -rf "$dir"
  done
done
