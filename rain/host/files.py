"""A small file written whole or not at all: what generate's manifest, lock files and SBOMs are."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def replace_file(path: Path, data: bytes) -> Path:
    """Write data to path through a hidden file beside it and a rename: a reader, a crash or a full disk never
    leaves half of it there. OSError as open and write raise it (the caller names the file to the user)."""
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        part.write_bytes(data)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path
