"""The watcher's commands (rain/host/reaper.py): what only Rain can undo runs once its process is gone.

A launch on a cloud asks the watcher to run `fg-image instances reap` should it be killed: these tests
check the watcher runs a tracked command with the environment it was given once its owner dies (by
SIGKILL, which leaves the owner no chance), and not one that was untracked.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

OWNER = """
import sys, time
from rain.host import reaper
out = sys.argv[1]
write = [sys.executable, "-c", "import os, sys; open(sys.argv[1], 'w').write(os.environ['RAIN_SAID'])"]
reaper.track_command(write + [out + "/kept"], {"RAIN_SAID": "kept ran"})
reaper.track_command(write + [out + "/dropped"], {"RAIN_SAID": "dropped ran"})
reaper.untrack_command(write + [out + "/dropped"], {"RAIN_SAID": "dropped ran"})
say = [sys.executable, "-c", "import sys; print('released 2 machines'); sys.exit(12)"]
reaper.track_command(say, None, log=out + "/reap.log")  # nobody watches: what it prints goes to the log
print("ready", flush=True)
time.sleep(600)
"""


def test_a_killed_owners_tracked_command_runs_with_its_environment_and_an_untracked_one_does_not(
        tmp_path: Path) -> None:
    _killed_when_ready(OWNER, tmp_path, lambda: not (tmp_path / "kept").exists())
    _wait_for(lambda: (tmp_path / "kept").exists())
    assert (tmp_path / "kept").read_text() == "kept ran"
    _wait_for(lambda: "\nexit " in _text(tmp_path / "reap.log"))
    head, said, end = _text(tmp_path / "reap.log").splitlines()
    assert "rain's watcher: the process that asked for it is gone; running " in head
    assert (said, end) == ("released 2 machines", "exit 12")
    time.sleep(0.5)
    assert not (tmp_path / "dropped").exists()


def _killed_when_ready(script: str, out: Path, before_kill: Callable[[], bool] = lambda: True) -> None:
    """Run `script` (its argument: out), and SIGKILL it once it says "ready" (`before_kill` must hold then)."""
    owner = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        assert before_kill(), "nothing runs while the owner lives"
        owner.send_signal(signal.SIGKILL)
    finally:
        owner.wait()


def _wait_for(done: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


LEASE_HOLDER = """
import sys, time
from pathlib import Path
from rain.clouds.leases import Leases, Reap
out = Path(sys.argv[1])
touch = (sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('reaped\\\\n')")
held = Leases(out / "held", Reap(touch + (str(out / "held.ran"),)))
first, second = held.take("first"), held.take("second")
first.drop()  # a batch's first build released its machine; the second still holds one
let_go = Leases(out / "let-go", Reap(touch + (str(out / "let-go.ran"),)))
let_go.take("only").drop()
print("ready", flush=True)
time.sleep(600)
"""


def test_a_killed_process_still_holding_a_lease_is_reaped_and_one_that_dropped_all_is_not(tmp_path: Path) -> None:
    """Leases with a `Reap` (rain/clouds/leases.py) tell the watcher once while any is held: dropping one of
    two does not untrack the reap the other still needs."""
    _killed_when_ready(LEASE_HOLDER, tmp_path)
    _wait_for(lambda: (tmp_path / "held.ran").exists())
    assert (tmp_path / "held.ran").read_text() == "reaped\n", "run once, for the lease still held"
    time.sleep(0.5)
    assert not (tmp_path / "let-go.ran").exists(), "every lease of it was dropped: nothing to reap"
