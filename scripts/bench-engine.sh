#!/usr/bin/env bash
# Engine-level benchmarks of docs/benchmarks.md, server pinned to core 0 and the load
# generator to core 1. Loopback only; every run is bounded and stops by itself.
#   scripts/bench-engine.sh idle  [connections]          server RSS per idle WebSocket
#   scripts/bench-engine.sh burst [connections] [runs]   coalesced vs one write per frame
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-idle}
n=${2:-10000}
runs=${3:-2}
port=${PORT:-3190}
cargo build --release -p conformance -p herald-bench >/dev/null
bin=target/release

start_server() {
  local out
  out=$(mktemp)
  taskset -c 0 "$bin/eio-bench-server" --port "$port" "$@" >"$out" 2>/dev/null &
  for _ in $(seq 50); do grep -q LISTENING "$out" && break; sleep 0.1; done
  server_pid=$(awk '/^PID/{print $2}' "$out")
  rm -f "$out"
}

stop_server() { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
trap stop_server EXIT

case "$mode" in
  idle)
    start_server
    taskset -c 1 "$bin/herald-bench" --target "127.0.0.1:$port" --path /engine.io/ --server-pid "$server_pid" \
      idle --connections "$n" --rate 4000 --hold 8 --settle 6
    stop_server
    ;;
  burst)
    for run in $(seq "$runs"); do
      for writes in coalesced per-frame; do
        flag=""; [ "$writes" = per-frame ] && flag=--per-frame-writes
        start_server $flag
        printf '%s run %s: ' "$writes" "$run"
        taskset -c 1 "$bin/herald-bench" --target "127.0.0.1:$port" --path /engine.io/ --server-pid "$server_pid" \
          burst --connections "$n" --rate 4000 --count 200 --size 100 2>/dev/null
        stop_server
      done
    done
    ;;
  *) echo "usage: $0 idle|burst [connections] [runs]" >&2; exit 64 ;;
esac
