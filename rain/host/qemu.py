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
from rain.waiting import Deadline, poll

log = logging.getLogger(__name__)

TCG_CPU = "Nehalem"
"""Under TCG a plain x86-64-v2 CPU (what RHEL 9 needs) runs builds faster than `max`, whose
AVX2/AES-NI code paths qemu has to emulate (measured on a 2-core host: zstd ~1.8x, ssh streams ~1.7x)."""


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
        try:
            verdict: list[bool] = []

            def decided() -> bool:
                text = out.read_text(errors="replace") if out.exists() else ""
                if "Kernel panic" in text:
                    verdict.append(True)
                elif proc.poll() is not None:
                    verdict.append("Linux version" in text)
                return bool(verdict)

            if poll(decided, Deadline.after(timeout), 0.2):
                return verdict[0]
            log.info("KVM probe: no kernel boot within %.0fs; using TCG", timeout)
            return False
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reaper.untrack_pid(proc.pid)
