#!/usr/bin/env bash
# Cluster benchmarks of docs/benchmarks.md: NODES servers of one kind on a private
# redis-server (never the shared one), one room spanning all of them.
#
#   scripts/bench-cluster.sh fanout  NODES RECEIVERS [runs] [servers]
#       the highest rate whose p99 stays under 500 ms (fanout-max), then a moderate
#       fixed rate for the latency the bus adds (compared with one node alone);
#   scripts/bench-cluster.sh scale   NODES RECEIVERS [servers]
#       many connections over the nodes (six client processes, six source addresses),
#       one room spanning them all: server memory per connection and the highest rate
#       with every broadcast delivered to all and a p99 under SCALE_P99_MS (default
#       2,000: on one core a single broadcast to 100,000 takes about a second);
#   scripts/bench-cluster.sh traffic NODES [servers]
#       messages Redis delivers per broadcast: to one socket (1:1) and to a room on one
#       node, counted by Redis itself (the receivers of a PUBLISH on the same channel).
#
# servers: "herald node" by default. Herald: bench-server with REDIS_URL (classic
# adapter); Node: bench/peers/node/server.mjs with REDIS_URL (npm @socket.io/redis-adapter,
# classic). Servers and Redis share core 0, the load generator has core 1. Loopback only;
# every run is bounded and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?fanout or traffic}
nodes=${2:?number of nodes}
if [ "$mode" = scale ]; then
  receivers=${3:?receivers}
  servers=${4:-herald}
elif [ "$mode" = fanout ]; then
  receivers=${3:?receivers}
  runs=${4:-1}
  servers=${5:-herald node}
else
  servers=${3:-herald node}
fi
base=${PORT:-3300}
lat_receivers=${LAT_RECEIVERS:-60}
redis_port=${REDIS_PORT:-6391}
cargo build --release -p bench-app -p herald-bench >/dev/null
bin=target/release
[ -d bench/peers/node/node_modules/@socket.io/redis-adapter ] || (cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT

start_redis() {
  taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --client-output-buffer-limit "pubsub 0 0 0" >/dev/null &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server did not start" >&2
  exit 1
}

# start_node KIND PORT [alone]: prints the pid once the server listens; on the cluster's
# Redis unless "alone".
start_node() {
  local out pid url="redis://127.0.0.1:$redis_port"
  out=$(mktemp)
  [ "${3:-}" = alone ] && url=
  case "$1" in
    herald) REDIS_URL=$url taskset -c 0 "$bin/bench-server" --port "$2" >"$out" 2>/dev/null & ;;
    node) REDIS_URL=$url taskset -c 0 node bench/peers/node/server.mjs --port "$2" >"$out" 2>/dev/null & ;;
    *) echo "unknown server $1" >&2; exit 64 ;;
  esac
  for _ in $(seq 100); do grep -q LISTENING "$out" && break; sleep 0.1; done
  pid=$(awk '/^PID/{print $2}' "$out")
  rm -f "$out"
  echo "$pid"
}

cluster() {
  local kind=$1 n=$2 i
  ports=()
  node_pids=()
  start_redis
  for i in $(seq 0 $((n - 1))); do
    ports+=($((base + i)))
    node_pids+=("$(start_node "$kind" $((base + i)))")
    pids+=("${node_pids[-1]}")
  done
  # Every node counted on the request channel before the load starts.
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$redis_port" pubsub numsub 'socket.io-request#/#' | tail -1)" = "$n" ] && break
    sleep 0.05
  done
}

also_args() {
  local also=() i
  for i in $(seq 1 $((${#ports[@]} - 1))); do also+=("127.0.0.1:${ports[$i]}"); done
  if [ ${#also[@]} -gt 0 ]; then
    local ap
    ap=$(IFS=,; echo "${node_pids[*]:1}")
    echo "--also $(IFS=,; echo "${also[*]}") --also-pids $ap"
  fi
}

bench() {
  # shellcheck disable=SC2046
  taskset -c 1 "$bin/herald-bench" --target "127.0.0.1:${ports[0]}" --server-pid "${node_pids[0]}" \
    $(also_args) --bus-pid "$redis_pid" --procs 2 --sources 127.0.0.2,127.0.0.3 "$@" 2>/dev/null || true
}

# A harmless broadcast (a namespace no node serves): every node drops it, Redis counts it.
probe() {
  printf '\x93\xa5probe\x81\xa3nsp\xa5/nope\x80' | redis-cli -p "$redis_port" -x publish "$1"
}

case "$mode" in
  fanout)
    for kind in $servers; do
      for r in $(seq "$runs"); do
        cluster "$kind" "$nodes"
        printf '%s, %s nodes, run %s, fanout-max: ' "$kind" "$nodes" "$r"
        bench fanout-max --receivers "$receivers" --start-rate 2 --factor 1.5 --steps 20 \
          --step-secs 5 --p99-ms 500 --size 64 --connect-rate 3000
        cleanup
        # The latency the bus adds, at a moderate load: a small room (so that the time
        # to write to every member does not hide it), on the cluster, then on one node
        # alone without Redis.
        cluster "$kind" "$nodes"
        printf '%s, %s nodes, run %s, latency (%s receivers, 20 msg/s): ' "$kind" "$nodes" "$r" "$lat_receivers"
        bench fanout --receivers "$lat_receivers" --rate 20 --duration 10 --size 64
        cleanup
        ports=("$base")
        node_pids=("$(start_node "$kind" "$base" alone)")
        pids+=("${node_pids[0]}")
        printf '%s, one node, no bus, run %s, latency (%s receivers, 20 msg/s): ' "$kind" "$r" "$lat_receivers"
        taskset -c 1 "$bin/herald-bench" --target "127.0.0.1:$base" --server-pid "${node_pids[0]}" \
          fanout --receivers "$lat_receivers" --rate 20 --duration 10 --size 64 2>/dev/null || true
        cleanup
      done
    done
    ;;
  scale)
    for kind in $servers; do
      cluster "$kind" "$nodes"
      printf '%s, %s nodes, %s connections, fanout-max: ' "$kind" "$nodes" "$receivers"
      # shellcheck disable=SC2046
      taskset -c 1 "$bin/herald-bench" --target "127.0.0.1:${ports[0]}" --server-pid "${node_pids[0]}" \
        $(also_args) --bus-pid "$redis_pid" --procs 6 \
        --sources 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7 \
        fanout-max --receivers "$receivers" --start-rate 1 --factor 1.5 --steps 12 --step-secs 5 \
        --p99-ms "${SCALE_P99_MS:-2000}" --size 64 --connect-rate 4000 --drain 10 2>/dev/null || true
      cleanup
    done
    ;;
  traffic)
    for kind in $servers; do
      cluster "$kind" "$nodes"
      # One socket and one room on the last node only (a client that joins and stays).
      [ -d tests/interop/node_modules/socket.io-client ] || (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
      (cd tests/interop && PORT_LAST=${ports[-1]} node --input-type=module -e '
        import { io } from "socket.io-client";
        const s = io(`http://127.0.0.1:${process.env.PORT_LAST}`, { transports: ["websocket"] });
        s.on("connect", () => s.emit("join", "solo", () => {}));
        setTimeout(() => process.exit(0), 6000);') &
      client=$!
      sleep 2
      sid=$(redis-cli -p "$redis_port" pubsub channels 'socket.io#/#*' | awk 'length($0) == 33' | head -1)
      sid=${sid#socket.io#/#}
      sid=${sid%#}
      [ -n "$sid" ] || sid=AAAAAAAAAAAAAAAAAAAA
      printf '%s, %s nodes: deliveries per 1:1 broadcast %s; per broadcast to a room on one node %s; per broadcast to all %s\n' \
        "$kind" "$nodes" "$(probe "socket.io#/#$sid#")" "$(probe 'socket.io#/#solo#')" "$(probe 'socket.io#/#')"
      wait "$client" 2>/dev/null || true
      cleanup
    done
    ;;
  *) echo "mode: fanout or traffic" >&2; exit 64 ;;
esac
