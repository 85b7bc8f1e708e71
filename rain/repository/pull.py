"""`fg-image repo pull`: copy images from another Rain repository service into this one, moving only
the chunks this one lacks.

A second site, or a cache beside a hypervisor cluster, keeps in step with the main repository this
way. Run it where the receiving repository's database is (the machine of its `fg-image serve`), as
an administrator of it; the source is any Rain service, read with a token of a user there, so what
can be pulled is exactly what that user may read.

For each image named (by id, or by a query the source answers), parents first:
- an image here already, with the same id and sha256, is skipped without a byte moved;
- otherwise its record is made here under the same id, owner, visibility, sharing, provenance,
  vetting and parent (imports.py), its chunk list is read from the source, the chunks this
  repository lacks are fetched (several requests at once, each chunk checked against its sha256)
  and the image is committed only once its bytes read back give the source's sha256;
- a parent the token may not read stays behind; the child still names it, as it would a removed one.

A pull that fails leaves nothing of the image it was at. One that was killed leaves its record and
chunks, and the next pull of that image takes them over and fetches only the rest.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from rain.errors import Conflict, IntegrityError, NotFound, Unreachable
from rain.repository import client_delta
from rain.repository.client import Client
from rain.repository.delta import ASK_MAX
from rain.repository.models import Image, ImageQuery, Status
from rain.repository.store import Store

log = logging.getLogger(__name__)
LINEAGE_MAX = 64  # parents followed above one image: a loop in a hostile source's answers ends here
PAGE = 200  # records per listing request: each may carry a package list


@dataclass
class Pulled:
    """What happened to one image."""

    id: str
    name: str
    owner: str
    size: int
    outcome: str  # "pulled" | "present"
    fetched_bytes: int = 0
    resumed: bool = False
    created_owner: bool = False


@dataclass
class PullReport:
    source: str
    images: list[Pulled] = field(default_factory=list)

    @property
    def fetched_bytes(self) -> int:
        return sum(p.fetched_bytes for p in self.images)


def plan(source: SourceClient, ids: Sequence[str], query: ImageQuery | None) -> list[Image]:
    """The images to pull, each after its parents (as far as the source lets the token read them)."""
    wanted: list[Image] = []
    for image_id in ids:
        wanted.append(source.show(image_id))
    if query is not None:
        skip = 0
        while True:
            page = source.list(query.model_copy(update={"skip": skip, "limit": PAGE}))
            # a listing gives summaries: the record kept here (provenance, vetting) is the whole one
            wanted += [source.show(listed.id) for listed in page if listed.status != Status.UPLOADING]
            if len(page) < PAGE:
                break
            skip += PAGE
    ordered: dict[str, Image] = {}
    for image in wanted:
        chain = [image]
        while chain[-1].parent and chain[-1].parent not in ordered and len(chain) <= LINEAGE_MAX \
                and all(c.id != chain[-1].parent for c in chain):
            try:
                chain.append(source.show(chain[-1].parent))
            except NotFound:
                break  # the token may not read it (or it was removed there): the child comes alone
        for img in reversed(chain):
            ordered.setdefault(img.id, img)
    return [img for img in ordered.values() if img.status != Status.UPLOADING]


def pull(store: Store, source: SourceClient, images: Sequence[Image],
         said: Callable[[Pulled], None] | None = None) -> PullReport:
    """Copy `images` (in order, as plan() gives them) from `source` into `store`."""
    report = PullReport(source.base)
    for image in images:
        done = _pull_one(store, source, image)
        report.images.append(done)
        if said:
            said(done)
    return report


def _pull_one(store: Store, source: Client, image: Image) -> Pulled:
    began = store.begin_import(image, source.base)
    if began is None:
        return Pulled(image.id, image.name, image.owner, image.size, "present")
    done = Pulled(image.id, image.name, image.owner, image.size, "pulled", resumed=began.resumed,
                  created_owner=began.created_owner)
    try:
        try:
            info = client_delta.chunk_list(source, image.id)
        except Conflict:  # stored there before chunking: it comes whole
            done.fetched_bytes = _pull_whole(store, source, image)
            return done
        if info.sha256 != image.sha256 or info.size != image.size:
            raise IntegrityError(f"the source's chunk list of image {image.id} is for other bytes than its record",
                                 hint="pull again; tell the source's operator if it persists")
        missing: set[str] = set()
        distinct = list(dict.fromkeys(info.chunks))
        for at in range(0, len(distinct), ASK_MAX):
            missing.update(store.upload_needs(image.id, distinct[at:at + ASK_MAX]))
        first_at: dict[str, int] = {}
        for i, sha in enumerate(info.chunks):
            if sha in missing:
                first_at.setdefault(sha, i)
        for pieces in _fetched(source, info, sorted(first_at.values())):
            store.upload_chunks(image.id, pieces)
            done.fetched_bytes += sum(len(data) for _, data in pieces)
        store.commit_upload(image.id, info.chunks, info.sha256)
    except BaseException:
        _undo(store, image.id)
        raise
    return done


def _fetched(source: Client, info: client_delta.ImageChunks,
             indexes: list[int]) -> Iterator[list[tuple[str, bytes]]]:
    """The chunks at `indexes` from the source, as (sha256, bytes) batches in order; several requests
    run at once, each thread on its own HTTP session."""
    local = threading.local()

    def fetch(run: tuple[int, int]) -> list[tuple[str, bytes]]:
        if not hasattr(local, "client"):
            local.client = source.clone()
        first, count = run
        pieces = client_delta.read_run(local.client, info, first, count)
        return [(sha, bytes(piece)) for sha, piece in zip(info.chunks[first:first + count], pieces, strict=True)]

    # a window of requests in flight, not all of them: fetched bytes wait in memory until they are stored
    with ThreadPoolExecutor(client_delta.PARALLEL) as pool:
        pending: deque[Future[list[tuple[str, bytes]]]] = deque()
        for run in client_delta.runs(indexes, info.sizes):
            pending.append(pool.submit(fetch, run))
            if len(pending) > client_delta.PARALLEL:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _pull_whole(store: Store, source: Client, image: Image) -> int:
    with tempfile.TemporaryFile(prefix="rain-pull-") as spool:
        source.get(image.id, spool)
        spool.seek(0)
        store.finish_upload(image.id, spool, image.sha256)
    return image.size


def _undo(store: Store, upload_id: str) -> None:
    try:
        store.abandon_upload(upload_id)
    except NotFound:
        pass  # finished or given up already (finish_upload and commit_upload undo their own failures)
    except Exception as e:  # noqa: BLE001 - the first error is the one to report
        # the database went too: the record stays, and the next pull of the image takes it over
        log.debug("could not give up the pull of image %s: %s", upload_id, e)


class SourceClient(Client):
    """The source service: the same API, with errors that name it rather than this site's repository,
    and answers of bounded size (a chunk list of the largest image a blob can hold is about 40 MiB)."""

    max_json = 64 << 20

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return super()._call(method, path, **kwargs)
        except Unreachable:
            raise Unreachable(f"cannot reach the source repository at {self.base}",
                              hint="check --from and that `fg-image serve` runs there") from None

    def show(self, image_id: str) -> Image:
        try:
            image = super().show(image_id)
        except NotFound:
            raise NotFound(f"image {image_id} is not in the repository at {self.base}, or its token may not "
                           "read it", hint="check the id there with `fg-image list`, and the --token") from None
        if image.id != image_id:
            raise IntegrityError(f"the repository at {self.base} answered for image {image_id} with image "
                                 f"{image.id[:40]}", hint="tell its operator")
        return image
