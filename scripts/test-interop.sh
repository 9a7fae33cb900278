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
# The demo page test drives headless Chromium (Debian's package; playwright-core only
# drives it, it downloads no browser).
if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  echo "installing chromium for the demo page test"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  command -v chromium >/dev/null || { echo "chromium is required (apt-get install chromium, or set CHROMIUM)" >&2; exit 1; }
fi
# The TLS test makes its certificates with the openssl command.
command -v openssl >/dev/null || { echo "openssl is required (apt-get install openssl)" >&2; exit 1; }
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
export HERALD_BIN_DIR="${HERALD_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/../../target}/debug}"
node --test --test-concurrency=1 --test-reporter=spec ./*.test.mjs
# The IM and document tests again with every server on PostgreSQL (a database of its
# own each).
echo "=== the IM and document tests on PostgreSQL"
IM_TEST_STORE=postgres exec node --test --test-concurrency=1 --test-reporter=spec ./im*.test.mjs ./docs.test.mjs
