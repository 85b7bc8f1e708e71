"""A boot test that fails publishes nothing and leaves nothing behind (issue #10, acceptance 4), driven by
the hpc target's real boot test (QEMU, TCG) on the Debian image the other register e2e tests use (session
fixture, built once and cached). `--output` guarded by a passing boot test: test_register_cloud_e2e.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_register_debian_e2e import env_for, upload

from rain.errors import ExitCode

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line contains `text` (the boot log path is in QEMU's -serial)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(pid))
    return found


def test_a_boot_test_that_times_out_publishes_and_records_nothing(fg, sites, debian_tarball, tmp_path):
    tmp = tmp_path / "tmp"  # the command's own TMPDIR: other tests' registers may run beside this one
    tmp.mkdir()
    env = {**env_for(sites), "TMPDIR": str(tmp)}
    image_id = upload(fg, debian_tarball, env)
    result = fg("register", image_id, "--target", "hpc", "--boot-test", "--boot-timeout", "3", env=env,
                timeout=900)
    assert result.returncode == ExitCode.TARGET, result.stderr
    log = tmp_path / "rain-data" / "boot-logs" / f"{image_id}-hpc.log"
    error = result.stderr.strip().splitlines()[-1]
    assert "boot test timed out after 3s" in error and f"console log: {log}" in error, result.stderr
    assert "→ publish" not in result.stderr
    assert log.is_file()  # kept for the user to read
    assert processes_naming(str(log)) == []  # no QEMU left running
    assert os.listdir(tmp) == []  # no rain-register-* work directory, no temporary file
    assert sites["hpc"].published() == 0
    shown = json.loads(fg("show", image_id, "--json", env=env).stdout)
    assert shown["registrations"] == [] and shown["derived"] == []
    assert [i["id"] for i in json.loads(fg("list", "--json", env=env).stdout)] == [image_id]
