"""Running host tools: argv lists only, output kept for errors, children ended on Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rain.errors import BuildError, Interrupted, ToolMissing
from rain.host import tools

log = logging.getLogger(__name__)

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()
_cancelled = threading.Event()
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Result:
    returncode: int
    output: str
    """The last lines of combined stdout and stderr."""


def need(tool: str) -> str:
    """The tool's path, or ToolMissing naming the package that provides it."""
    return tools.tool(tool)


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        input: bytes | None = None, check: bool = True, what: str | None = None,
        log_file: Path | None = None, keep: int = 40, cleanup: bool = False) -> Result:
    """Run argv (never through a shell); on failure raise BuildError with the last output lines.

    On KeyboardInterrupt the child's process group is terminated (then killed)
    before the interrupt propagates, so callers' cleanups find no busy mounts.
    After cancel_all() only `cleanup=True` commands (unmounts) still run.
    """
    argv = [str(a) for a in argv]
    if _cancelled.is_set() and not cleanup:
        raise Interrupted("build cancelled", hint="the batch was interrupted")
    full_env = {"PATH": SAFE_PATH, "LC_ALL": "C.UTF-8", "HOME": "/root"}
    full_env.update(env or {})
    log.debug("run %s", argv)
    tail: deque[str] = deque(maxlen=keep)
    sink = open(log_file, "ab") if log_file else None
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                start_new_session=True)
    except FileNotFoundError as e:
        if sink:
            sink.close()
        raise ToolMissing(f"{argv[0]} is not installed", hint="run scripts/setup.sh") from e
    with _live_lock:
        _live.add(proc)
    if _cancelled.is_set() and not cleanup:
        _end(proc)  # cancel_all() ran while this one was starting
    try:
        if input is not None:
            assert proc.stdin is not None
            proc.stdin.write(input)
            proc.stdin.close()
        assert proc.stdout is not None
        for raw in proc.stdout:
            if sink:
                sink.write(raw)
            tail.append(raw.decode(errors="replace").rstrip())
        proc.wait()
    except BaseException:
        _end(proc)
        raise
    finally:
        with _live_lock:
            _live.discard(proc)
        if sink:
            sink.close()
    if _cancelled.is_set() and proc.returncode != 0 and not cleanup:
        raise Interrupted("build cancelled", hint="the batch was interrupted")
    result = Result(proc.returncode, "\n".join(tail))
    if check and proc.returncode != 0:
        last = [ln for ln in tail if ln.strip()][-3:]
        raise BuildError(f"{what or os.path.basename(argv[0])} failed (exit {proc.returncode}): "
                         + " | ".join(last), hint="run with --debug or see the build log")
    return result


def cancel_all() -> None:
    """Stop every running tool (all threads) and refuse new ones: Ctrl-C during a batch."""
    _cancelled.set()
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _end(proc)


def cancelled() -> bool:
    """cancel_all() was called: long loops elsewhere (SSH sessions) stop too."""
    return _cancelled.is_set()


def reset_cancel() -> None:
    _cancelled.clear()


def _end(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def pipe(producer: Sequence[str], consumer: Sequence[str], *, what: str) -> None:
    """producer | consumer, both argv lists; either failing raises BuildError."""
    env = {"PATH": SAFE_PATH, "LC_ALL": "C.UTF-8"}
    p1 = subprocess.Popen([str(a) for a in producer], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env, start_new_session=True)
    try:
        p2 = subprocess.Popen([str(a) for a in consumer], stdin=p1.stdout, stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, env=env, start_new_session=True)
    except BaseException:
        _end(p1)
        raise
    assert p1.stdout is not None
    p1.stdout.close()
    try:
        err2 = p2.communicate()[1]
        err1 = p1.communicate()[1]
    except BaseException:
        _end(p1)
        _end(p2)
        raise
    for proc, err in ((p1, err1), (p2, err2)):
        if proc.returncode != 0:
            lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()][-3:]
            raise BuildError(f"{what} failed (exit {proc.returncode}): " + " | ".join(lines),
                             hint="check free disk space and the build log")
