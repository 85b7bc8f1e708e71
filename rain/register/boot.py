"""Boot a packed hpc image under QEMU on this host and wait for the image's own boot marker.

The squashfs is served by a small HTTP server on 127.0.0.1, which the guest
reaches as 10.0.2.2 through QEMU's user-mode network. KVM is used only when
asked for; TCG is the default because it works everywhere. The serial console
goes to a log file that is kept; a timeout fails the test. The QEMU process
handling (own session, reaper, always killed) is rain.register.vm's, shared with
the cloud boot tests.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rain.errors import TargetError
from rain.host.tools import tool
from rain.register.vm import last_console_line, qemu
from rain.waiting import Deadline, poll

GUEST_HOST = "10.0.2.2"  # QEMU user networking's address for the host's 127.0.0.1


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[int]:
    """Serve `directory` read-only over HTTP on 127.0.0.1; yields the port."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="rain-boot-http", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def boot_until(kernel: Path, initrd: Path, append: str, log_path: Path, marker: str, timeout: float,
               memory_mb: int = 2048, accel: str = "tcg") -> float:
    """Boot kernel+initrd with `append`; return seconds until `marker` appears on the serial console."""
    log_path.unlink(missing_ok=True)
    argv = [tool("qemu-system-x86_64"), "-accel", accel, "-m", str(memory_mb), "-smp", "2",
            "-nographic", "-no-reboot", "-serial", f"file:{log_path}", "-monitor", "none",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
            "-nic", "user,model=virtio-net-pci"]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rain-boot-") as tmp, qemu(argv, Path(tmp) / "qemu.err") as vm:
        def booted() -> bool:
            if log_path.is_file() and marker in log_path.read_text(errors="replace"):
                return True
            if vm.exited() is not None:
                err = vm.stderr_tail()
                raise TargetError(f"the boot test VM stopped before the image booted ({last_console_line(log_path)})",
                                  hint=f"console log: {log_path}" + (f"; qemu: {err}" if err else ""))
            return False

        if poll(booted, Deadline(start + timeout, timeout), 1):
            return time.monotonic() - start
        raise TargetError(f"boot test timed out after {timeout:.0f}s without the marker "
                          f"({last_console_line(log_path)})", hint=f"console log: {log_path}")
