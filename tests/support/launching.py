"""What the cloud launch tests share: the CLI's environment for the test sites, and reading its answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PASSWORDS = ("RAIN_TEST_ONE_PASSWORD", "RAIN_TEST_OS_PASSWORD", "RAIN_TEST_AWS_KEY", "RAIN_TEST_AWS_SECRET")


def cli_env(sites: Any) -> dict[str, str]:
    """fg-image's environment for the `sites` targets file (adapt in a chroot: these tests are about launch)."""
    return {"RAIN_TARGETS_FILE": str(sites.path), "RAIN_ADAPT_BUILDER": "local",
            **{k: os.environ[k] for k in PASSWORDS}}


def instances(fg: Callable[..., Any], env: dict[str, str]) -> list[dict[str, Any]]:
    listed = fg("instances", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def registrations(fg: Callable[..., Any], env: dict[str, str], image_id: str) -> list[dict[str, Any]]:
    shown = fg("show", image_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    return list(json.loads(shown.stdout)["registrations"])


_CLAIM = """
import sys
from pathlib import Path
from rain.errors import QuotaExceeded
from rain.launch.cap import claimed
try:
    with claimed(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), lambda: 0):
        print("claimed", flush=True)
        sys.stdin.readline()
except QuotaExceeded as e:
    print("refused", e.message, flush=True)
"""


def claiming(claims: Path, count: int, cap: int) -> subprocess.Popen[str]:
    """A process that claims `count` machines as a launch does before it starts them (rain/launch/cap.py),
    and holds the claim until a line arrives on its stdin; its first line says "claimed" or "refused …"."""
    return subprocess.Popen([sys.executable, "-c", _CLAIM, str(claims), str(count), str(cap)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
