#!/usr/bin/env bash
# One command for the benchmark: make bench/.venv, install the peers and jobtable, run.
#   bash bench/run.sh [--quick | --sweep | bench.py options...]
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$BENCH_DIR")"
VENV="$BENCH_DIR/.venv"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
fi
"$VENV/bin/pip" install --quiet -r "$BENCH_DIR/requirements.txt"
"$VENV/bin/pip" install --quiet -e "$REPO_ROOT"

if ! command -v pgbench >/dev/null && ! ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1; then
    echo "pgbench not found: apt-get install -y postgresql-contrib (or postgresql-client)" >&2
fi

cd "$REPO_ROOT"
exec "$VENV/bin/python" "$BENCH_DIR/bench.py" "$@"
