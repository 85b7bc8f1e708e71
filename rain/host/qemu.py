"""QEMU on this host: the CPU model under TCG, and whether KVM really works here.

Both the qemu builder and register's boot-test VMs start QEMU; they share these facts.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from rain.host import reaper
from rain.waiting import Deadline, Pending, wait_for

log = logging.getLogger(__name__)

TCG_CPU = "Nehalem"
"""Under TCG a plain x86-64-v2 CPU (what RHEL 9 needs) runs builds faster than `max`, whose
AVX2/AES-NI code paths qemu has to emulate (measured on a 2-core host: zstd ~1.8x, ssh streams ~1.7x)."""


class _NoBoot(Exception):
    """The KVM probe's guest did not get to the end of boot in time."""


@functools.lru_cache(maxsize=4)
def kvm_works(qemu: str, kernel: str, timeout: float = 6.0) -> bool:
    """Whether a KVM guest gets as far as the kernel's end of boot (a panic for want of root) in time.

    On some hosts /dev/kvm exists but guests hang; TCG is slow but works. Where KVM works the
    kernel gets there in a second or two, so a few seconds bound the probe."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="rain-kvm-probe-") as d:
        out = Path(d) / "console.log"
        proc = subprocess.Popen([qemu, "-nodefaults", "-no-user-config", "-accel", "kvm", "-cpu", "host",
                                 "-m", "256", "-display", "none", "-monitor", "none", "-no-reboot",
                                 "-serial", f"file:{out}", "-kernel", kernel,
                                 "-append", "console=ttyS0 panic=-1 loglevel=4"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        reaper.track_pid(proc.pid)

        def decided() -> bool | Pending:
            text = out.read_text(errors="replace") if out.exists() else ""
            if "Kernel panic" in text:
                return True
            if proc.poll() is not None:
                return "Linux version" in text
            return Pending("no end of boot")

        try:
            return wait_for(decided, Deadline.after(timeout), 0.2, _NoBoot)
        except _NoBoot:
            log.info("KVM probe: no kernel boot within %.0fs; using TCG", timeout)
            return False
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reaper.untrack_pid(proc.pid)
