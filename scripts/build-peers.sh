#!/usr/bin/env bash
# Builds the peers of the side-by-side benchmarks from their registries: the Node
# `socket.io` server (npm, bench/peers/node) and `socketioxide` (crates.io,
# bench/peers/socketioxide), each running the bench app. Prints where they are.
set -euo pipefail
cd "$(dirname "$0")/.."
(cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error)
CARGO_TARGET_DIR="$PWD/target/peers" cargo build --release --quiet \
  --manifest-path bench/peers/socketioxide/Cargo.toml
echo "node:         node bench/peers/node/server.mjs"
echo "socketioxide: target/peers/release/socketioxide-bench-app"
