#!/usr/bin/env bash
# Installs the real OpenStack services the tests publish to: Keystone and Glance
# from PyPI, with gunicorn to serve them, in a virtualenv of their own (kept out
# of Rain's: they pin their own versions of shared libraries). Idempotent.
# The tests start them per session (tests/support/openstack.py); nothing runs here.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="${RAIN_OPENSTACK_VENV:-$here/.venv-openstack}"
want="keystone>=30,<31 glance>=33,<34 gunicorn>=27,<28"
stamp="$venv/.rain-openstack-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/gunicorn" ]; then
  exit 0
fi
echo "setup: installing Keystone and Glance into $venv (once per machine)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC2086  # $want is a list of requirement specifiers
"$venv/bin/pip" install -q --disable-pip-version-check $want
echo "$want" > "$stamp"
