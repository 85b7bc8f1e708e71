"""The long-running repository commands as a user sees their progress: the same steps in the same
look on a terminal and in a pipe, and with --json only the JSON document on stdout."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess

import pytest
from support.cli import FG_IMAGE

pytestmark = pytest.mark.integration

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
VET_STEPS = ("fetch", "unpack", "vet")


def on_a_terminal(rain_env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run fg-image with stderr on a pseudo-terminal (colours allowed) and stdout on a pipe."""
    master, slave = pty.openpty()
    env = {**rain_env, "NO_COLOR": "", "TERM": "xterm-256color", "COLUMNS": "120"}
    proc = subprocess.Popen([str(FG_IMAGE), *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen += data
    os.close(master)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(60), stdout, seen.decode()


def steps(stderr: str) -> list[str]:
    """The progress lines with durations made equal: what a user compares between two runs."""
    text = ANSI.sub("", stderr).replace("\r", "\n")
    return [re.sub(r"\(\d+\.\ds\)", "(Ns)", line) for line in text.splitlines() if line[:2] in ("… ", "✓ ", "✗ ")]


def test_upload_with_json_prints_only_json_and_reports_its_transfer_on_stderr(fg, clean_tarball):
    up = fg("upload", str(clean_tarball), "--name", "deb", "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["name"] == "deb"
    assert re.fullmatch(r"✓ upload clean\.tar\.zst \(\d+\.\ds\)\n", up.stderr), up.stderr


def test_vet_shows_the_same_steps_on_a_terminal_and_in_a_pipe_and_json_parses(fg, rain_env, clean_tarball):
    image_id = json.loads(fg("upload", str(clean_tarball), "--name", "deb", "--json").stdout)["id"]

    piped = fg("vet", image_id, "--json")
    code, stdout, terminal = on_a_terminal(rain_env, "vet", image_id, "--json")

    assert piped.returncode == code == 0, piped.stderr + terminal
    assert json.loads(piped.stdout)["verdict"] == json.loads(stdout)["verdict"] == "pass"
    assert "\x1b" not in piped.stderr, "a pipe gets no escape codes"
    assert ANSI.search(terminal), "a terminal gets colour"
    expected = [line for s in VET_STEPS for line in (f"… {s}", f"✓ {s} (Ns)")]
    assert steps(piped.stderr) == expected
    assert steps(terminal) == expected


def test_download_in_a_pipe_says_what_it_fetched_in_the_one_style(fg, clean_tarball, tmp_path):
    image_id = fg("upload", str(clean_tarball), "--name", "deb").stdout.strip()
    got = fg("download", image_id, "-o", str(tmp_path / "got.tar.zst"))
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == str(tmp_path / "got.tar.zst")
    assert steps(got.stderr) == ["✓ download deb (Ns)"] and "\x1b" not in got.stderr


def test_vet_of_a_local_file_shows_its_steps_and_keeps_to_unpack_max(fg, rain_env, clean_tarball, tmp_path):
    piped = fg("vet", str(clean_tarball), "--json")
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["verdict"] == "pass"
    assert steps(piped.stderr) == ["… unpack", "✓ unpack (Ns)", "… vet", "✓ vet (Ns)"]

    # the operator's bound on unpacked trees holds for local files too (a decompression bomb stops there)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    small = fg("vet", str(clean_tarball), env={"RAIN_UNPACK_MAX": "1K", "TMPDIR": str(scratch)})
    assert small.returncode == 2
    assert "unpacks to more than 1.0 KiB (unpack_max)" in small.stderr and "✗ unpack" in small.stderr
    assert list(scratch.iterdir()) == [], "no unpacked tree left behind"
