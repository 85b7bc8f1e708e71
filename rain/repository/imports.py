"""The receiving side of `repo pull` (pull.py): an image from another Rain repository enters this one
under its own id, owner and lineage, through the same upload record, chunk holds and verified commit
as any delta upload (delta.py), so it appears whole or not at all.

Only an administrator may pull: the image keeps its owner, visibility and sharing, so user names are
taken to mean the same people at both sites. The owner's account is created here if it is missing
(without tokens), and the owner's quota is charged the image's logical size, as for an upload.
Registrations stay behind: they name the other site's clouds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pymongo.errors import DuplicateKeyError

from rain.errors import Conflict, InvalidInput
from rain.repository.accounts import now
from rain.repository.acting import HOST
from rain.repository.gc import CollectorMixin
from rain.repository.listing import name_words, verdict_of
from rain.repository.models import ID_RE, Image, Status


@dataclass
class Began:
    """An import begun (or taken over from a pull that was killed) under the image's own id."""

    upload_id: str
    resumed: bool = False
    created_owner: bool = False


class ImportMixin(CollectorMixin):
    def present(self, image: Image) -> bool:
        """Whether this repository has `image` already, with the same bytes. Conflict if it has
        another image under that id."""
        doc = self.images.find_one({"_id": image.id}, {"sha256": 1, "status": 1, "name": 1})
        if doc is None or doc.get("status") == str(Status.UPLOADING):
            return False
        if doc.get("sha256") != image.sha256:
            raise Conflict(f"image {image.id} exists here with other bytes ({doc.get('name')!r}, sha256 "
                           f"{str(doc.get('sha256'))[:16]}…)", hint="remove it here first, or pull into "
                           "another repository")
        return True

    def begin_import(self, image: Image, source: str) -> Began | None:
        """The upload record of a pulled image, with everything but its bytes: the owner's quota is
        reserved, and the chunks sent for it are held under its id until commit_upload. None when
        the image is here already with the same bytes."""
        admin = self._admin("pull images from another repository")
        if not ID_RE.match(image.id) or image.status == Status.UPLOADING or not image.sha256:
            raise InvalidInput(f"the source offers image {image.id[:40]!r} in state {image.status} without "
                               "bytes to copy", hint="pull it once its upload has finished there")
        if self.present(image):
            return None
        taken = self._take_over(image.id, admin.name)
        if taken:
            return Began(image.id, resumed=True)
        created = False
        if not self.accounts.exists(image.owner):
            self.accounts.add(image.owner)
            self._log("user-add", None, name=image.owner, reason=f"owner of image {image.id} pulled from {source}")
            created = True
        self.collect_stale_uploads()
        stamp = now()
        doc: dict[str, Any] = {
            "_id": image.id, "name": image.name, "name_words": name_words(image.name), "owner": image.owner,
            "os": image.os.model_dump(),
            "format": image.format, "size": image.size, "sha256": None, "status": str(Status.UPLOADING),
            "visibility": str(image.visibility), "shared_with": list(image.shared_with), "tags": list(image.tags),
            "description": image.description, "created": image.created, "updated": stamp, "last_access": None,
            "access_count": 0, "parent": image.parent, "provenance": image.provenance,
            "vetting": image.vetting, "quarantined": list(image.quarantined),
            "verdict": verdict_of({"vetting": image.vetting, "quarantined": image.quarantined}),
            "accepted_rules": image.accepted_rules, "registrations": [],
            "origin": {"url": source, "pulled": stamp, "by": admin.name},
            "upload": {"host": HOST, "pid": os.getpid(), "heartbeat": stamp, "importer": admin.name, "source": source},
        }
        self.accounts.reserve(image.owner, image.size)
        try:
            self.images.insert_one(doc)
        except DuplicateKeyError:
            self.accounts.release(image.owner, image.size)
            raise Conflict(f"image {image.id} is being pulled or uploaded here right now",
                           hint="wait for that to finish, then pull again") from None
        except BaseException:
            self.accounts.release(image.owner, image.size)
            raise
        return Began(image.id, created_owner=created)

    def _take_over(self, image_id: str, admin: str) -> bool:
        """Adopt an unfinished pull of this image that is over (its process gone, or silent past the
        grace time), keeping the chunks it already holds: the pull resumes where it stopped."""
        doc = self.images.find_one({"_id": image_id, "status": str(Status.UPLOADING)})
        if doc is None:
            return False
        up = doc.get("upload") or {}
        if not up.get("importer"):
            raise Conflict(f"image {image_id} is being uploaded here under the same id",
                           hint="wait for that upload to finish, then pull again")
        if not self._upload_over(up, process_only=True):
            raise Conflict(f"image {image_id} is being pulled here right now", hint="wait for that pull to finish")
        adopted = self.images.update_one(
            {"_id": image_id, "status": str(Status.UPLOADING), "upload.pid": up.get("pid"),
             "upload.heartbeat": up.get("heartbeat")},
            {"$set": {"upload.host": HOST, "upload.pid": os.getpid(), "upload.heartbeat": now(),
                      "upload.importer": admin, "upload.streaming": False}})
        if adopted.matched_count != 1:
            raise Conflict(f"image {image_id} is being pulled here right now", hint="wait for that pull to finish")
        self.blobs.chunks.keep_recorded(image_id)
        # what it sent counts against the declared size as far as it was stored; the rest may be sent again
        held = sorted(self.blobs.chunks.held(image_id))
        sent = sum(int(d["size"]) for d in self.blobs.chunks.chunks.find({"_id": {"$in": held}}, {"size": 1}))
        self.images.update_one({"_id": image_id}, {"$set": {"upload.sent": sent}})
        return True

