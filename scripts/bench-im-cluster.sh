#!/usr/bin/env bash
# IM across nodes (docs/benchmarks.md): `herald bench im-direct` (or MODE=im-mixed) against
# NODES herald servers sharing one PostgreSQL database and a private redis-server (never
# the shared one), the clients spread over the nodes round-robin (so most conversations
# span two nodes). NODES=1 runs one plain server on the same database (no cluster), for
# the side-by-side. Servers, Redis and PostgreSQL share the machine; the servers and Redis
# are pinned to core 0, the load generator to core 1. Loopback only; every run is bounded
# and stops by itself.
#   scripts/bench-im-cluster.sh NODES [clients] [rate] [seconds] [runs]
#   e.g. scripts/bench-im-cluster.sh 3 10000 2000 10 1
# PG is the PostgreSQL server (default postgres://postgres@127.0.0.1:5432); the database
# herald_bench_cluster is made afresh for each run.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:?number of nodes}
clients=${2:-10000}
rate=${3:-2000}
secs=${4:-10}
runs=${5:-1}
mode=${MODE:-im-direct}
pg=${PG:-postgres://postgres@127.0.0.1:5432}
db=herald_bench_cluster
base=${PORT:-3391}
redis_port=${REDIS_PORT:-6392}
secret=bench-im-secret-bench-im-secret-0123456789
bin=target/release
[ -n "${NO_BUILD:-}" ] || cargo build --release -p herald-server >/dev/null

pids=()
dirs=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  pids=()
  for d in "${dirs[@]}"; do rm -rf "$d"; done
  dirs=()
}
trap cleanup EXIT

for r in $(seq "$runs"); do
  psql "$pg/postgres" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  cluster_env=()
  if [ "$nodes" -gt 1 ]; then
    taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
    pids+=($!)
    for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    cluster_env=(HERALD_CLUSTER__REDIS_URL="redis://127.0.0.1:$redis_port")
  fi
  node_pids=()
  also=()
  for i in $(seq 0 $((nodes - 1))); do
    dir=$(mktemp -d)
    dirs+=("$dir")
    env "${cluster_env[@]}" HERALD_AUTH__JWT_SECRET=$secret HERALD_IM__STORE="$pg/$db" \
      HERALD_IM__SEND_RATE=0 HERALD_IM__CONVERSATION_FANOUT_RATE=0 \
      taskset -c 0 "$bin/herald" --port $((base + i)) >/dev/null 2>"$dir/log" &
    node_pids+=($!)
    pids+=($!)
    for _ in $(seq 200); do grep -q "connected to PostgreSQL" "$dir/log" 2>/dev/null && break; sleep 0.1; done
    [ "$i" -gt 0 ] && also+=("127.0.0.1:$((base + i))")
  done
  if [ "$nodes" -gt 1 ]; then
    for d in "${dirs[@]}"; do
      for _ in $(seq 100); do grep -q "caught up with the other nodes" "$d/log" && break; sleep 0.1; done
    done
  fi
  sleep 1
  also_args=()
  [ ${#also[@]} -gt 0 ] && also_args=(--also "$(IFS=,; echo "${also[*]}")")
  printf 'herald, %s node(s) on PostgreSQL, run %s: ' "$nodes" "$r"
  taskset -c 1 "$bin/herald" bench --target "127.0.0.1:$base" --server-pid "${node_pids[0]}" \
    "${also_args[@]}" "$mode" --clients "$clients" --rate "$rate" --duration "$secs" \
    --secret "$secret" ${ARGS:-} 2>/dev/null || true
  if [ "$nodes" -gt 1 ]; then
    filled=0
    for p in $(seq 0 $((nodes - 1))); do
      n=$(curl -s "http://127.0.0.1:$((base + p))/metrics" | awk '/^herald_im_cluster_filled_total/{print $2}')
      filled=$((filled + ${n:-0}))
    done
    echo "messages pushed from the store after a missed bus message (all nodes): $filled"
  fi
  cleanup
done
psql "$pg/postgres" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
