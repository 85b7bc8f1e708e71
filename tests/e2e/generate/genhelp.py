"""Helpers the generate e2e tests share (imported as a plain module: tests are not a package)."""

from __future__ import annotations

import json
import signal
import tarfile
from pathlib import Path
from typing import Any

import zstandard

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def tar_names(archive: Path) -> set[str]:
    with open(archive, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as s, \
            tarfile.open(fileobj=s, mode="r|") as tar:
        return {m.name.removeprefix("./") for m in tar}


def tar_read(archive: Path, name: str) -> bytes:
    with open(archive, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as s, \
            tarfile.open(fileobj=s, mode="r|") as tar:
        for m in tar:
            if m.name.removeprefix("./") == name:
                f = tar.extractfile(m)
                assert f is not None
                return f.read()
    raise AssertionError(f"{name} not in {archive}")


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    with open("/proc/mounts") as f:
        return [ln.split()[1] for ln in f if ln.split()[1].startswith(prefix)]


def manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def ids_from(stdout: str) -> dict[str, str]:
    """`fg-image generate` prints `ID  FORMAT` per uploaded artifact (or just ID for one)."""
    out = {}
    for line in stdout.split("\n"):
        parts = line.split()
        if len(parts) == 2:
            out[parts[1]] = parts[0]
        elif len(parts) == 1:
            out["only"] = parts[0]
    return out


def ctrl_c_works() -> None:
    """preexec_fn for a child the test will Ctrl-C: a shell without job control starts background
    jobs with SIGINT ignored (POSIX), and Python keeps that; the test run may be such a job."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
