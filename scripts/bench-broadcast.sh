#!/usr/bin/env bash
# Socket.IO broadcast benchmark of docs/benchmarks.md: one room of N receivers on the
# bench app, COUNT broadcasts sent at once, encoded once per broadcast against encoded
# again for every recipient. Server pinned to core 0, load generator to core 1.
# Loopback only; every run is bounded and stops by itself.
#   scripts/bench-broadcast.sh [connections] [count] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
count=${2:-200}
runs=${3:-2}
port=${PORT:-3191}
cargo build --release -p bench-app -p herald-bench >/dev/null
bin=target/release

run() {
  local out pid
  out=$(mktemp)
  taskset -c 0 "$bin/bench-server" --port "$port" "$@" >"$out" 2>/dev/null &
  for _ in $(seq 50); do grep -q LISTENING "$out" && break; sleep 0.1; done
  pid=$(awk '/^PID/{print $2}' "$out")
  rm -f "$out"
  taskset -c 1 "$bin/herald-bench" --target "127.0.0.1:$port" --path /socket.io/ --server-pid "$pid" \
    sio-burst --connections "$n" --rate 4000 --count "$count" --size 64 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for r in $(seq "$runs"); do
  printf 'encode once, run %s: ' "$r"; run
  printf 'encode per recipient, run %s: ' "$r"; run --encode-per-recipient
done
