"""The builder contract, run the same way over every builder: local (a chroot here), qemu (a real
QEMU VM), and opennebula / openstack (their SIMULATORS, OpenNebula and Nova, whose VMs are real sshd endpoints).

One test per builder walks the whole contract on one machine (a VM boot is the slow part):
start → push a tiny busybox image root → run argv inside the image (no shell anywhere) →
put/get/exists resolving inside the image → a failing command is a one-line BuildError →
fetch the tree back → stop leaves no mount, no machine and no work files behind. File capabilities
(`getcap`) survive both ways: one set here before the push, one set inside the image on the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rain.errors import BuildError
from rain.generate.builders.base import BuildSpec, get_builder
from rain.generate.layers import mounted_under

pytestmark = pytest.mark.integration
TOOLS = ("sh", "cat", "echo", "install", "stat", "rm", "ls", "mkdir", "printf", "false", "id", "cp", "test",
         "setcap", "getcap")


def tiny_root(root: Path) -> None:
    """A minimal image: this host's own tools with the libraries they load, plus passwd/group."""
    (root / "usr" / "bin").mkdir(parents=True)
    os.symlink("usr/bin", root / "bin")
    needed: set[str] = set()
    for tool in TOOLS:
        path = os.path.realpath(shutil.which(tool) or "")
        shutil.copy2(path, root / "usr" / "bin" / tool)
        ldd = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        needed.update(w for line in ldd.splitlines() for w in line.split() if w.startswith("/"))
    for lib in needed:
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "tmp").mkdir(mode=0o1777)
    os.symlink("/etc/passwd", root / "etc" / "abs-link")  # absolute: must resolve inside the image
    os.symlink("/nowhere", root / "etc" / "dangling")
    os.chmod(root / "usr" / "bin" / "id", 0o755)  # copy2 keeps the host's modes
    subprocess.run(["setcap", "cap_net_raw=ep", str(root / "usr" / "bin" / "id")], check=True)


def getcap(path: Path) -> str:
    """The real getcap's answer for one file, without its path."""
    out = subprocess.run(["getcap", str(path)], capture_output=True, text=True, check=True).stdout
    return out.strip().removeprefix(str(path)).strip()


@pytest.fixture(params=["local", "qemu", "opennebula", "openstack"])
def builder_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any, Any]]:
    name = request.param
    if name == "local":
        yield name, None, None
        return
    settings, repo = request.getfixturevalue(f"{name}_builder_env")
    yield name, settings, repo


def test_builder_contract(builder_env: tuple[str, Any, Any], tmp_path: Path) -> None:
    name, settings, repo = builder_env
    builder = get_builder(name, settings, repo)
    workdir = tmp_path / "work"
    workdir.mkdir()
    spec = BuildSpec(name="contract", workdir=workdir, debian=True, log_file=workdir / "build.log")
    handle = builder.start(spec)
    try:
        assert builder.local == (name == "local")
        tiny_root(handle.root)
        builder.push(handle)
        if not builder.local:
            shutil.rmtree(handle.root)
            handle.root.mkdir()

        # argv inside the image, byte for byte: no shell on this host or on the machine
        tricky = ["a;b", "$(touch /tmp/pwned)", "*", "x y", "'q'", "`id`", "--", ""]
        out = builder.run(handle, ["printf", "[%s]", *tricky]).output
        assert out == "".join(f"[{t}]" for t in tricky)
        assert not builder.exists(handle, "/tmp/pwned")

        # file capabilities: the pushed one arrived; one made on the machine comes back with fetch
        assert builder.run(handle, ["getcap", "/usr/bin/id"]).output == "/usr/bin/id cap_net_raw=ep"
        builder.run(handle, ["install", "-m", "0755", "/usr/bin/false", "/usr/bin/made-here"])
        builder.run(handle, ["setcap", "cap_net_bind_service=ep", "/usr/bin/made-here"])

        # commands see the image root, not the builder's own system
        assert builder.run(handle, ["cat", "/etc/passwd"]).output == "root:x:0:0:root:/root:/bin/sh"
        env_out = builder.run(handle, ["sh", "-c", 'printf "%s" "$RAIN_T"'], env={"RAIN_T": "v a l"}).output
        assert env_out == "v a l"

        # put/get: exact bytes, mode and owner applied, links resolved inside the image
        data = bytes(range(256)) * 64
        builder.put(handle, data, "/opt/deep/blob.bin", mode="0640")
        assert builder.get(handle, "/opt/deep/blob.bin") == data
        assert builder.run(handle, ["stat", "-c", "%a %u", "/opt/deep/blob.bin"]).output == "640 0"
        assert builder.get(handle, "/etc/abs-link").startswith(b"root:x:0:0")
        assert builder.exists(handle, "/etc/passwd") and builder.exists(handle, "/etc/dangling")
        assert not builder.exists(handle, "/etc/absent")

        # a failing command: one line naming it and its exit code
        with pytest.raises(BuildError) as e:
            builder.run(handle, ["sh", "-c", "echo broken-step >&2; exit 7"], what="step 3")
        assert "step 3" in e.value.message and "exit 7" in e.value.message and "broken-step" in e.value.message
        assert "\n" not in e.value.one_line()

        # the bootstrap side runs outside the image, in the builder's own system
        assert builder.outside(handle, ["test", "-x", f"{handle.inner_root}/usr/bin/cat"], check=False).returncode == 0

        # the finished tree comes back to this host, minus the chroot set-up
        builder.fetch(handle)
        assert (handle.root / "opt/deep/blob.bin").read_bytes() == data
        assert (handle.root / "bin").is_symlink() and (handle.root / "usr/bin/sh").is_file()
        assert getcap(handle.root / "usr/bin/id") == "cap_net_raw=ep"
        assert getcap(handle.root / "usr/bin/made-here") == "cap_net_bind_service=ep"
        assert not (handle.root / "dev/null").exists(), "the build's /dev must not be in the image"
        if name == "qemu":  # a VM on this host: both trees went on its transfer disks, not through SSH
            assert handle.remote is not None and handle.remote.machine.disks is not None
            disks = handle.remote.machine.disks
            for disk in (disks.inbound, disks.outbound):
                with tarfile.open(disk) as tar:
                    assert "./usr/bin/id" in tar.getnames()
            with tarfile.open(disks.outbound) as tar:
                assert "./usr/bin/made-here" in tar.getnames()
    finally:
        builder.stop(handle)
    assert not mounted_under(workdir), "mounts left behind"
    builder.stop(handle)  # idempotent
    if name == "qemu":
        left = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout
        assert not left.strip(), f"qemu still running: {left}"


def test_machine_dying_mid_command_is_one_line_error(opennebula_builder_env: tuple[Any, Any],
                                                     opennebula_sim: Any, tmp_path: Path) -> None:
    """A builder VM that dies while a command runs on it (host crash, OOM, a cloud deleting it) ends the
    build with a one-line error at once: before, the read loop spun on the dead link forever."""
    settings, repo = opennebula_builder_env
    builder = get_builder("opennebula", settings, repo)
    workdir = tmp_path / "work"
    workdir.mkdir()
    handle = builder.start(BuildSpec(name="dies", workdir=workdir, debian=True))
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            builder.outside(handle, ["sleep", "120"], what="the long step")
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    try:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        deadline = time.monotonic() + 20
        while not subprocess.run(["pgrep", "-f", "^sleep 120$"], capture_output=True).stdout:
            assert time.monotonic() < deadline, "the command never started on the builder"
            time.sleep(0.1)
        opennebula_sim.machines[-1].stop()  # power cut: its sshd and the command go
        worker.join(20)
        assert not worker.is_alive(), "the build hung on a machine that is gone"
        assert isinstance(outcome[0], BuildError), outcome
        message = outcome[0].one_line()
        assert "the long step" in message and "ended without an exit status" in message and "\n" not in message
    finally:
        builder.stop(handle, failed=True)
        # a real VM's disk goes with it; a simulated one's is this host's /var/tmp, which stop() could not
        # reach over SSH any more: the test removes it, so no later test finds a build's files left
        if handle.remote is not None and handle.remote.workspace.startswith("/var/tmp/rain-build."):
            shutil.rmtree(handle.remote.workspace, ignore_errors=True)
