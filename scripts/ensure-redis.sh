#!/usr/bin/env bash
# The cluster tests start redis-server instances of their own on free ports (never the
# shared one): make sure the binary is there, installing Debian's package when it is not
# and we may.
set -euo pipefail
if command -v redis-server >/dev/null; then
  exit 0
fi
echo "installing redis-server for the cluster tests"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # The package starts a service of its own on 6379 where it can; the tests never use it.
fi
command -v redis-server >/dev/null || { echo "redis-server is required (apt-get install redis-server)" >&2; exit 1; }
