"""Helpers the fg-image end-to-end tests share."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

FG_IMAGE = Path(sys.executable).parent / "fg-image"


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a successful fg-image printed."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
