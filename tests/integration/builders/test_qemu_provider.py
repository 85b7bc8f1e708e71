"""The qemu provider with real QEMU VMs (TCG when KVM does not work here): what a user notices.

One VM boots for the module (a boot under TCG is the slow part) and serves the
SSH, host key, mirror, console and keep tests; the failure tests start VMs
that never get as far as sshd.
"""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import paramiko
import pytest
from support.builders import qemu_pids, write_builders_file  # the fixtures come through conftest.py

from rain.config import load_settings
from rain.errors import BuildError, Unauthorized, Unreachable
from rain.generate.builders.base import get_provider
from rain.generate.builders.machine import Machine
from rain.generate.builders.qemu import Accel, QemuProvider, wait_for_sshd
from rain.generate.mirror import host_apt_mirror
from rain.generate.recipe import OsFamily
from rain.host.qemu import kvm_works
from rain.host.ssh import MachineKeys

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ssh(machine: Machine, argv: list[str], timeout: float = 120) -> str:
    """Run argv on the machine over paramiko, trusting only the host key Rain gave it."""
    client = paramiko.SSHClient()
    client.get_host_keys().add(f"[{machine.host}]:{machine.port}", "ssh-ed25519",
                               paramiko.Ed25519Key(data=machine.keys.host.public_blob))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(machine.keys.client.private_openssh))
    client.connect(machine.host, machine.port, username="root", pkey=key, allow_agent=False,
                   look_for_keys=False, timeout=30)
    try:
        _, out, err = client.exec_command(shlex.join(argv), timeout=timeout)
        text = out.read().decode()
        assert out.channel.recv_exit_status() == 0, err.read().decode()
        return text
    finally:
        client.close()


@pytest.fixture(scope="module")
def vm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qemu-vm")


@pytest.fixture(scope="module")
def machine(qemu_bundle: tuple[str, Path], vm_dir: Path) -> Iterator[Machine]:
    """One booted builder VM (accel auto: the KVM probe decides), no repository needed."""
    builders = write_builders_file(vm_dir / "builders.yaml", qemu_bundle[0], disk_gib=10)  # the bundle has 8
    settings = load_settings(environ={"RAIN_DATA_DIR": str(vm_dir / "data"), "RAIN_CONFIG": str(vm_dir / "no.toml"),
                                      "RAIN_BUILDERS_FILE": str(builders)})
    provider = get_provider("qemu", settings)
    t0 = time.monotonic()
    m = provider.launch("test-vm", MachineKeys.generate("test-vm"), vm_dir / "work")
    print(f"qemu builder VM: sshd answered {time.monotonic() - t0:.1f}s after launch")
    yield m
    m.release()
    assert not qemu_pids(str(vm_dir)), "a qemu process outlived release()"


def test_launch_gives_a_vm_reachable_with_the_pinned_keys(machine: Machine, vm_dir: Path) -> None:
    assert machine.host == "127.0.0.1" and machine.user == "root"
    assert ssh(machine, ["cat", "/sys/class/dmi/id/sys_vendor"]).strip() == "QEMU"
    kernel = ssh(machine, ["uname", "-r"]).strip()
    assert kernel.endswith("-amd64")
    cpu = ssh(machine, ["cat", "/proc/cpuinfo"])
    assert "model name" in cpu
    # under TCG the guest drops the speculation defences (nothing speculates; they only slow it down)
    meltdown = ssh(machine, ["cat", "/sys/devices/system/cpu/vulnerabilities/meltdown"]).strip()
    qemu_argv = Path(f"/proc/{qemu_pids(str(vm_dir))[0]}/cmdline").read_bytes().split(b"\0")
    tcg = qemu_argv[qemu_argv.index(b"-accel") + 1] == b"tcg"
    assert (meltdown == "Vulnerable") == tcg, meltdown
    assert ssh(machine, ["id", "-u"]).strip() == "0"
    size_mib = int(ssh(machine, ["df", "-B1M", "--output=size", "/"]).split()[-1])
    assert size_mib > 9000, "the VM's root file system did not grow to qemu.disk_gib"
    # the tools the SSHBuilder drives are there
    ssh(machine, ["sh", "-c", "command -v mmdebstrap debootstrap dnf chroot mount tar zstd xargs mktemp"])


def test_the_console_log_shows_the_boot(machine: Machine) -> None:
    assert machine.console_log is not None and machine.console_log.is_file()
    text = machine.console_log.read_text(errors="replace")
    assert "sshd started" in text, text[-2000:]
    print("console:", *[line for line in text.splitlines() if line.startswith("rain-builder:")], sep="\n  ")


def test_the_host_mirror_is_reachable_from_the_vm(machine: Machine) -> None:
    mirror = host_apt_mirror(OsFamily("debian"))
    assert mirror, "this host has no Debian apt source (the builder image could not have been built either)"
    url = urlsplit(mirror)
    port = url.port or (443 if url.scheme == "https" else 80)
    ssh(machine, ["getent", "hosts", url.hostname or ""])
    ssh(machine, ["bash", "-c", f"exec 3<>/dev/tcp/{url.hostname}/{port}"], timeout=30)


def test_a_server_with_another_host_key_is_refused(machine: Machine) -> None:
    other = MachineKeys.generate("impostor")
    vm = types.SimpleNamespace(name="test-vm", port=machine.port, console=machine.console_log,
                               exited=lambda: None, qemu_log=lambda: "")
    with pytest.raises(Unauthorized, match="host key"):
        wait_for_sshd(vm, MachineKeys(client=machine.keys.client, host=other.host), timeout=30)


def test_the_kvm_probe_is_bounded_and_tcg_always_works(qemu_settings, tmp_path: Path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the probe's directory: this test's, not another run's
    provider = QemuProvider(qemu_settings(), None)
    bundle = provider.bundle()
    t0 = time.monotonic()
    works = kvm_works.__wrapped__(provider.qemu, str(bundle.kernel))
    assert time.monotonic() - t0 < 15
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert works is False
    assert provider.accel(bundle) == (Accel.KVM if works else Accel.TCG)
    assert QemuProvider(qemu_settings(accel="tcg"), None).accel(bundle) == Accel.TCG
    print(f"KVM probe: {'KVM works' if works else 'falls back to TCG'} ({time.monotonic() - t0:.1f}s)")
    assert not qemu_pids(f"{tmp_path}/rain-kvm-probe"), "the probe left qemu running"


def test_a_boot_timeout_is_one_line_and_leaves_only_the_console_log_it_names(qemu_settings, tmp_path: Path) -> None:
    provider = QemuProvider(qemu_settings(boot_timeout=3, accel="tcg"), None)
    with pytest.raises(Unreachable) as err:
        provider.launch("slow", MachineKeys.generate("slow"), tmp_path / "work")
    line = err.value.one_line()
    assert "\n" not in line and "within 3s" in line and "console log" in line
    assert not qemu_pids(str(tmp_path)), "qemu still runs after the boot timeout"
    assert not (tmp_path / "work" / "qemu").exists(), "the overlay and seed were left behind"
    named = Path(line.split("console log: ")[1].split(")")[0])
    assert named.is_file() and named.parent == provider.root / "consoles", "the log the error names is there"


def test_bad_settings_are_one_line_config_errors(qemu_settings) -> None:
    with pytest.raises(Exception) as err:
        QemuProvider(qemu_settings(accel="hvf"), None)
    assert "qemu.accel" in str(err.value) and "\n" not in str(err.value)


def test_a_missing_builder_image_without_repository_says_so(qemu_settings) -> None:
    provider = QemuProvider(qemu_settings(image="no-such-builder"), None)
    with pytest.raises(Exception, match="not prepared"):
        provider.launch("x", MachineKeys.generate("x"), Path("/nonexistent"))


_LAUNCHER = """
import sys, pathlib
from rain.config import load_settings
from rain.host.ssh import MachineKeys
from rain.generate.builders.qemu import QemuProvider
settings = load_settings(environ={"RAIN_DATA_DIR": sys.argv[1] + "/data", "RAIN_CONFIG": "/nonexistent",
                                  "RAIN_BUILDERS_FILE": sys.argv[2]})
QemuProvider(settings, None).launch("orphan", MachineKeys.generate("orphan"), pathlib.Path(sys.argv[1]) / "work")
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_a_killed_rain_leaves_no_qemu_and_no_files(qemu_bundle, tmp_path: Path, sig: signal.Signals) -> None:
    builders = write_builders_file(tmp_path / "builders.yaml", qemu_bundle[0], accel="tcg", boot_timeout=600)
    with open(tmp_path / "launcher.log", "wb") as out:  # a Ctrl-C'd launcher prints its traceback there
        rain = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(tmp_path), str(builders)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not qemu_pids(str(tmp_path)) and time.monotonic() < deadline:
        assert rain.poll() is None, (tmp_path / "launcher.log").read_text()
        time.sleep(0.2)
    assert qemu_pids(str(tmp_path)), "qemu did not start"
    time.sleep(2)
    rain.send_signal(sig)
    rain.wait(30)
    deadline = time.monotonic() + 20
    while (qemu_pids(str(tmp_path)) or (tmp_path / "work" / "qemu").exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not qemu_pids(str(tmp_path)), f"qemu outlived the Rain process ended by {sig.name}"
    assert not (tmp_path / "work" / "qemu").exists(), f"the overlay and seed outlived Rain ({sig.name})"


def test_keep_leaves_the_vm_running_and_says_how_to_reach_it(machine: Machine, vm_dir: Path) -> None:
    assert machine.keep is not None
    line = machine.keep()
    assert "\n" not in line and "ssh " in line and "kill " in line
    pid = int(line.split("kill ", 1)[1].split()[0])
    try:
        ssh_cmd = shlex.split(line.split(": ", 1)[1].split(";", 1)[0])
        out = subprocess.run([*ssh_cmd[:1], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                              *ssh_cmd[1:], "uname", "-n"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "rain-builder"
        key = Path(ssh_cmd[ssh_cmd.index("-i") + 1])
        assert key.stat().st_mode & 0o777 == 0o600
        machine.release()  # after keep: does not end the kept VM
        assert os.path.exists(f"/proc/{pid}")
    finally:
        os.kill(pid, signal.SIGKILL)
        kept = Path(line.rsplit("rm -r ", 1)[1].strip())
        subprocess.run(["rm", "-r", str(kept)], check=False)
    time.sleep(0.5)
    assert not qemu_pids(str(vm_dir))


def test_the_builder_uses_the_qemu_provider(rain_env, tmp_path: Path) -> None:
    """The qemu builder runs builds in VMs of a QemuProvider set up by the builders file the settings name:
    its limit caps the VMs at once, its cache holds the bundles, and it finds its image in this repository."""
    from rain.generate.builders.base import get_builder
    from rain.repository.connect import open_repository

    builders = write_builders_file(tmp_path / "builders.yaml", "0123456789ab", limit=3, memory=3072,
                                   cache_dir=str(tmp_path / "bundles"))
    settings = load_settings(environ={**rain_env, "RAIN_BUILDERS_FILE": str(builders)})
    repo = open_repository(settings)
    builder = get_builder("qemu", settings, repo)
    assert builder.name == "qemu" and not builder.local
    provider = builder.provider
    assert isinstance(provider, QemuProvider) and provider.repo is repo
    assert provider.settings.builders_path == builders
    assert (provider.limit, provider.conf.memory, provider.conf.image) == (3, 3072, "0123456789ab")
    assert provider.root == tmp_path / "bundles"


def test_a_qemu_that_cannot_start_is_a_build_error(qemu_settings, tmp_path: Path) -> None:
    provider = QemuProvider(qemu_settings(memory=1 << 30, accel="tcg"), None)  # 1 PiB of RAM
    with pytest.raises(BuildError, match="qemu .* exited"):
        provider.launch("huge", MachineKeys.generate("huge"), tmp_path / "work")
    assert not qemu_pids(str(tmp_path))


def test_a_missing_builder_image_is_built_uploaded_and_prepared_once(rain_env, tmp_path: Path) -> None:
    """No builder image in the repository: Rain builds it from its recipe (here generate's result
    cache in the test cache answers, as on a host that built it before), uploads it, prepares it."""
    from concurrent.futures import ThreadPoolExecutor

    from support.builders import cache_dir

    from rain.progress import Reporter
    from rain.repository.connect import open_repository
    from rain.repository.models import ImageQuery

    builders = tmp_path / "builders.yaml"
    builders.write_text(f"qemu: {{cache_dir: {tmp_path / 'bundles'}}}\n")
    settings = load_settings(environ={**rain_env, "RAIN_DATA_DIR": str(cache_dir() / "generate-data"),
                                      "RAIN_BUILDERS_FILE": str(builders)})
    repo = open_repository(settings)
    said: list[str] = []
    provider = QemuProvider(settings, repo)
    reporter = Reporter(lambda event, step, detail: said.append(f"{event} {step} {detail}"))
    image_id = provider.ensure_image(reporter)
    assert any("building the qemu builder image" in line for line in said)
    assert [i.id for i in repo.list(ImageQuery(name="rain-builder-debian"))] == [image_id]

    again = QemuProvider(settings, repo)  # a second build: found in the repository, not rebuilt
    assert again.ensure_image() == image_id
    with ThreadPoolExecutor(2) as pool:  # two builds starting at once prepare it once
        bundles = list(pool.map(lambda p: p.bundle(reporter), [provider, again]))
    assert bundles[0] == bundles[1] and bundles[0].image_id == image_id
    assert bundles[0].disk.stat().st_mode & 0o222 == 0, "the base disk must be read-only"
    assert sum("prepare the qemu builder disk" in line and line.startswith("done") for line in said) == 1
    assert [p.name for p in (tmp_path / "bundles").iterdir() if p.name.startswith(".prepare-")] == []
    assert len(repo.list(ImageQuery(name="rain-builder-debian"))) == 1


def _builder_archive(path: Path, kernel: bytes) -> Path:
    """A tar.zst with just what a boot bundle takes from a builder image: a kernel and its initrd."""
    root = path.with_name(path.name + "-root")
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-6.1.0-test").write_bytes(kernel)
    (root / "boot" / "initrd.img-6.1.0-test").write_bytes(b"initrd")
    subprocess.run(["tar", "-C", str(root), "--zstd", "-cf", str(path), "."], check=True)
    return path


def test_a_new_builder_image_removes_the_bundles_of_earlier_ones_no_vm_uses(qemu_settings, tmp_path: Path) -> None:
    import fcntl

    bundles = tmp_path / "bundles"
    provider = QemuProvider(qemu_settings(image="site-builder", cache_dir=str(bundles), disk_gib=2), None)
    old, busy, new = "01d000000001", "b0b000000002", "0e0000000003"
    for image_id in (old, busy):
        provider.prepare(image_id, archive=_builder_archive(tmp_path / f"{image_id}.tar.zst", image_id.encode()))
    assert not (bundles / old).exists(), "preparing a second image removed the first one's bundle"
    with open(bundles / f".{busy}.in-use.lock", "w") as running:  # what launch holds while a VM runs from it
        fcntl.flock(running, fcntl.LOCK_SH)
        bundle = provider.prepare(new, archive=_builder_archive(tmp_path / "new.tar.zst", b"new"))
        assert (bundles / busy / "bundle.json").is_file(), "a bundle a VM runs from stays"
    assert bundle.kernel.read_bytes() == b"new" and (bundles / "site-builder.id").read_text() == new + "\n"
    assert provider.prepare(new).directory == bundle.directory, "the current one is reused, not made again"
    assert provider.prune(keep=new) == [busy], "once its VM is gone, the next prune takes it"
    assert sorted(p.name for p in bundles.iterdir() if not p.name.startswith(".")) == [new, "site-builder.id"]
