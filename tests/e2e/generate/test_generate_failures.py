"""Bad recipes and interrupted builds: one error line, nothing mounted, no half image stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.cli import FG_IMAGE, RECIPES
from support.host import mounts_under

pytestmark = [pytest.mark.e2e]
MINIMAL = RECIPES / "debian-bookworm-minimal.yaml"


def one_error(r: subprocess.CompletedProcess[str]) -> str:
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return errors[0]


def nothing_left(gen: Any, gen_data: Path) -> None:
    assert mounts_under(gen_data) == []
    work = gen_data / "work"
    assert not work.exists() or list(work.iterdir()) == []
    assert json.loads(gen("list", "--json").stdout) == []


@pytest.mark.parametrize(("sets", "code", "words"), [
    (["colour=blue"], 2, ["unknown field 'colour'"]),
    (["packages=['vim;rm -rf /']"], 2, ["packages.0", "vim;rm -rf /"]),
    (["os.release=xenial"], 2, ["unknown release 'xenial'"]),
], ids=["unknown-field", "shell-in-package", "unknown-release"])
def test_invalid_recipes_fail_before_anything_runs(gen: Any, gen_data: Path, sets: list[str], code: int,
                                                  words: list[str]) -> None:
    args = ["generate", str(MINIMAL)]
    for s in sets:
        args += ["--set", s]
    r = gen(*args)
    assert r.returncode == code
    line = one_error(r)
    assert all(w in line for w in words), line
    nothing_left(gen, gen_data)


@pytest.mark.slow
def test_unreachable_mirror_is_named(gen: Any, gen_data: Path) -> None:
    r = gen("generate", str(MINIMAL), "--set", "mirror=http://127.0.0.1:9/debian")
    assert r.returncode == 8
    assert "http://127.0.0.1:9/debian is unreachable" in one_error(r)
    nothing_left(gen, gen_data)


@pytest.mark.slow
def test_a_package_that_does_not_exist_is_named(gen: Any, gen_data: Path) -> None:
    r = gen("generate", str(MINIMAL), "--set", "packages=[hello, no-such-package-rain]")
    assert r.returncode == 2
    assert "'no-such-package-rain' does not exist in debian bookworm" in one_error(r)
    nothing_left(gen, gen_data)


def test_a_base_image_the_user_may_not_read(gen: Any, gen_data: Path, tmp_path: Path) -> None:
    private = tmp_path / "secret.tar.zst"
    private.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))
    up = gen("upload", str(private), "--os", "debian")  # as admin, private
    assert up.returncode == 0, up.stderr
    image_id = up.stdout.strip()
    r = gen("generate", str(MINIMAL), "--set", f"base={image_id}", env={"RAIN_USER": "bob"})
    assert r.returncode == 2
    assert f"base: image {image_id} does not exist or you may not read it" in one_error(r)
    assert mounts_under(gen_data) == []
    assert json.loads(gen("list", "--json", env={"RAIN_USER": "bob"}).stdout) == []


@pytest.mark.slow
def test_ctrl_c_in_the_middle_of_a_build_leaves_nothing_mounted(rain_env: dict[str, str], gen_data: Path,
                                                                tmp_path: Path, gen: Any) -> None:
    recipe = tmp_path / "slow.yaml"
    recipe.write_text(MINIMAL.read_text() + "run:\n  - [sleep, '120']\n")
    env = {**rain_env, "RAIN_DATA_DIR": str(gen_data)}
    proc = subprocess.Popen([str(FG_IMAGE), "generate", str(recipe)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 600
    for line in proc.stderr:
        seen.append(line)
        if "run step 1" in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    time.sleep(1)
    assert mounts_under(gen_data), "the build should be inside its chroot now"
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, "".join(seen) + rest
    nothing_left(gen, gen_data)


@pytest.mark.slow
def test_a_failed_share_removes_the_images_already_stored(gen: Any, gen_data: Path) -> None:
    r = gen("generate", str(MINIMAL), "--set", "upload.share_with=[nobody-here]", "--format", "tar.zst",
            "--format", "squashfs")
    assert r.returncode != 0
    assert "nobody-here" in one_error(r)
    nothing_left(gen, gen_data)


@pytest.mark.slow
def test_ctrl_c_during_a_parallel_batch_cleans_up_every_build(rain_env: dict[str, str], gen_data: Path,
                                                             tmp_path: Path, gen: Any) -> None:
    for n in ("slow-a", "slow-b"):
        (tmp_path / f"{n}.yaml").write_text(f"name: {n}\nos: {{family: debian, release: bookworm}}\n"
                                           "run:\n  - [sleep, '120']\n")
    (tmp_path / "batch.yaml").write_text("recipes: [slow-a.yaml, slow-b.yaml]\n")
    env = {**rain_env, "RAIN_DATA_DIR": str(gen_data)}
    proc = subprocess.Popen([str(FG_IMAGE), "batch", str(tmp_path / "batch.yaml"),
                             "--jobs", "2", "--no-upload"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    started, seen = 0, []
    for line in proc.stderr:
        seen.append(line)
        started += "run step 1" in line and line.startswith("…")
        if started == 2:
            break
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, "".join(seen) + rest
    assert rest.count("(Interrupted)") == 2
    nothing_left(gen, gen_data)
