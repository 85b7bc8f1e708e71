"""A watcher process that cleans up after a Rain process that died without doing so itself.

Ctrl-C and errors are handled in-process (every build undoes its mounts, VMs
and work directories). A SIGKILL, an OOM kill or a lost terminal gives no such
chance, so whatever must not outlive Rain is *tracked* here:

    reaper.track_pid(qemu.pid)        # killed (with its process group)
    reaper.track_path(workdir)        # mounts under it unmounted, then removed
    reaper.track_command(argv, env)   # run, for what only Rain can undo (a cloud's machines)
    ...
    reaper.untrack_pid(qemu.pid)      # Rain ended it itself

The watcher is started on first use, in its own session so a terminal's
Ctrl-C does not reach it, and reads orders from a pipe whose only writer is
this process. When the pipe closes (this process is gone, however it ended),
the watcher undoes whatever is still tracked and exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_lock = threading.Lock()
_pipe: int | None = None
_owner_pid: int | None = None


def track_pid(pid: int) -> None:
    _send(f"+pid {int(pid)}")


def untrack_pid(pid: int) -> None:
    _send(f"-pid {int(pid)}", start=False)


def track_path(path: Path | str) -> None:
    _send(f"+path {os.path.abspath(path)}")


def untrack_path(path: Path | str) -> None:
    _send(f"-path {os.path.abspath(path)}", start=False)


def track_command(argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
    """Run argv (with env added to this process's environment) once this process is gone, after its
    tracked processes are killed and before its paths are removed; at most COMMAND_TIMEOUT seconds. With
    `log`, what it prints is appended there after a line saying when it ran and why (nobody is watching)."""
    _send("+run " + _order(argv, env, log))


def untrack_command(argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> None:
    _send("-run " + _order(argv, env, log), start=False)


def _order(argv: list[str], env: dict[str, str] | None, log: Path | None) -> str:
    return json.dumps([argv, env or {}, os.path.abspath(log) if log is not None else None])


COMMAND_TIMEOUT = 600


def _send(line: str, start: bool = True) -> None:
    global _pipe, _owner_pid
    if "\n" in line:
        raise ValueError("reaper: no newlines in tracked names")
    with _lock:
        if _pipe is not None and _owner_pid != os.getpid():
            _pipe = None  # a forked child: the watcher belongs to the parent
        if _pipe is None:
            if not start:
                return
            read_end, write_end = os.pipe()
            subprocess.Popen([sys.executable, "-m", "rain.host.reaper"], stdin=read_end,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                             close_fds=True)
            os.close(read_end)
            _pipe, _owner_pid = write_end, os.getpid()
        os.write(_pipe, (line + "\n").encode())


# -- the watcher ----------------------------------------------------------------


def _kill(pid: int) -> None:
    for target in (lambda s: os.killpg(pid, s), lambda s: os.kill(pid, s)):
        try:
            target(signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _mounts_under(path: str) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        parts = line.split()
        if len(parts) > 1:
            point = parts[1].encode().decode("unicode_escape")
            if point == path or point.startswith(path.rstrip("/") + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove(path: str) -> None:
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
    if not _mounts_under(path):  # never recurse into a mount we could not detach
        shutil.rmtree(path, ignore_errors=True)


def _run(order: str) -> None:
    try:
        argv, env, log = json.loads(order)
        out = open(log, "ab") if log else None  # noqa: SIM115 (closed below, after the command)
    except (ValueError, TypeError, OSError):
        return
    try:
        if out is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S %z")
            out.write(f"{when} rain's watcher: the process that asked for it is gone; running "
                      f"{' '.join(argv)}\n".encode())
            out.flush()
        quiet = out is None
        result = subprocess.run(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL if quiet else out,
                                stderr=subprocess.DEVNULL if quiet else subprocess.STDOUT,
                                timeout=COMMAND_TIMEOUT, check=False)
        if out is not None:
            out.write(f"exit {result.returncode}\n".encode())
    except subprocess.TimeoutExpired:
        if out is not None:
            out.write(f"stopped after {COMMAND_TIMEOUT}s\n".encode())
    except (OSError, subprocess.SubprocessError):
        pass  # what it would have undone stays for the next run of the same command
    finally:
        if out is not None:
            out.close()


def watch() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pids: set[int] = set()
    paths: set[str] = set()
    commands: dict[str, None] = {}  # in the order given
    for raw in sys.stdin.buffer:
        op, _, arg = raw.decode(errors="replace").rstrip("\n").partition(" ")
        if op == "+pid":
            pids.add(int(arg))
        elif op == "-pid":
            pids.discard(int(arg))
        elif op == "+path":
            paths.add(arg)
        elif op == "-path":
            paths.discard(arg)
        elif op == "+run":
            commands[arg] = None
        elif op == "-run":
            commands.pop(arg, None)
    for pid in pids:  # processes first: they may hold files and mounts under the paths
        _kill(pid)
    if pids:
        time.sleep(0.5)
    for order in commands:
        _run(order)
    for path in sorted(paths, key=len, reverse=True):
        _remove(path)


if __name__ == "__main__":
    watch()
