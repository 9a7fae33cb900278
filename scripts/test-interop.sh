#!/usr/bin/env bash
# Node interop tests: npm packages from tests/interop/package-lock.json, then node --test.
set -euo pipefail
cd "$(dirname "$0")/../tests/interop"
command -v node >/dev/null || { echo "node is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is required" >&2; exit 1; }
# Reinstall when the lockfile changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.herald-lock; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.herald-lock
fi
export HERALD_BIN_DIR="${HERALD_BIN_DIR:-$PWD/../../target/debug}"
exec node --test --test-concurrency=1 --test-reporter=spec ./*.test.mjs
