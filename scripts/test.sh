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
# the netbooted nodes) as "front", and the generate stage, its builders and the repository's e2e tests
# as "build". The tests that start no VM and build nothing (unit, the repository service and its
# commands, the web catalog: about 15 minutes, mostly waiting on the database) run as "quick" from the
# start, while Keystone and Glance install. Each run has its own temp dir; its output is shown as it
# comes, each line led by the run's name (grep '^\[build\]' for one), and also kept in a log beside
# that temp dir. The groups share only the test cache (tests/support/built_images.py builds there one
# at a time, under a lock) and check for leftovers under their own directories.
#
# A run still going when the budget is spent (RAIN_TEST_BUDGET seconds after this script started;
# CI stops everything at 90 minutes) has every thread's stack printed, then is stopped and fails the
# suite: a hang shows where it hung instead of cutting the whole log off.
quick=(tests/unit tests/integration/repository tests/integration/web)
build=(tests/e2e/generate tests/e2e/repository tests/integration/builders tests/integration/generate
       tests/integration/image)
budget=${RAIN_TEST_BUDGET:-4500}
pids=(); dirs=(); names=()
# in a session of its own (setsid), so that if this script stops early (set-up failed, Ctrl-C) the trap
# ends that pytest and what it started (services, database servers, VMs), not pytest alone
trap 'for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done' EXIT
run() {  # NAME TESTS...: a pytest run in the background, its temp dir, log and stack file named by NAME
  local name=$1; shift
  local dir; dir=$(mktemp -d "$tmp/rain-tests-$name.XXXXXX")
  echo "== [$name] pytest $*"
  TEST_STACKS_FILE="$dir.stacks" setsid "${pytest[@]}" --basetemp="$dir/base" "$@" \
    > >(tee "$dir.log" | sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!"); dirs+=("$dir"); names+=("$name")
}
running() { kill -0 "$1" 2>/dev/null; }
run quick "${quick[@]}"
bash scripts/setup-openstack.sh
run build "${build[@]}"
run front tests "${quick[@]/#/--ignore=}" "${build[@]/#/--ignore=}"
while :; do
  alive=0
  for p in "${pids[@]}"; do if running "$p"; then alive=1; fi; done
  (( alive )) || break
  if (( SECONDS > budget )); then
    for i in "${!pids[@]}"; do
      p=${pids[$i]}
      running "$p" || continue
      echo "== [${names[$i]}] still running after ${SECONDS}s (RAIN_TEST_BUDGET=${budget}): its processes and stacks, then Ctrl-C"
      ps -o pid,stat,etime,wchan:24,args -s "$p" || true
      kill -USR1 "$p" 2>/dev/null || true
      sleep 5
      sed "s/^/[${names[$i]}] /" "${dirs[$i]}.stacks" 2>/dev/null || true
      kill -INT "$p" 2>/dev/null || true  # as Ctrl-C: pytest tears its fixtures down (VMs, servers)
    done
    for _ in $(seq 60); do
      alive=0
      for p in "${pids[@]}"; do if running "$p"; then alive=1; fi; done
      (( alive )) || break
      sleep 1
    done
    for i in "${!pids[@]}"; do  # and what it started in sessions of their own (database servers, VMs)
      kill -KILL -- -"${pids[$i]}" 2>/dev/null || true
      pkill -KILL -f -- "${dirs[$i]}/" 2>/dev/null || true
    done
    break
  fi
  sleep 5
done
codes=()
for i in "${!pids[@]}"; do
  rc=0; wait "${pids[$i]}" || rc=$?; codes+=("$rc")
  if (( rc == 0 )); then rm -rf "${dirs[$i]}" "${dirs[$i]}.log" "${dirs[$i]}.stacks"; fi
done
trap - EXIT
sleep 1  # the last lines through sed
summary="== tests:"; failed=0
for i in "${!pids[@]}"; do
  summary+=" ${names[$i]} exit ${codes[$i]};"
  if (( codes[i] != 0 )); then failed=1; summary+=" (log ${dirs[$i]}.log)"; fi
done
echo "$summary"
(( failed == 0 ))
