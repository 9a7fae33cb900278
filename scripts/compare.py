#!/usr/bin/env python3
"""Runs one load-generator scenario against several servers in one invocation,
alternating them (A B C A B C ...), each server pinned to core 0 and the load generator
to core 1, and prints a table with the median of each server's runs and its ratio to
Herald's. Every server runs the same bench app (join, echo, broadcast) and prints
`PID <pid>` then `LISTENING <port>`.

    scripts/compare.py [--servers herald,socketioxide,node] [--runs 2] [--out FILE] \\
        <mode> [mode options...]

e.g. scripts/compare.py idle --socketio --connections 10000 --rate 4000 --hold 8 --settle 6

Loopback only; every run is bounded by the load generator's own limits and stops by
itself. Build first: cargo build --release --workspace --bins; scripts/build-peers.sh.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {
    "herald": [str(ROOT / "target/release/bench-server")],
    "socketioxide": [str(ROOT / "target/peers/release/socketioxide-bench-app")],
    "node": ["node", str(ROOT / "bench/peers/node/server.mjs")],
    # Not a Socket.IO server: the least any server can do for the bench app, on the same
    # runtime; the floor under every figure (e2e/bench-app/src/bin/floor.rs).
    "floor": [str(ROOT / "target/release/bench-floor")],
}
BENCH = str(ROOT / "target/release/herald-bench")

# What each mode is judged by: (label, path in the JSON line, True when higher is better).
METRICS = {
    "idle": [
        ("RSS per connection (B)", "server_rss_per_connection_bytes", False),
        ("connected", "connected", True),
        ("dropped", "dropped_while_held", False),
    ],
    "connect-storm": [
        ("handshakes/s", "handshakes_per_s", True),
        ("p99 handshake (us)", "handshake_latency.p99_us", False),
        ("connected", "connected", True),
        ("server CPU", "server_cpu_cores", False),
    ],
    "fanout": [
        ("deliveries/s", "deliveries_per_s", True),
        ("p50 (us)", "latency.p50_us", False),
        ("p99 (us)", "latency.p99_us", False),
        ("lost", "lost", False),
        ("duplicates", "duplicates", False),
        ("out of order", "out_of_order", False),
        ("disconnected", "disconnected", False),
        ("server RSS max (MB)", "server_rss_max_mb", False),
        ("server CPU", "server_cpu_cores", False),
        ("client CPU", "client_cpu_cores", False),
    ],
    "fanout-max": [
        ("max deliveries/s", "max_deliveries_per_s", True),
        ("at p99 (us)", "at_p99_us", False),
    ],
    "echo": [
        ("p50 RTT (us)", "rtt.p50_us", False),
        ("p99 RTT (us)", "rtt.p99_us", False),
        ("achieved/s", "achieved_per_s", True),
        ("unanswered", "unanswered", False),
        ("server CPU", "server_cpu_cores", False),
    ],
}


def get(d, path):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def start(name, port):
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *SERVERS[name], "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PORT": str(port)},
    )
    pid = None
    deadline = time.time() + 20
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("PID "):
            pid = int(line.split()[1])
        if line.startswith("LISTENING "):
            return proc, pid or proc.pid, int(line.split()[1])
    proc.kill()
    raise SystemExit(f"{name} did not start")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_once(name, mode_args, port):
    proc, pid, port = start(name, port)
    try:
        time.sleep(0.5)
        out = subprocess.run(
            ["taskset", "-c", "1", BENCH, "--target", f"127.0.0.1:{port}", "--server-pid", str(pid), *mode_args],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
        if line is None:
            return {"error": out.stderr[-500:]}
        result = json.loads(line)
        if "server_rss_max_bytes" in result:
            result["server_rss_max_mb"] = round(result["server_rss_max_bytes"] / 1e6, 1)
        return result
    finally:
        stop(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="herald,socketioxide,node")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--port", type=int, default=3300)
    ap.add_argument("--out", help="append every JSON line here, tagged with server and run")
    ap.add_argument("mode_args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if not a.mode_args:
        ap.error("give a mode and its options")
    mode = a.mode_args[0]
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s}; known: {', '.join(SERVERS)}")
    results = {s: [] for s in servers}
    for r in range(1, a.runs + 1):
        for s in servers:
            res = run_once(s, a.mode_args, a.port)
            res["server"], res["run"] = s, r
            results[s].append(res)
            print(f"# {s} run {r}: {json.dumps(res)}", file=sys.stderr, flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(res) + "\n")
            time.sleep(1)
    metrics = METRICS.get(mode, [])
    medians = {}
    for s in servers:
        for label, path, _ in metrics:
            vals = [get(x, path) for x in results[s]]
            vals = [v for v in vals if isinstance(v, (int, float))]
            medians[(s, label)] = statistics.median(vals) if vals else None
    print(f"\n{' '.join(a.mode_args)}  ({a.runs} runs each, alternating; medians)\n")
    fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:g}")
    print("| metric | " + " | ".join(servers) + " |")
    print("|---|" + "---:|" * len(servers))
    for label, _, higher in metrics:
        print(f"| {label} | " + " | ".join(fmt(medians[(s, label)]) for s in servers) + " |")
    first = servers[0]
    if len(servers) > 1:
        print(f"\n{first}'s advantage (x2.0 = twice as good, x0.5 = half as good):\n")
        print("| metric | " + " | ".join(f"vs {s}" for s in servers[1:]) + " |")
        print("|---|" + "---:|" * (len(servers) - 1))
        for label, _, higher in metrics:
            cells = []
            for s in servers[1:]:
                a_, b_ = medians[(first, label)], medians[(s, label)]
                if a_ is None or b_ is None:
                    cells.append("-")
                elif higher:
                    cells.append(f"x{a_ / b_:.2f}" if b_ else "inf")
                else:
                    cells.append(f"x{b_ / a_:.2f}" if a_ else ("=" if not b_ else "inf"))
            print(f"| {label} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
