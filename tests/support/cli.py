"""The `fg-image` command as the tests run it: where it is, the recipes it builds, and reading what it prints.

FG_IMAGE is the console script of the interpreter running the tests (the venv's),
so it runs the code under test. Ports from free_port are free when asked for,
not reserved: use them at once.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

FG_IMAGE = Path(sys.executable).parent / "fg-image"
RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a successful fg-image printed."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
