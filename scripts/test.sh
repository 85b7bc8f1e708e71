#!/usr/bin/env bash
# The whole test suite: set-up (system packages, venv), lint, types, then unit,
# integration and e2e tests. Nothing is skipped; a missing tool fails the run.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
bash scripts/setup-openstack.sh
venv="${RAIN_VENV:-$here/.venv}"
echo "== ruff"; "$venv/bin/ruff" check rain tests bench
echo "== mypy"; "$venv/bin/mypy" rain
# The suite writes images of several GiB under the temp dir; a full disk shows up
# much later as database errors, so say it up front.
tmp="${TMPDIR:-/tmp}"
need_gib=25
free_gib=$(( $(df -Pk "$tmp" | awk 'NR==2 {print $4}') / 1048576 ))
if (( free_gib < need_gib )); then
  echo "scripts/test.sh: only ${free_gib} GiB free in $tmp, the suite needs ${need_gib} GiB; free space there (old runs are in $tmp/pytest-of-$(id -un)) or set TMPDIR" >&2
  exit 1
fi
echo "== pytest"
exec "$venv/bin/pytest" tests -p no:cacheprovider --durations=30 "$@"
