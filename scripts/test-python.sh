#!/usr/bin/env bash
# Python tests: a virtualenv under target/ with tests/python/requirements.txt, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
venv=target/py-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
export HERALD_BIN_DIR="${HERALD_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/debug}"
cd tests/python
exec "../../$venv/bin/python" -m pytest -q -p no:cacheprovider .
