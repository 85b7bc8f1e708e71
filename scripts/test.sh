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
# Three pytest runs side by side. A boot under TCG keeps about 1.3 of this machine's 2 cores busy
# (measured: a UEFI boot test), and a build waits on the mirror and the disk, so the tests that build
# and boot run as two groups at once: the register and launch stages (the cloud sites, the sandbox VM,
# the netbooted nodes) in front, and the generate stage, its builders and the repository's e2e tests
# beside them. The tests that start no VM and build nothing (unit, the repository service and its
# commands, the web catalog: about 10 minutes, mostly waiting on the database) run in the background
# from the start, while Keystone and Glance install. Each run has its own temp dir and its output
# follows the front's. The groups share only the test cache (tests/support/built_images.py builds there
# one at a time, under a lock) and check for leftovers under their own directories.
quick=(tests/unit tests/integration/repository tests/integration/web)
build=(tests/e2e/generate tests/e2e/repository tests/integration/builders tests/integration/generate
       tests/integration/image)
pids=()
# in a process group of its own (setsid), so that if this script stops early (set-up failed, Ctrl-C) the
# trap ends that pytest and what it started (services, database servers, VMs), not pytest alone
trap 'for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done' EXIT
background() {  # NAME TESTS...: a pytest run in the background, its temp dir and log named by NAME
  local name=$1; shift
  local dir; dir=$(mktemp -d "$tmp/rain-tests-$name.XXXXXX")
  echo "== pytest $* (in the background, its output below when done)"
  setsid "${pytest[@]}" --basetemp="$dir/base" "$@" > "$dir.log" 2>&1 &
  pids+=("$!"); dirs+=("$dir"); groups+=("$*")
}
dirs=(); groups=()
background quick "${quick[@]}"
bash scripts/setup-openstack.sh
background build "${build[@]}"
echo "== pytest tests, but for those"
rest=0
"${pytest[@]}" tests "${quick[@]/#/--ignore=}" "${build[@]/#/--ignore=}" || rest=$?
codes=()
for i in "${!pids[@]}"; do
  rc=0; wait "${pids[$i]}" || rc=$?; codes+=("$rc")
  echo "== pytest ${groups[$i]}"
  cat "${dirs[$i]}.log"
  if (( rc == 0 )); then rm -rf "${dirs[$i]}" "${dirs[$i]}.log"; fi
done
trap - EXIT
echo "== tests: exit ${rest} (register and launch), ${codes[1]} (${groups[1]}), ${codes[0]} (${groups[0]})"
(( rest == 0 && codes[0] == 0 && codes[1] == 0 ))
