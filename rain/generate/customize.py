"""The recipe's own changes, applied inside the image through the builder: files, users,
services, run steps. Everything is an argv list; values were validated by the recipe model."""

from __future__ import annotations

import os
import shutil
import stat

from rain.errors import BuildError, RecipeError
from rain.generate.context import BuildContext
from rain.image.rootfs import walk_tree
from rain.image.sysprep import generalize


def place_files(ctx: BuildContext) -> None:
    for f in ctx.recipe.files:
        data = f.content.encode() if f.content is not None else ctx.loaded.inputs[f.source or ""]
        ctx.builder.put(ctx.handle, data, f.path, mode=f.mode, owner=f.owner, group=f.group)


def add_users(ctx: BuildContext) -> None:
    b, h = ctx.builder, ctx.handle
    for u in ctx.recipe.users:
        _require(ctx, "/usr/sbin/useradd", f"users: creating {u.name!r}", "passwd (Debian) or shadow-utils")
        for g in u.groups:
            b.run(h, ["groupadd", "-f", g], what=f"users: group {g}")
        argv = ["useradd", "--create-home", "--shell", u.shell]
        if u.groups:
            argv += ["--groups", ",".join(u.groups)]
        b.run(h, [*argv, "--", u.name], what=f"users: useradd {u.name}")
        if u.ssh_keys:
            home = f"/home/{u.name}"
            b.put(h, ("\n".join(u.ssh_keys) + "\n").encode(), f"{home}/.ssh/authorized_keys",
                  mode="0600", owner=u.name, group=u.name)
            b.run(h, ["chown", f"{u.name}:{u.name}", f"{home}/.ssh"], what="users: ssh dir")
            b.run(h, ["chmod", "0700", f"{home}/.ssh"], what="users: ssh dir")
        if u.sudo:
            b.put(h, f"{u.name} ALL=(ALL) NOPASSWD:ALL\n".encode(), f"/etc/sudoers.d/rain-{u.name}", mode="0440")


def enable_services(ctx: BuildContext) -> None:
    for unit in ctx.recipe.services:
        _require(ctx, "/usr/bin/systemctl", f"services: enabling {unit!r}", "systemd")
        try:
            ctx.builder.run(ctx.handle, ["systemctl", "enable", unit], what=f"services: enable {unit}")
        except BuildError as e:
            raise RecipeError(f"services: cannot enable {unit!r}: {e.message}",
                              hint="is the unit's package in `packages:`? names are like ssh or munge") from None


def run_steps(ctx: BuildContext) -> None:
    b, h = ctx.builder, ctx.handle
    for i, step in enumerate(ctx.recipe.run):
        with ctx.reporter.step(f"run step {i + 1}"):
            if step.argv is not None:
                b.run(h, step.argv, what=f"run[{i}] {step.argv[0]}")
                continue
            target = f"/tmp/rain-step-{i}"
            b.put(h, ctx.loaded.inputs[step.script or ""], target, mode="0755")
            try:
                b.run(h, [target], what=f"run[{i}] {step.script}")
            finally:
                b.run(h, ["rm", "-f", target], what=f"run[{i}] cleanup")


def _require(ctx: BuildContext, path: str, doing: str, package: str) -> None:
    candidates = [path, path.replace("/usr/", "/", 1)]
    if not any(ctx.builder.exists(ctx.handle, p) for p in candidates):
        name = path.rsplit("/", 1)[1]
        raise RecipeError(f"{doing} needs {name} in the image", hint=f"add {package} to `packages:`")


def tidy(ctx: BuildContext) -> None:
    """Build-only leftovers and machine identity (machine-id, SSH host keys) out of the image, and its device
    nodes: mmdebstrap makes /dev/null and the like, a machine has devtmpfs there, and a tree a builder VM sends
    back has none (the safe unpacker drops them), so an image is the same bytes whatever builder made it."""
    root = ctx.handle.root
    generalize(root)
    nodes = [inner for inner, st in walk_tree(root) if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)]
    for parent in sorted({os.path.dirname(inner) for inner in nodes}):
        directory = str(root) + parent
        was = os.lstat(directory)
        for inner in nodes:
            if os.path.dirname(inner) == parent:
                os.unlink(str(root) + inner)
        os.utime(directory, ns=(was.st_atime_ns, was.st_mtime_ns), follow_symlinks=False)  # as a VM's tree has it
    for p in (root / "tmp").glob(".rain-*"):
        p.unlink(missing_ok=True)
    for sub in ("var/tmp",):
        d = root / sub
        if d.is_dir() and not d.is_symlink():
            for p in d.iterdir():
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
