"""`fg-image generate` killed outright (SIGKILL: no chance to clean up) leaves nothing behind:
no mount, no work directory, no qemu process. Rain's watcher process (rain/host/reaper.py)
undoes what the build had registered."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.builders import qemu_pids
from support.cli import FG_IMAGE, RECIPES
from support.host import mounts_under

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _start(rain_env: dict[str, str], data: Path, *args: str,
           env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([str(FG_IMAGE), "generate", str(RECIPES / "debian-bookworm-minimal.yaml"), "--no-upload",
                             "--no-cache", *args], env={**rain_env, "RAIN_DATA_DIR": str(data), **(env or {})},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc: subprocess.Popen[str], step: str, timeout: float = 600) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if step in line:
            return
        assert time.monotonic() < deadline, f"no {step!r} within {timeout}s: {''.join(seen[-5:])}"
    raise AssertionError(f"fg-image ended before {step!r}: {''.join(seen[-5:])}")


def _gone(check: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def test_a_sigkilled_local_build_leaves_no_mount_and_no_work_dir(rain_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = _start(rain_env, data)
    _wait_for_step(proc, "packages")  # the root is mounted (overlay, /proc, /sys, /dev) by now
    work = data / "work"
    assert _gone(lambda: mounts_under(work) != [], 60), "expected the build's mounts while it runs"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _gone(lambda: mounts_under(data) == []), f"mounts left: {mounts_under(data)}"
    assert _gone(lambda: not any(work.iterdir())), f"work dirs left: {list(work.iterdir())}"


def test_a_sigkilled_qemu_build_leaves_no_qemu_and_no_files(rain_env: dict[str, str], tmp_path: Path,
                                                           qemu_bundle: tuple[str, Path]) -> None:
    data = tmp_path / "data"
    proc = _start(rain_env, data, "--builder", "qemu", env={"RAIN_BUILDERS_FILE": str(qemu_bundle[1])})
    _wait_for_step(proc, "base system")  # the VM is up and mmdebstrap runs inside it
    marker = str(data / "work")
    assert qemu_pids(marker), "expected the build's qemu while it runs"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _gone(lambda: qemu_pids(marker) == []), "qemu outlived fg-image"
    assert _gone(lambda: not any((data / "work").iterdir())), f"files left: {list((data / 'work').iterdir())}"
