"""The whole-file sha256 of a delta upload, taken as its chunks arrive, so its commit need not read them back.

A commit checks that the image's chunks give the sha256 the client declared. Reading a first upload's
bytes back from the database to hash them took a fifth of its time (0.2 s of 1.2 s at 64 MiB). So the
client says where in its file a batch of chunks begins (X-Rain-Offset) when the batch is one run of the
file; this process hashes each batch that continues the run it has, keeps a few that arrive early (they
are sent several at once), and at commit the run counts only if the committed chunk list begins with
exactly the chunks it hashed, each of which was checked against its sha256 when it arrived. The rest
is read back as before. The state is this process's alone: another worker, a restart or a batch sent
without an offset only means that more is read back.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

UPLOADS_MAX = 32  # uploads followed at once; the oldest is forgotten (its commit reads back)
EARLY_BYTES_MAX = 64 << 20  # bytes of early batches kept per upload: four batches
EARLY_TOTAL_MAX = 256 << 20  # and for all uploads together: clients naming far offsets cannot fill memory


@dataclass
class _Run:
    digest: Any = field(default_factory=hashlib.sha256)
    chunks: list[str] = field(default_factory=list)
    size: int = 0
    early: dict[int, list[tuple[str, bytes]]] = field(default_factory=dict)
    early_bytes: int = 0
    dropped: bool = False  # forgotten: what it still holds early no longer counts
    lock: threading.Lock = field(default_factory=threading.Lock)

    def feed(self, pieces: list[tuple[str, bytes]]) -> None:
        for sha, data in pieces:
            self.digest.update(data)
            self.chunks.append(sha)
            self.size += len(data)


_lock = threading.Lock()
_runs: OrderedDict[str, _Run] = OrderedDict()
_early_total = 0  # bytes held early by all runs, under _lock


def arrived(upload_id: str, offset: int, pieces: list[tuple[str, bytes]]) -> None:
    """Chunks of the upload, each already checked against its sha256, that sit one after another from
    `offset` of its file."""
    with _lock:
        run = _runs.get(upload_id)
        if run is None:
            run = _runs[upload_id] = _Run()
            while len(_runs) > UPLOADS_MAX:
                _drop(_runs.popitem(last=False)[1])
    with run.lock:
        if offset == run.size:
            run.feed(pieces)
            while run.size in run.early:
                batch = run.early.pop(run.size)
                _hold_early(run, -sum(len(data) for _, data in batch))
                run.feed(batch)
        elif offset > run.size and offset not in run.early:
            if _hold_early(run, sum(len(data) for _, data in pieces)):
                run.early[offset] = pieces


def _hold_early(run: _Run, size: int) -> bool:
    """Count `size` more (or, negative, fewer) bytes held early by `run`, within both bounds."""
    global _early_total
    with _lock:
        if run.dropped or (size > 0 and (run.early_bytes + size > EARLY_BYTES_MAX
                                         or _early_total + size > EARLY_TOTAL_MAX)):
            return False
        run.early_bytes += size
        _early_total += size
        return True


def _drop(run: _Run) -> None:
    """A run forgotten: the bytes it held early no longer count (called under _lock)."""
    global _early_total
    _early_total -= run.early_bytes
    run.early_bytes = 0
    run.dropped = True


def take(upload_id: str, chunks: list[str]) -> tuple[Any, int, int] | None:
    """(the sha256 so far, how many of `chunks` it covers, how many bytes) when the committed chunk list
    begins with the run hashed; None otherwise. Either way the upload is forgotten."""
    with _lock:
        run = _runs.pop(upload_id, None)
        if run is not None:
            _drop(run)
    if run is None:
        return None
    with run.lock:
        if not run.chunks or chunks[:len(run.chunks)] != run.chunks:
            return None
        return run.digest.copy(), len(run.chunks), run.size


def forget(upload_id: str) -> None:
    with _lock:
        run = _runs.pop(upload_id, None)
        if run is not None:
            _drop(run)
