"""LocalBuilder: a chroot on this host (needs root).

Mounts /proc, /sys and a private /dev (tmpfs with the usual nodes) on the
first `run`, keeps services from starting (policy-rc.d), lends the host's
resolv.conf for the build; `stop` undoes all of it in reverse order, also
after a failure or Ctrl-C.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from rain.errors import BuildError, InvalidInput
from rain.generate import command
from rain.generate.builders.base import BuildSpec, Handle
from rain.generate.command import Result
from rain.generate.layers import mounted_under, umount

_DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
              "tty": (5, 0)}


class LocalBuilder:
    name = "local"

    def start(self, spec: BuildSpec) -> Handle:
        if os.geteuid() != 0:
            raise InvalidInput("the local builder needs root (it uses chroot and mounts)",
                               hint="run fg-image generate as root, e.g. with sudo")
        for tool in ("chroot", "mount", "umount"):
            command.need(tool)
        root = spec.workdir / "root"
        root.mkdir(parents=True, exist_ok=True)
        return Handle(spec=spec, root=root)

    # -- inside the image -------------------------------------------------

    def run(self, handle: Handle, argv: Sequence[str], env: Mapping[str, str] | None = None,
            what: str | None = None) -> Result:
        self._enter(handle)
        full_env = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
        full_env.update(env or {})
        return command.run(["chroot", str(handle.root), *argv], env=full_env, what=what or argv[0],
                           log_file=handle.spec.log_file)

    def put(self, handle: Handle, data: bytes, path: str, mode: str = "0644",
            owner: str = "root", group: str = "root") -> None:
        """Write bytes to path inside the image; `install` runs in the chroot, so links resolve there."""
        tmp = self._tmp(handle)
        staged = tmp / f".rain-put-{uuid.uuid4().hex}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.run(handle, ["install", "-D", "-m", mode, "-o", owner, "-g", group,
                              f"/tmp/{staged.name}", path], what=f"placing {path}")
        finally:
            staged.unlink(missing_ok=True)

    def get(self, handle: Handle, path: str) -> bytes:
        tmp = self._tmp(handle)
        name = f".rain-get-{uuid.uuid4().hex}"
        try:
            self.run(handle, ["cp", "-L", "--", path, f"/tmp/{name}"], what=f"reading {path}")
            return (tmp / name).read_bytes()
        finally:
            (tmp / name).unlink(missing_ok=True)

    def stop(self, handle: Handle) -> None:
        handle.undo.close()
        handle.entered = False
        root = str(handle.root.resolve())
        left = [p for p in mounted_under(handle.root) if p != root]  # the root itself may be a layer
        if left:
            raise BuildError(f"could not unmount {', '.join(left)}",
                             hint="a process inside the image may still run; umount -l them by hand")

    # -- setup and undo ---------------------------------------------------

    def _tmp(self, handle: Handle) -> Path:
        tmp = handle.root / "tmp"
        if tmp.is_symlink() or not tmp.is_dir():
            raise BuildError("the image's /tmp is not a directory", hint="the base image is broken")
        return tmp

    def _enter(self, handle: Handle) -> None:
        if handle.entered:
            return
        handle.entered = True
        root, undo = handle.root, handle.undo
        for sub in ("proc", "sys", "dev"):
            p = root / sub
            if p.is_symlink():
                raise BuildError(f"the image's /{sub} is a symlink", hint="the base image is broken")
            p.mkdir(exist_ok=True)
        self._mount(undo, ["-t", "proc", "proc"], root / "proc")
        self._mount(undo, ["-t", "sysfs", "-o", "ro", "sysfs"], root / "sys")
        self._mount(undo, ["-t", "tmpfs", "-o", "mode=755,nosuid", "rain-dev"], root / "dev")
        self._populate_dev(root / "dev")
        if handle.spec.debian:
            self._policy_rc(undo, root)
            self._unsafe_io(undo, root)
        self._resolv_conf(undo, root)

    def _mount(self, undo, args: list[str], point: Path) -> None:  # type: ignore[no-untyped-def]
        command.run(["mount", *args, str(point)], what=f"mounting {point.name}")
        undo.callback(umount, point)

    def _populate_dev(self, dev: Path) -> None:
        for name, (major, minor) in _DEV_NODES.items():
            os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            os.chmod(dev / name, 0o666)
        for name, target in {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                             "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}.items():
            os.symlink(target, dev / name)
        (dev / "pts").mkdir()
        (dev / "shm").mkdir(mode=0o1777)

    def _policy_rc(self, undo, root: Path) -> None:  # type: ignore[no-untyped-def]
        sbin = root / "usr" / "sbin"
        policy = sbin / "policy-rc.d"
        if not sbin.is_dir() or sbin.is_symlink() or os.path.lexists(policy):
            return
        policy.write_text("#!/bin/sh\n# written by rain for the build; removed afterwards\nexit 101\n")
        policy.chmod(0o755)
        undo.callback(policy.unlink, missing_ok=True)

    def _unsafe_io(self, undo, root: Path) -> None:  # type: ignore[no-untyped-def]
        """No fsync per file while dpkg unpacks: the tree is packed afterwards anyway (as mmdebstrap does)."""
        conf_dir = root / "etc" / "dpkg" / "dpkg.cfg.d"
        if not conf_dir.is_dir() or conf_dir.is_symlink():
            return
        conf = conf_dir / "rain-unsafe-io"
        conf.write_text("# written by rain for the build; removed afterwards\nforce-unsafe-io\n")
        undo.callback(conf.unlink, missing_ok=True)

    def _resolv_conf(self, undo, root: Path) -> None:  # type: ignore[no-untyped-def]
        etc = root / "etc"
        if not etc.is_dir() or etc.is_symlink():
            return
        target = etc / "resolv.conf"
        saved = etc / ".rain-resolv.conf.orig"
        had = os.path.lexists(target)
        if had:
            os.rename(target, saved)
        try:
            host = Path("/etc/resolv.conf").read_bytes()
        except OSError:
            host = b""
        target.write_bytes(host)

        def restore() -> None:
            target.unlink(missing_ok=True)
            if had:
                os.rename(saved, target)
        undo.callback(restore)
