"""Acting as one user: who that is, what they may read or change, and the history they leave."""

from __future__ import annotations

import socket
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database

from rain.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from rain.repository.accounts import Accounts, now, require_active, require_admin
from rain.repository.blobs import BlobStore
from rain.repository.listing import matches
from rain.repository.models import ID_RE, SUMMARY_FIELDS, Image, ImageSummary, Role, Status, User, Visibility

HOST = socket.gethostname()
VISITOR = "(visitor)"
"""Who the history names for what a web visitor who has not signed in did (downloads of public images):
no user name can be this."""


class Acting:
    """State and access rules shared by the Store and its parts (records, gc)."""

    def __init__(self, db: Database, actor: str, upload_grace: int = 600, known: User | None = None) -> None:
        """`known`: the actor's record as just read (the service's, from the request's token): then
        a request reads it once, not again for each rule it checks."""
        self.db = db
        self.actor_name = actor
        self.known = known if known is not None and known.name == actor else None
        self.accounts = Accounts(db)
        self.blobs = BlobStore(db)
        self.images = db["images"]
        self.events = db["events"]
        self.upload_grace = upload_grace
        self._feeders: dict[str, dict[str, Any]] = {}  # an upload's feeder never changes: asked once

    # -- who is acting -------------------------------------------------------------------

    def whoami(self) -> User:
        if self.known is not None:
            require_active(self.known)
            return self.known
        try:
            user = self.accounts.get(self.actor_name)
        except NotFound:  # as the service answers for a removed user's token
            raise Unauthorized(f"user {self.actor_name!r} is not known to this repository",
                               hint="ask an administrator to add you (`fg-image users add NAME`)") from None
        require_active(user)
        return user

    def _admin(self, what: str) -> User:
        user = self.whoami()
        require_admin(user, what)
        return user

    def _log(self, action: str, image: dict[str, Any] | None = None, **detail: Any) -> None:
        self.events.insert_one({"when": now(), "user": self.actor_name or VISITOR, "action": action,
                                "image_id": image["_id"] if image else None,
                                "image_name": image.get("name") if image else None, "detail": detail})

    # -- access rules --------------------------------------------------------------------

    @staticmethod
    def _readable_branches(user: User) -> list[dict[str, Any]]:
        """The images `user` may read, as alternatives: all of them, or own, public, shared with them."""
        if user.role == Role.ADMIN:
            return [{}]
        return [{"owner": user.name}, {"visibility": str(Visibility.PUBLIC)}, {"shared_with": user.name}]

    @classmethod
    def _may_read(cls, doc: dict[str, Any], user: User) -> bool:
        return any(matches(doc, branch) for branch in cls._readable_branches(user))

    def _find(self, image_id: str, user: User, fields: list[str] | None = None) -> dict[str, Any]:
        """The image's record if `user` may read it (NotFound otherwise); `fields`: only these of it (and
        what the access rule reads)."""
        if not ID_RE.match(image_id or ""):
            raise InvalidInput(f"bad image id {image_id!r}", hint="ids are 12 hex digits; see `fg-image list`")
        # by _id alone, and the rule checked here: the embedded server scans the whole catalog for a
        # query with an $or (3.5 s with 100,000 images), even beside an _id
        rule = {key for branch in self._readable_branches(user) for key in branch}
        shown = None if fields is None else [*fields, "status", *sorted(rule)]
        doc = self.images.find_one({"_id": image_id}, shown)
        if doc is None or doc.get("status") == str(Status.UPLOADING) or not self._may_read(doc, user):
            raise NotFound(f"no image {image_id}", hint="check the id with `fg-image list`")
        return doc

    def _find_owned(self, image_id: str, user: User, what: str) -> dict[str, Any]:
        doc = self._find(image_id, user)
        if doc["owner"] != user.name and user.role != Role.ADMIN:
            raise Forbidden(f"only the owner ({doc['owner']}) or an administrator may {what} image {image_id}")
        return doc

    def _feeder(self, upload_id: str, user: User, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        """Who may send an upload's bytes: its owner, or for a pull (pull.py) the administrator running it.
        `doc`: the upload's record, when already read."""
        if user.role != Role.ADMIN:
            return {"owner": user.name}
        if upload_id not in self._feeders:
            if doc is None:
                doc = self.images.find_one({"_id": upload_id}, {"upload.importer": 1})
            importer = doc is not None and (doc.get("upload") or {}).get("importer")
            self._feeders[upload_id] = {"upload.importer": user.name} if importer else {"owner": user.name}
        return self._feeders[upload_id]

    @staticmethod
    def _stored_status(doc: dict[str, Any]) -> str:
        """The status of a finished upload: quarantined when it arrives quarantined (a pulled image
        that failed vetting at its source stays so here)."""
        return str(Status.QUARANTINED if doc.get("quarantined") else Status.AVAILABLE)

    def _log_stored(self, doc: dict[str, Any], upload: dict[str, Any], **detail: Any) -> None:
        """The history event of a finished upload: "upload", or "pull" with where it came from."""
        if upload.get("importer"):
            self._log("pull", doc, source=upload.get("source"), owner=doc["owner"], **detail)
        else:
            self._log("upload", doc, **detail)

    def _updated(self, image_id: str, update: dict[str, Any]) -> dict[str, Any]:
        doc = self.images.find_one_and_update({"_id": image_id}, update, return_document=ReturnDocument.AFTER)
        if doc is None:
            raise NotFound(f"no image {image_id}", hint="it was removed meanwhile; see `fg-image list`")
        return dict(doc)


def to_image(doc: dict[str, Any]) -> Image:
    data = {k: v for k, v in doc.items() if k not in ("_id", "upload")}
    return Image(id=doc["_id"], **data)


def to_summary(doc: dict[str, Any]) -> ImageSummary:
    return ImageSummary(id=doc["_id"], **{k: doc[k] for k in SUMMARY_FIELDS if k != "_id" and k in doc})
