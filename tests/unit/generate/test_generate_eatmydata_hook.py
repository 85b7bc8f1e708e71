"""The base bootstrap's eatmydata hook steps aside on a mirror without eatmydata (a partial mirror must not
break every cold build)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rain.generate.bootstrap.debian import _HOOK_EXTRACT, EATMYDATA_HOOKS


def test_a_mirror_without_eatmydata_leaves_dpkg_alone_and_the_hook_succeeds(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/dpkg").write_text("the real dpkg\n")
    (root / "var/lib/apt/lists").mkdir(parents=True)
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    conf = tmp_path / "apt.conf"  # as mmdebstrap writes it: apt's whole world is inside the new root
    conf.write_text(f'Dir "{root}";\nDir::State::status "{root}/var/lib/dpkg/status";\n')
    hook = tmp_path / "hook-extract"
    hook.write_text(_HOOK_EXTRACT)
    hook.chmod(0o755)
    on = tmp_path / "eatmydata-on"
    env = {**os.environ, "RAIN_EATMYDATA": str(EATMYDATA_HOOKS), "RAIN_EATMYDATA_ON": str(on),
           "MMDEBSTRAP_APT_CONFIG": str(conf)}
    r = subprocess.run([str(hook), str(root)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not on.exists(), "eatmydata is not marked as in use"
    assert (root / "usr/bin/dpkg").read_text() == "the real dpkg\n" and not (root / "usr/bin/dpkg.distrib").exists()
    assert (root / "var/lib/dpkg/diversions").exists() is False
