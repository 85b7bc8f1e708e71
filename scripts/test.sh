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
# The suite writes images of several GiB under the temp dir; a full disk shows up
# much later as database errors, so say it up front.
tmp="${TMPDIR:-/tmp}"
need_gib=25
free_gib=$(( $(df -Pk "$tmp" | awk 'NR==2 {print $4}') / 1048576 ))
if (( free_gib < need_gib )); then
  echo "scripts/test.sh: only ${free_gib} GiB free in $tmp, the suite needs ${need_gib} GiB; free space there (old runs are in $tmp/pytest-of-$(id -un)) or set TMPDIR" >&2
  exit 1
fi
pytest=("$venv/bin/pytest" -p no:cacheprovider --durations=30)
if (( $# > 0 )); then  # a developer's selection (-k, -x, a path): one run, as asked
  bash scripts/setup-openstack.sh
  echo "== pytest"
  exec "${pytest[@]}" tests "$@"
fi
# Two pytest runs side by side, which a 2-core machine has room for: the tests that
# start no VM and build nothing (unit, the repository service and its commands, the web
# catalog: about 13 minutes, mostly waiting on the database) run in the background while
# Keystone and Glance install and then the tests that build and boot (TCG keeps a core
# busy, rarely both) run in front. Each has its own temp dir; the background run's output
# follows.
quick=(tests/unit tests/integration/repository tests/integration/web)
quick_tmp=$(mktemp -d "$tmp/rain-tests-quick.XXXXXX")
quick_log="$quick_tmp.log"
echo "== pytest ${quick[*]} (in the background, its output below when done)"
# in a process group of its own (setsid), so that if this script stops early (set-up failed, Ctrl-C) the
# trap ends that pytest and what it started (services, database servers, VMs), not pytest alone
setsid "${pytest[@]}" --basetemp="$quick_tmp/base" "${quick[@]}" > "$quick_log" 2>&1 &
quick_pid=$!
trap 'kill -- -"$quick_pid" 2>/dev/null || true' EXIT
bash scripts/setup-openstack.sh
echo "== pytest tests, but for those"
rest=0
"${pytest[@]}" tests "${quick[@]/#/--ignore=}" || rest=$?
quick_rc=0
wait "$quick_pid" || quick_rc=$?
trap - EXIT
echo "== pytest ${quick[*]}"
cat "$quick_log"
if (( quick_rc == 0 )); then rm -rf "$quick_tmp" "$quick_log"; fi
echo "== tests: exit ${rest} (builds and boots), ${quick_rc} (${quick[*]})"
(( rest == 0 && quick_rc == 0 ))
