"""LocalBuilder: a chroot on this host (needs root).

On the first `run`, data/chroot.sh mounts /proc, /sys and a private /dev
(tmpfs with the usual nodes), keeps services from starting (policy-rc.d) and
lends the host's resolv.conf; `stop` undoes all of it, also after a failure
or Ctrl-C. VM builders run the same script on their machine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from rain.errors import BuildError, InvalidInput
from rain.generate.builders.base import BuildSpec, Handle
from rain.generate.layers import mounted_under
from rain.host import command
from rain.host.command import Result

CHROOT_SCRIPT = Path(__file__).parent / "data" / "chroot.sh"


class LocalBuilder:
    name = "local"
    local = True

    def start(self, spec: BuildSpec) -> Handle:
        if os.geteuid() != 0:
            raise InvalidInput("the local builder needs root (it uses chroot and mounts)",
                               hint="run fg-image generate as root, e.g. with sudo")
        for tool in ("chroot", "mount", "umount"):
            command.need(tool)
        root = spec.workdir / "root"
        root.mkdir(parents=True, exist_ok=True)
        return Handle(spec=spec, root=root, inner_root=str(root), workspace=str(spec.workdir))

    # -- inside the image -------------------------------------------------

    def run(self, handle: Handle, argv: Sequence[str], env: Mapping[str, str] | None = None,
            what: str | None = None) -> Result:
        self._enter(handle)
        full_env = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true", **handle.env}
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

    def outside(self, handle: Handle, argv: Sequence[str], env: Mapping[str, str] | None = None,
                what: str | None = None, check: bool = True, cleanup: bool = False) -> Result:
        return command.run(argv, env=env, what=what or argv[0], log_file=handle.spec.log_file, check=check,
                           cleanup=cleanup)

    def exists(self, handle: Handle, path: str) -> bool:
        return os.path.lexists(handle.root / path.lstrip("/"))

    def push(self, handle: Handle, source: Path | None = None, dest: str | None = None) -> None:
        """handle.root already is the image root; a `source` elsewhere is copied in (or to `dest`)."""
        target = Path(dest) if dest is not None else handle.root
        if source is not None and source.resolve() != target.resolve():
            target.mkdir(parents=True, exist_ok=True)
            command.run(["cp", "-a", "--reflink=auto", f"{source}/.", str(target)], what="copying the tree")

    def attach_base(self, handle: Handle, image: Callable[[], Path]) -> bool:
        return False  # place_base layers the base directory itself under handle.root

    def fetch(self, handle: Handle) -> None:
        """The tree already is at handle.root: just undo the chroot set-up (as every builder's fetch does)."""
        handle.undo.close()
        handle.entered = False

    def stop(self, handle: Handle, failed: bool = False) -> str | None:
        handle.undo.close()
        handle.entered = False
        root = str(handle.root.resolve())
        left = [p for p in mounted_under(handle.root) if p != root]  # the root itself may be a layer
        if left:
            raise BuildError(f"could not unmount {', '.join(left)}",
                             hint="a process inside the image may still run; umount -l them by hand")
        return None

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
        state = handle.spec.workdir / "chroot.state"
        handle.undo.callback(chroot_script, self.outside, handle, "leave", str(state))
        chroot_script(self.outside, handle, "enter", str(state), "1" if handle.spec.debian else "0")


def chroot_script(outside: Callable[..., Result], handle: Handle, op: str, *args: str) -> None:
    """Run data/chroot.sh (the same script on every builder) to set up or undo the image root for chroot."""
    script = CHROOT_SCRIPT.read_bytes()
    try:
        outside(handle, ["sh", "-c", script.decode(), "chroot.sh", op, handle.inner_root, *args],
                what=f"{op} the image root", cleanup=op == "leave")
    except BuildError as e:
        if "rain-chroot:" in e.message:
            raise BuildError(e.message.split("rain-chroot:", 1)[1].split(" | ")[0].strip(),
                             hint="the image root could not be prepared; see the build log") from None
        raise
