#!/usr/bin/env bash
# Makes sure the PostgreSQL server the tests use answers on 127.0.0.1:5432: starts this
# machine's cluster (Debian's pg_ctlcluster) when it is down. Fails when it cannot: the
# PostgreSQL tests are never skipped under CI.
set -euo pipefail
host=127.0.0.1 port=5432
if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -n | tail -1)
  echo "starting PostgreSQL $version (cluster main)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi
for _ in $(seq 1 40); do
  if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
    exit 0
  fi
  sleep 0.5
done
echo "PostgreSQL is required on $host:$port (apt-get install postgresql; trust auth for user postgres)" >&2
exit 1
