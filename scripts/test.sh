#!/usr/bin/env bash
# The whole test suite: set-up (system packages, venv), lint, types, then unit,
# integration and e2e tests. Nothing is skipped; a missing tool fails the run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
venv="${RAIN_VENV:-$here/.venv}"
echo "== ruff"; "$venv/bin/ruff" check rain tests bench
echo "== mypy"; "$venv/bin/mypy" rain
echo "== pytest"
exec "$venv/bin/pytest" tests -p no:cacheprovider --durations=15 "$@"
