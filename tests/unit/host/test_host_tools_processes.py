"""pid_alive: a running process is alive; an ended one is not, whether reaped or left a zombie."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from rain.host.tools import pid_alive


def test_this_process_is_alive() -> None:
    assert pid_alive(os.getpid())


def test_a_process_that_exited_and_was_reaped_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_a_process_that_exited_but_was_not_reaped_yet_counts_as_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(100):  # wait for it to become a zombie, without reaping it
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        assert not pid_alive(proc.pid)
    finally:
        proc.wait()
