"""`fg-image builder check` against the cloud SIMULATORS (their VMs are real sshd endpoints)."""

from __future__ import annotations

from typing import Any

import pytest
from support.builders import ONE_PASSWORD_ENV, BuildersFile
from support.cli import RECIPES

pytestmark = pytest.mark.integration
MINIMAL = str(RECIPES / "debian-bookworm-minimal.yaml")


def test_check_starts_a_machine_logs_in_and_deletes_it(fg: Any, opennebula_builders_file: BuildersFile,
                                                        opennebula_sim: Any) -> None:
    env = {"RAIN_BUILDERS_FILE": str(opennebula_builders_file.path), ONE_PASSWORD_ENV: "one-secret"}
    r = fg("builder", "check", "opennebula", env=env)
    assert r.returncode == 0, r.stderr
    assert "answered over SSH" in r.stdout and "Linux" in r.stdout
    assert [vm.state for vm in opennebula_sim.vms.values()] == [6], "the VM was terminated"


def test_check_with_a_wrong_password_is_one_line_and_leaves_no_vm(fg: Any, opennebula_builders_file: BuildersFile,
                                                                  opennebula_sim: Any) -> None:
    env = {"RAIN_BUILDERS_FILE": str(opennebula_builders_file.path), ONE_PASSWORD_ENV: "wrong"}
    r = fg("builder", "check", "opennebula", env=env)
    assert r.returncode == 5, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error:")
    assert not opennebula_sim.vms


@pytest.mark.parametrize("args, words", [
    (["builder", "check", "local"], "no machines"),
    (["builder", "check", "vmware"], "'vmware' is not one of: local, qemu, opennebula, openstack"),
    (["generate", MINIMAL, "--builder", "vmware"], "--builder 'vmware' is not one of: local, qemu, opennebula, "
                                                   "openstack"),
    (["generate", MINIMAL, "--on-error", "pause"], "--on-error 'pause' is not one of: remove, keep"),
])
def test_bad_builder_flags_are_one_line_usage_errors(fg: Any, args: list[str], words: str) -> None:
    r = fg(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and words in r.stderr


def test_a_broken_builders_file_is_named(fg: Any, tmp_path: Any) -> None:
    bad = tmp_path / "builders.yaml"
    bad.write_text("opennebula: {endpoint: http://127.0.0.1:9/RPC2, username: rain, password_env: P, "
                   "template_id: 1, colour: blue}\n")
    r = fg("generate", MINIMAL, "--builder", "opennebula", "--no-upload",
           env={"RAIN_BUILDERS_FILE": str(bad)})
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "colour" in errors[0]
