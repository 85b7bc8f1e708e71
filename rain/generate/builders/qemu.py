"""QemuProvider: builder VMs on this host with qemu-system-x86_64 (KVM if it works, else TCG).

The builder VM boots a repository image (data/debian-builder.yaml, shipped in the
package beside data/chroot.sh; built and uploaded by Rain itself the first time) prepared once into a *boot
bundle* under DATA_DIR/builders/qemu/<image id>/: a read-only sparse ext4 disk
made with `mkfs.ext4 -d` plus the image's kernel and initrd. Each machine gets a
qcow2 overlay over that disk, a seed disk (a plain tar: its SSH host key and
root's authorized key), two transfer disks (image trees go in and come back as plain
tar streams on them, not through SSH: see machine.DiskChannel) and a port on
127.0.0.1 forwarded to its sshd; nothing else listens. The image's own init
(data/files/builder-init) reads the seed and starts sshd, so a boot takes seconds
under KVM and ~20 s under TCG.

qemu runs in its own session and is tracked by the reaper, so it dies with
Rain even when Rain is SIGKILLed; `release` kills it and removes its files.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field

from rain.config import Settings
from rain.errors import BuildError, NotFound
from rain.generate.builders import launch
from rain.generate.builders.machine import DiskChannel, Machine
from rain.generate.builders.settings import ProviderSettings, provider_settings
from rain.generate.layers import remove_tree
from rain.host import command, reaper
from rain.host.qemu import TCG_CPU, kvm_works
from rain.host.ssh import MachineKeys
from rain.progress import Reporter
from rain.repository.base import Repository
from rain.waiting import Deadline

log = logging.getLogger(__name__)

TCG_KERNEL_ARGS = "mitigations=off"
"""An emulated CPU does not speculate, so the guest kernel's Meltdown/Spectre defences guard nothing there;
they cost a page-table switch on every system call, which TCG pays as a TLB flush (disk writes 2.7x and
dpkg 1.6x faster without them here). Under KVM the guest keeps its defaults."""

INIT = "/usr/lib/rain/builder-init"
_ID_LEN = 12
def builder_recipe() -> Path:
    """The builder image's recipe shipped in the package: data/debian-builder.yaml, its files in data/files/."""
    return Path(str(resources.files("rain.generate.builders") / "data" / "debian-builder.yaml"))


class Accel(StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class QemuSettings(ProviderSettings):
    memory: int = Field(2048, ge=256)
    """MiB of RAM per builder VM."""
    cpus: int = Field(2, ge=1)
    accel: Accel = Accel.AUTO
    """auto: KVM if a quick probe boots, else TCG (slow but always there)."""
    image: str = "rain-builder-debian"
    """Repository image (name or id, tar.zst) the builder VM boots; built from `recipe` if missing."""
    recipe: Path | None = None
    """Recipe of the builder image; default the one shipped with Rain (builder_recipe())."""
    cpu: str | None = None
    """qemu's -cpu model; default: host under KVM, Nehalem under TCG (see TCG_CPU)."""
    disk_gib: int = Field(8, ge=2)
    """Size of each VM's disk (sparse: only what the build writes takes space; never below the image's)."""
    cache_dir: Path | None = None
    """Where prepared boot bundles are kept; default DATA_DIR/builders/qemu."""
    boot_timeout: float = 300.0


@dataclass(frozen=True)
class BootBundle:
    image_id: str
    directory: Path
    disk: Path
    kernel: Path
    initrd: Path


class QemuProvider:
    name = "qemu"

    def __init__(self, settings: Settings, repo: Repository | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.conf: QemuSettings = provider_settings(settings, "qemu", QemuSettings)
        self.limit = self.conf.limit
        self.qemu = command.need("qemu-system-x86_64")
        for tool in ("qemu-img", "mkfs.ext4"):
            command.need(tool)
        self.root = (self.conf.cache_dir or settings.data_path / "builders" / "qemu").expanduser()
        self._bundle: BootBundle | None = None
        self._lock = threading.Lock()

    # -- the builder image ------------------------------------------------

    def ensure_image(self, reporter: Reporter | None = None, rebuild: bool = False) -> str:
        """The id of the builder image in the repository, built and uploaded first if missing."""
        reporter = reporter or Reporter()
        if not rebuild:
            found = self._find_image()
            if found:
                return found
        if self.repo is None:
            raise NotFound(f"qemu builder image {self.conf.image} is not prepared on this host",
                           hint="configure a repository so Rain can fetch or build it")
        from rain.generate.build import BuildOptions, generate
        from rain.generate.loader import load_recipe

        recipe = self.conf.recipe or builder_recipe()
        sets: dict[str, Any] = {"formats": ["tar.zst"]}
        if not _is_id(self.conf.image):
            sets["upload.name"] = self.conf.image
        reporter.info(f"building the qemu builder image from {recipe} (once; takes a few minutes)")
        with reporter.step("build the qemu builder image"):
            result = generate(load_recipe(recipe, sets), self.settings,
                              BuildOptions(upload=True, builder="local", use_cache=not rebuild),
                              reporter, self.repo)
        return result.image_ids["tar.zst"]

    def _find_image(self) -> str | None:
        """An id names fixed content: a bundle prepared from it is used as is. A name is looked up
        in the repository (the newest image wins), or without one, in what was prepared last."""
        wanted = self.conf.image
        if _is_id(wanted) and (self.root / wanted / "bundle.json").is_file():
            return wanted
        if self.repo is None:
            pointer = self.root / f"{wanted}.id"
            image_id = pointer.read_text().strip() if pointer.is_file() else ""
            return image_id if image_id and (self.root / image_id / "bundle.json").is_file() else None
        from rain.repository.models import ImageQuery, Status

        if _is_id(wanted):
            try:
                return str(self.repo.show(wanted).id)
            except NotFound:
                raise NotFound(f"qemu builder image {wanted} does not exist or you may not read it",
                               hint="set qemu.image in the builders file to a name (Rain builds a missing "
                                    "one) or to an image id from `fg-image list`") from None
        images = self.repo.list(ImageQuery(name=wanted, format="tar.zst", status=Status.AVAILABLE, limit=1))
        return images[0].id if images else None

    def prepare(self, image_id: str, reporter: Reporter | None = None,
                archive: Path | None = None) -> BootBundle:
        """The image's boot bundle on this host, made once (atomically, under a lock) from the
        repository image, or from `archive`, a local copy of it (tar.zst)."""
        reporter = reporter or Reporter()
        final = self.root / image_id
        self.root.mkdir(parents=True, exist_ok=True)
        made = False
        with _flock(self.root / f".{image_id}.lock"):
            if not (final / "bundle.json").is_file():
                if self.repo is None and archive is None:
                    raise NotFound(f"qemu builder image {image_id} is not prepared on this host",
                                   hint="configure a repository so Rain can fetch it")
                with reporter.step("prepare the qemu builder disk"):
                    self._make_bundle(image_id, final, archive)
                made = True
            if not _is_id(self.conf.image):
                (self.root / f"{self.conf.image}.id").write_text(image_id + "\n")
        if made:
            for gone in self.prune(keep=image_id):
                reporter.info(f"removed the boot bundle of the earlier builder image {gone}")
        meta = json.loads((final / "bundle.json").read_text())
        return BootBundle(image_id, final, final / "disk.raw", final / meta["kernel"], final / meta["initrd"])

    def _make_bundle(self, image_id: str, final: Path, archive: Path | None) -> None:
        from rain.generate.bootstrap.clone import safe_unpack

        tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=self.root))
        reaper.track_path(tmp)
        try:
            if archive is None:
                assert self.repo is not None  # prepare refused to go on without one or the other
                archive = tmp / "image.tar.zst"
                with open(archive, "wb") as f:
                    self.repo.get(image_id, f)
            root = tmp / "root"
            root.mkdir()
            safe_unpack(archive, root)
            (tmp / "image.tar.zst").unlink(missing_ok=True)
            kernel, initrd = _boot_files(root, image_id)
            shutil.copyfile(kernel, tmp / kernel.name)
            shutil.copyfile(initrd, tmp / initrd.name)
            command.run([command.need("mkfs.ext4"), "-q", "-F", "-L", "rain-builder", "-d", str(root),
                         str(tmp / "disk.raw"), f"{self.conf.disk_gib}G"], what="making the builder disk")
            remove_tree(root)
            (tmp / "disk.raw").chmod(0o444)  # only ever a backing file
            (tmp / "bundle.json").write_text(json.dumps({"image": image_id, "kernel": kernel.name,
                                                         "initrd": initrd.name}) + "\n")
            if final.exists():
                remove_tree(final)
            os.rename(tmp, final)
        except BaseException:
            remove_tree(tmp)
            raise
        finally:
            reaper.untrack_path(tmp)

    def reap(self) -> list[str]:
        """Nothing to do: Rain's watcher (host/reaper.py) kills the VMs of a killed fg-image at once."""
        return []

    def prune(self, keep: str) -> list[str]:
        """Remove the boot bundles (about 1 GB each) of every other builder image no VM runs from now
        (a launching or running VM holds its bundle's in-use lock shared); returns their image ids."""
        gone = []
        for d in sorted(self.root.iterdir()):
            if not (_is_id(d.name) and d.name != keep and (d / "bundle.json").is_file()):
                continue
            with open(self.root / f".{d.name}.lock", "w") as making, \
                    open(self.root / f".{d.name}.in-use.lock", "w") as in_use:
                try:
                    fcntl.flock(making, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(in_use, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                (d / "bundle.json").unlink()  # first: a half-removed bundle is never taken for a ready one
                remove_tree(d)
            gone.append(d.name)
        return gone

    def bundle(self, reporter: Reporter | None = None) -> BootBundle:
        with self._lock:
            if self._bundle is None:
                self._bundle = self.prepare(self.ensure_image(reporter), reporter)
            return self._bundle

    # -- machines ---------------------------------------------------------

    def accel(self, bundle: BootBundle) -> Accel:
        if self.conf.accel != Accel.AUTO:
            return self.conf.accel
        return Accel.KVM if kvm_works(self.qemu, str(bundle.kernel)) else Accel.TCG

    def launch(self, build_name: str, keys: MachineKeys, workdir: Path, reporter: Reporter | None = None) -> Machine:
        bundle = self.bundle(reporter)
        accel = self.accel(bundle)
        name = "rain-" + re.sub(r"[^A-Za-z0-9._-]", "-", build_name[:40]) + "-" + os.urandom(3).hex()
        files = workdir / "qemu"
        files.mkdir(parents=True, exist_ok=True)
        # see prune: held until the VM is gone; its own file, so prepare's lock never waits for a running VM
        in_use = open(self.root / f".{bundle.image_id}.in-use.lock", "w")
        fcntl.flock(in_use, fcntl.LOCK_SH)
        with ExitStack() as undo:
            undo.callback(in_use.close)
            reaper.track_path(files)
            undo.callback(reaper.untrack_path, files)
            undo.callback(shutil.rmtree, files, ignore_errors=True)
            overlay = files / "disk.qcow2"
            command.run([command.need("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "raw",
                         "-b", str(bundle.disk), str(overlay),
                         str(max(self.conf.disk_gib << 30, bundle.disk.stat().st_size))],
                        what="creating the VM disk")  # larger than the base: the VM's init grows its ext4
            _write_seed(files / "seed.tar", keys)
            disks = _disk_channel(files, max(self.conf.disk_gib << 30, bundle.disk.stat().st_size))
            vm = _Vm(name, files, accel, self._console(name))
            undo.callback(vm.kill)
            vm.start(self._argv(name, bundle, accel, files, vm.console, overlay, disks))
            wait_for_sshd(vm, keys, self.conf.boot_timeout)  # a failed boot's console log stays, named
            undo.pop_all()
        log.info("builder VM %s (%s) answers on 127.0.0.1:%d", name, accel, vm.port)

        def release() -> None:
            vm.kill()
            vm.console.unlink(missing_ok=True)
            in_use.close()
            shutil.rmtree(files, ignore_errors=True)
            reaper.untrack_path(files)

        return Machine(name=name, host="127.0.0.1", port=vm.port, keys=keys, console_log=vm.console,
                       release=release, keep=lambda: self._keep(vm, keys, files), disks=disks)

    def _console(self, name: str, keep: int = 20) -> Path:
        """Where a VM's console log goes: outside its work files, so the log of a VM that did not boot (or
        was kept) outlives it for the error message that names it; a released VM's goes. The newest
        `keep` are kept."""
        consoles = self.root / "consoles"
        consoles.mkdir(parents=True, exist_ok=True)
        old = sorted(consoles.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)[keep:]
        for stale in old:
            stale.unlink(missing_ok=True)
        return consoles / f"{name}.log"

    def _argv(self, name: str, bundle: BootBundle, accel: Accel, files: Path, console: Path, overlay: Path,
              disks: DiskChannel) -> list[str]:
        return [
            self.qemu, "-nodefaults", "-no-user-config", "-name", name,
            "-accel", accel.value, "-cpu", self.conf.cpu or ("host" if accel == Accel.KVM else TCG_CPU),
            "-smp", str(self.conf.cpus), "-m", str(self.conf.memory),
            "-display", "none", "-monitor", "none",
            "-chardev", f"file,id=console,path={_opt(console)}", "-serial", "chardev:console",
            "-kernel", str(bundle.kernel), "-initrd", str(bundle.initrd),
            "-append", f"console=ttyS0 root=/dev/vda rootfstype=ext4 ro init={INIT} panic=-1 quiet"
                       + ("" if accel == Accel.KVM else f" {TCG_KERNEL_ARGS}"),
            "-drive", f"file={_opt(overlay)},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            "-drive", f"file={_opt(files / 'seed.tar')},if=virtio,format=raw,readonly=on",
            # /dev/vdc and /dev/vdd: the trees to and from the VM, /dev/vde: the base (DiskChannel), in this order
            "-drive", f"file={_opt(disks.inbound)},if=virtio,format=raw,readonly=on",
            "-drive", f"file={_opt(disks.outbound)},if=virtio,format=raw,cache=unsafe",
            *(["-drive", f"file={_opt(disks.base)},if=virtio,format=raw,readonly=on"] if disks.base else []),
            "-device", "virtio-net-pci,netdev=net0", "-no-reboot",
            # qemu runs as root and the guest runs recipe commands: no exec, setuid or obsolete calls
            "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ]

    def _keep(self, vm: _Vm, keys: MachineKeys, files: Path) -> str:
        """Leave the VM running after Rain exits; its files move out of the caller's workdir."""
        kept = self.root / "kept" / vm.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(files, kept)  # qemu keeps its open files; the workdir is removed by the caller
        except OSError:
            kept.mkdir()
        reaper.untrack_path(files)
        if vm.proc is not None:
            reaper.untrack_pid(vm.proc.pid)
            vm.proc = None  # no longer ours to kill
        ssh = launch.kept_login(kept, "127.0.0.1", vm.port, keys)
        return (f"qemu VM {vm.name} left running: {ssh}; console log {vm.console}; "
                f"stop it with: kill {vm.pid} && rm -r {kept}")


class _Vm:
    """One qemu process: started in its own session, tracked by the reaper, killed idempotently."""

    def __init__(self, name: str, files: Path, accel: Accel, console: Path) -> None:
        self.name, self.files, self.accel, self.console = name, files, accel, console
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.port = 0

    def start(self, argv: list[str], tries: int = 3) -> None:
        for attempt in range(tries):
            self.port = _free_port()
            net = f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22"
            with open(self.files / "qemu.log", "wb") as out:
                self.proc = subprocess.Popen([*argv, "-netdev", net], stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            self.pid = self.proc.pid
            reaper.track_pid(self.pid)
            time.sleep(0.3)
            if self.proc.poll() is None or "host forwarding" not in self.qemu_log() or attempt == tries - 1:
                return
            self.kill()  # someone took the port in between: another one

    def qemu_log(self) -> str:
        try:
            return (self.files / "qemu.log").read_text(errors="replace").strip()
        except OSError:
            return ""

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # a disposable VM: nothing to shut down cleanly
            except ProcessLookupError:
                pass
        proc.wait()
        reaper.untrack_pid(proc.pid)


def wait_for_sshd(vm: Any, keys: MachineKeys, timeout: float, host: str = "127.0.0.1") -> None:
    """launch.wait_for_sshd for a qemu VM: fails at once if qemu exits; messages name the console log."""
    def alive() -> None:
        rc = vm.exited()
        if rc is not None:
            tail = (vm.qemu_log().splitlines() or ["(no output)"])[-1]
            raise BuildError(f"qemu for {vm.name} exited with {rc} before sshd answered: {tail} "
                             f"(console log: {vm.console})", hint="read the console log")

    launch.wait_for_sshd(f"builder VM {vm.name}", host, vm.port, keys, Deadline.after(timeout),
                         alive=alive, detail=f"console log: {vm.console}")


def _boot_files(root: Path, image_id: str) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    for kernel in reversed(kernels):
        initrd = root / "boot" / ("initrd.img-" + kernel.name.removeprefix("vmlinuz-"))
        if initrd.is_file() and not initrd.is_symlink() and not kernel.is_symlink():
            return kernel, initrd
    raise BuildError(f"builder image {image_id} has no /boot/vmlinuz-* with its initrd.img-*",
                     hint=f"its recipe must install linux-image-amd64 (see {builder_recipe()})")


def _disk_channel(files: Path, size: int) -> DiskChannel:
    """The VM's transfer disks: sparse files, so only what a transfer writes takes space."""
    paths = files / "inbound.raw", files / "outbound.raw", files / "base.raw"
    for p in paths:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    return DiskChannel(paths[0], "/dev/vdc", paths[1], "/dev/vdd", size, paths[2], "/dev/vde")


def _write_seed(path: Path, keys: MachineKeys) -> None:
    """The seed disk: a plain tar the VM's init unpacks from /dev/vdb."""
    members = {"host_key": (keys.host.private_openssh, 0o600), "host_key.pub": (keys.host.public_line + "\n", 0o644),
               "authorized_keys": (keys.client.public_line + "\n", 0o600)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, (text, mode) in members.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, int(time.time())
                tar.addfile(info, io.BytesIO(data))
        f.truncate(1 << 20)  # a whole number of sectors


def _opt(path: Path) -> str:
    """A path inside a qemu option list, where a comma must be doubled."""
    return str(path).replace(",", ",,")


def _is_id(text: str) -> bool:
    return len(text) == _ID_LEN and all(c in "0123456789abcdef" for c in text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _flock(path: Path):  # type: ignore[no-untyped-def]
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
