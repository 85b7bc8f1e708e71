"""The repository core: catalog in MongoDB, bytes in GridFS, access rules, quotas, history.

A Store acts for one user; every call checks that user's rights here, so the
CLI, the HTTP service and the register stage all enforce the same rules.
Images other users may not read are reported as not found, never as forbidden,
so their existence does not leak.
"""

from __future__ import annotations

import builtins
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, BinaryIO

from pydantic import ValidationError
from pymongo import UpdateOne
from pymongo.database import Database

from rain.errors import Conflict, Forbidden, IntegrityError, InvalidInput, NotFound
from rain.repository import chunks, launches, listing
from rain.repository.accounts import human, now, require_admin
from rain.repository.acting import HOST, to_image, to_summary
from rain.repository.base import Progress
from rain.repository.delta import DeltaMixin
from rain.repository.fields import SCHEMA_HINT, ByteCount, HistoryLimit, checked, problem
from rain.repository.imports import ImportMixin
from rain.repository.launches import LaunchesMixin
from rain.repository.models import (
    SORT_KEYS,
    SUMMARY_FIELDS,
    Event,
    Image,
    ImageChanges,
    ImageMeta,
    ImageQuery,
    ImageSummary,
    NewToken,
    Role,
    Status,
    TokenInfo,
    TokenRequest,
    User,
    Verdict,
    Visibility,
)
from rain.repository.records import RecordsMixin


def new_id() -> str:
    return secrets.token_hex(6)


def ensure_indexes(db: Database) -> None:
    # before their indexes: updating 100,000 records took 5 minutes with one in place
    _backfill(db, "name_words", lambda doc: listing.name_words(doc.get("name", "")), {"name": 1})
    _backfill(db, "verdict", listing.verdict_of, {"vetting": 1, "quarantined": 1})
    for keys in listing.INDEXES:
        db.images.create_index(keys)
    db.images.create_index([("status", 1)])
    for keys in listing.EVENT_INDEXES:
        db.events.create_index(keys)
    for keys in launches.INDEXES:
        db.launches.create_index(keys)
    db.tokens.create_index([("user", 1)])
    # partial: token documents from before ids have none, and keep working
    db.tokens.create_index([("id", 1)], unique=True, partialFilterExpression={"id": {"$exists": True}})
    db["fs.chunks"].create_index([("files_id", 1), ("n", 1)], unique=True)  # GridFS's own; chunks.py writes them
    chunks.ensure_indexes(db)
    db["fs.files"].create_index([("filename", 1), ("uploadDate", 1)])


def _backfill(db: Database, field: str, value: Callable[[dict[str, Any]], Any], reads: dict[str, int]) -> None:
    """Records made before `field` was kept get it, computed from the fields `reads` names; once per
    database (a mark in rain_meta, so later opens cost one read)."""
    if db.rain_meta.find_one({"_id": field}) is not None:
        return
    batch: list[UpdateOne] = []
    for doc in db.images.find({field: {"$exists": False}}, reads):
        batch.append(UpdateOne({"_id": doc["_id"]}, {"$set": {field: value(doc)}}))
        if len(batch) == 1000:
            db.images.bulk_write(batch, ordered=False)
            batch = []
    if batch:
        db.images.bulk_write(batch, ordered=False)
    db.rain_meta.update_one({"_id": field}, {"$set": {"done": now()}}, upsert=True)


class Store(RecordsMixin, LaunchesMixin, ImportMixin, DeltaMixin):
    """The Repository over pymongo, acting as user `actor`.

    Registration records live in records.py, launch records in launches.py, garbage collection in gc.py,
    delta uploads in delta.py and pulled images' arrival in imports.py.
    """

    # -- images --------------------------------------------------------------------------

    def put(self, src: BinaryIO, meta: ImageMeta, size: int, sha256: str | None = None,
            progress: Progress | None = None, bases: Sequence[str] = ()) -> Image:
        """`bases` matter on the wire only (client.py): here every chunk already stored is reused."""
        upload_id = self.begin_upload(meta, size)
        return self.finish_upload(upload_id, src, sha256, progress)

    def begin_upload(self, meta: ImageMeta, size: int) -> str:
        """Reserve quota and an `uploading` record; returns the new image's id.

        The bytes' chunks are held in the upload's name (chunks.py), so whatever an
        interrupted upload leaves behind can be found and collected.
        """
        user = self.whoami()
        checked(ByteCount, size, "size")  # the same rule and message as the service's
        if meta.parent:
            self._find(meta.parent, user)
        self.collect_stale_uploads()
        image_id, stamp = new_id(), now()
        doc: dict[str, Any] = {
            "_id": image_id, "name": meta.name, "name_words": listing.name_words(meta.name), "owner": user.name,
            "os": meta.os.model_dump(),
            "format": meta.format, "size": size, "sha256": None, "status": str(Status.UPLOADING),
            "visibility": str(Visibility.PUBLIC if meta.public else Visibility.PRIVATE),
            "shared_with": [], "tags": sorted(set(meta.tags)), "description": meta.description,
            "created": stamp, "updated": stamp, "last_access": None, "access_count": 0,
            "parent": meta.parent, "provenance": meta.provenance, "vetting": {}, "quarantined": [],
            "verdict": listing.verdict_of({}),
            "accepted_rules": {}, "registrations": [],
            "upload": {"host": HOST, "pid": os.getpid(), "heartbeat": stamp},
        }
        self.accounts.reserve(user.name, size)
        try:
            self.images.insert_one(doc)
        except BaseException:
            self.accounts.release(user.name, size)
            raise
        return image_id

    def finish_upload(self, upload_id: str, src: BinaryIO, sha256: str | None = None,
                      progress: Progress | None = None) -> Image:
        """Stream the bytes of a begun upload; on any failure the record, bytes and quota go."""
        user = self.whoami()
        # Claimed atomically: a second request for the same upload must not write into its file.
        doc = self.images.find_one_and_update(
            {"_id": upload_id, **self._feeder(upload_id, user), "status": str(Status.UPLOADING),
             "upload.streaming": {"$ne": True}},
            {"$set": {"upload.streaming": True, "upload.heartbeat": now()}})
        if doc is None:
            raise NotFound(f"no upload {upload_id} waiting for its bytes", hint="start the upload again")
        size = doc["size"]
        with ExitStack() as undo:
            undo.callback(self.accounts.release, doc["owner"], size)
            undo.callback(self.images.delete_one, {"_id": upload_id})

            def beat() -> None:
                self.images.update_one({"_id": upload_id}, {"$set": {"upload.heartbeat": now()}})

            written = self.blobs.write(src, size, upload_id, progress, beat)
            undo.callback(self.blobs.abandon, upload_id, set(written.chunks))
            digest = written.sha256
            if sha256 and digest != sha256.lower():
                raise IntegrityError(f"checksum mismatch: got sha256 {digest[:16]}…, expected {sha256[:16]}…",
                                     hint="the file changed or was damaged in transit; upload again")
            self.blobs.commit(upload_id, written)
            undo.pop_all()
        try:
            done = self._updated(upload_id, {"$set": {"status": self._stored_status(doc), "sha256": digest},
                                             "$unset": {"upload": ""}})
        except NotFound:  # collected as stalled while it was still writing: give its reference back
            self.blobs.release(digest)
            raise
        self._log_stored(done, doc.get("upload") or {}, size=size, sha256=digest, new_bytes=written.new_bytes)
        return to_image(done)

    def open(self, image_id: str, offset: int = 0, length: int | None = None) -> tuple[Image, Iterator[bytes]]:
        """The record and an iterator over its bytes; counts as one access."""
        user = self.whoami()
        doc = self._find(image_id, user)
        chunks = self.blobs.read(doc["sha256"], offset, length)
        doc = self._updated(image_id, {"$set": {"last_access": now()}, "$inc": {"access_count": 1}})
        self._log("download", doc, offset=offset)
        return to_image(doc), chunks

    def get(self, image_id: str, dest: BinaryIO, offset: int = 0, progress: Progress | None = None) -> Image:
        import hashlib

        image, chunks = self.open(image_id, offset)
        digest = hashlib.sha256() if offset == 0 else None
        for chunk in chunks:
            dest.write(chunk)
            if digest:
                digest.update(chunk)
            if progress:
                progress(len(chunk))
        if digest and digest.hexdigest() != image.sha256:
            raise IntegrityError(f"image {image_id} failed its checksum on download",
                                 hint="the stored bytes are damaged; re-upload the image")
        return image

    def list(self, query: ImageQuery | None = None) -> builtins.list[ImageSummary]:
        q = query or ImageQuery()
        user = self.whoami()
        filt: dict[str, Any] = {}
        filt["status"] = str(q.status) if q.status else {"$ne": str(Status.UPLOADING)}
        for field, key in (("name", "name"), ("os_family", "os.family"), ("release", "os.release"),
                           ("arch", "os.arch"), ("format", "format"), ("owner", "owner"), ("tag", "tags"),
                           ("parent", "parent"), ("visibility", "visibility"),
                           ("registered", "registrations.target")):
            value = getattr(q, field)
            if value:
                filt[key] = str(value)  # an enum's value: what the record holds, and what the server is sent
        filt.update(_catalog_filters(q))
        key = q.sort.lstrip("-+")
        # the cursor as this user may read it (another's private image is "not found", as everywhere)
        after = self._cursor(q.after, user) if q.after else None
        before = self._cursor(q.before, user) if q.before else None
        docs = listing.page(self.images, self._readable_branches(user), filt, key, q.sort.startswith("-"),
                            q.skip, q.limit, now(), shown=SUMMARY_FIELDS, after=after, before=before)
        return [to_summary(d) for d in docs]

    def _cursor(self, image_id: str, user: User) -> dict[str, Any]:
        """A page's cursor image: its sort keys only (a record holds kilobytes of provenance)."""
        try:
            return self._find(image_id, user, ["created", *SORT_KEYS])
        except NotFound:
            raise NotFound(f"no image {image_id} to list from", hint="it was removed, or is not yours to read: "
                                                                      "list from the first page") from None

    def show(self, image_id: str) -> Image:
        return to_image(self._find(image_id, self.whoami()))

    def modify(self, image_id: str, changes: ImageChanges) -> Image:
        user = self.whoami()
        doc = self._find_owned(image_id, user, "modify")
        sets: dict[str, Any] = {"updated": now()}
        for field in ("name", "description", "format"):
            if getattr(changes, field) is not None:
                sets[field] = getattr(changes, field)
        if changes.name is not None:
            sets["name_words"] = listing.name_words(changes.name)
        if changes.os is not None:
            sets["os"] = changes.os.model_dump()
        if changes.public is not None:
            sets["visibility"] = str(Visibility.PUBLIC if changes.public else Visibility.PRIVATE)
        tags = (set(doc.get("tags", [])) | set(changes.add_tags)) - set(changes.remove_tags)
        sets["tags"] = sorted(tags)
        doc = self._updated(image_id, {"$set": sets})
        self._log("modify", doc, changes=changes.model_dump(exclude_defaults=True))
        return to_image(doc)

    def remove(self, image_id: str, force: bool = False) -> Image:
        user = self.whoami()
        doc = self._find_owned(image_id, user, "remove")
        if doc.get("registrations") and not force:
            # any registration blocks, a reader's too: their copy on their cloud came from this image
            where = ", ".join(sorted({f"{r['target']} (by {r.get('by') or '?'})" for r in doc["registrations"]}))
            raise Conflict(f"image {image_id} is registered on {where}",
                           hint="deregister it first, or pass --force to remove it anyway")
        if self.images.delete_one({"_id": image_id}).deleted_count:
            self.blobs.release(doc["sha256"])
            self.accounts.release(doc["owner"], doc["size"])
            self._log("remove", doc, forced=bool(force and doc.get("registrations")))
        return to_image(doc)

    def share(self, image_id: str, users: builtins.list[str]) -> Image:
        return self._share(image_id, users, add=True)

    def unshare(self, image_id: str, users: builtins.list[str]) -> Image:
        return self._share(image_id, users, add=False)

    def _share(self, image_id: str, users: builtins.list[str], add: bool) -> Image:
        actor = self.whoami()
        self._find_owned(image_id, actor, "share" if add else "unshare")
        if not users:
            raise InvalidInput("name at least one user")
        for name in users:
            self.accounts.get(name)
        op = {"$addToSet": {"shared_with": {"$each": users}}} if add else \
            {"$pull": {"shared_with": {"$in": users}}}
        doc = self._updated(image_id, {**op, "$set": {"updated": now()}})
        self._log("share" if add else "unshare", doc, users=users)
        return to_image(doc)

    def history(self, image_id: str | None = None, user: str | None = None, limit: int = 100) -> builtins.list[Event]:
        actor = self.whoami()
        checked(HistoryLimit, limit, "limit")  # 0 would mean "no limit" to the database
        filt: dict[str, Any] = {}
        if image_id:
            self._find(image_id, actor)
            filt["image_id"] = image_id
        if user:
            filt["user"] = user
        if actor.role != Role.ADMIN and not image_id:
            if user and user != actor.name:
                raise Forbidden("only administrators may see other users' history")
            filt["user"] = actor.name
        # the newest events from the slices of `when` of one indexed field (see listing.py)
        key = "image_id" if "image_id" in filt else "user" if "user" in filt else None
        drivers: list[dict[str, Any]] = [{key: filt[key]}] if key else [{}]
        docs = listing.newest_first(self.events, drivers, None, lambda d: listing.matches(d, filt), limit, now(),
                                    when="when", ids_descending=True, shape=repr(filt))
        return [Event(**{k: v for k, v in d.items() if k != "_id"}) for d in docs[:limit]]

    # -- users ---------------------------------------------------------------------------

    def add_user(self, name: str, role: Role = Role.USER, quota: int | None = None) -> User:
        self._admin("add users")
        checked(ByteCount | None, quota, "quota_bytes")
        created = self.accounts.add(name, role, quota)
        self._log("user-add", None, name=name, role=str(role), quota=quota)
        return created

    def remove_user(self, name: str) -> None:
        self._admin("remove users")
        owned = self.images.count_documents({"owner": name})
        if owned:
            raise Conflict(f"user {name!r} still owns {owned} image(s)", hint="remove or hand them over first")
        self.accounts.remove(name)
        self._log("user-remove", None, name=name)

    def list_users(self) -> builtins.list[User]:
        self._admin("list users")
        return self.accounts.list()

    def set_quota(self, name: str, quota: int | None) -> User:
        self._admin("set quotas")
        checked(ByteCount | None, quota, "quota_bytes")
        user = self.accounts.update(name, quota_bytes=quota)
        self._log("user-quota", None, name=name, quota=quota, human=human(quota))
        return user

    def set_role(self, name: str, role: Role) -> User:
        self._admin("change roles")
        user = self.accounts.update(name, role=str(role))
        self._log("user-role", None, name=name, role=str(role))
        return user

    def suspend(self, name: str, suspended: bool = True) -> User:
        self._admin("suspend users")
        user = self.accounts.update(name, status="suspended" if suspended else "active")
        self._log("user-suspend" if suspended else "user-reinstate", None, name=name)
        return user

    # -- API tokens: a user manages their own, an administrator anyone's ---------------------

    def _token_owner(self, name: str | None, what: str) -> str:
        actor = self.whoami()
        name = name or actor.name
        if actor.name != name:
            require_admin(actor, what)
            self.accounts.get(name)
        return name

    def create_token(self, name: str, label: str = "", expires_in: int | None = None) -> NewToken:
        """A named token; its secret is in the result only. expires_in: seconds, None for never."""
        request = _validated(TokenRequest, {"name": label, "expires_in": expires_in})
        name = self._token_owner(name, "make tokens for other users")
        new = self.accounts.tokens.create(name, request.name, request.expires_in)
        self._log("token", None, name=name, token=new.id, label=new.name, expires=new.expires)
        return new

    def issue_token(self, name: str) -> str:
        return self.create_token(name).token

    def list_tokens(self, name: str | None = None) -> builtins.list[TokenInfo]:
        return self.accounts.tokens.list(self._token_owner(name, "see other users' tokens"))

    def revoke_token(self, name: str, token_id: str) -> TokenInfo:
        revoked = self.accounts.tokens.revoke(self._token_owner(name, "revoke other users' tokens"), token_id)
        self._log("token-revoke", None, name=revoked.user, token=revoked.id, label=revoked.name)
        return revoked

    def revoke_tokens(self, name: str) -> int:
        """Every token of `name` stops working (administrators only: a leak, a departure)."""
        self._admin("revoke all of a user's tokens")
        self.accounts.get(name)
        count = self.accounts.tokens.revoke_all(name)
        self._log("token-revoke-all", None, name=name, revoked=count)
        return count


def _catalog_filters(q: ImageQuery) -> dict[str, Any]:
    """The conditions of the catalog's facets that are not plain equalities (listing.matches reads them)."""
    filt: dict[str, Any] = {}
    if q.verdict == Verdict.NONE:  # most images: checked on what the access rule's branches read
        filt["verdict"] = {"$eq": str(Verdict.NONE)}
    elif q.verdict:  # pass or fail: few images, read by the (verdict, created) index
        filt["verdict"] = str(q.verdict)
    if q.search:
        words = listing.words_of(q.search)
        if not words:
            raise InvalidInput(f"search {q.search[:40]!r} holds no letter or digit",
                               hint="search by the starts of the name's words, e.g. deb book")
        filt["name_words"] = {"$all": words}
    return filt


def _validated(model: Any, data: dict[str, Any]) -> Any:
    """`model` made from data, or the one-line InvalidInput the service would answer with."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidInput(problem(e), hint=SCHEMA_HINT) from None
