"""Records of launched machines: what `fg-image launch` started, for `fg-image instances`.

Every launch is recorded for the user who ran it, so `instances list` shows what
they have running on any target (which image, where, since when) and
`instances stop` can release it. Who sees what:

- A launch needs an image its user may read; one they may not is "no image ID",
  as everywhere.
- A user lists and removes their own launches. Someone else's launch id is
  "no launch ID" to them, exactly as an id that does not exist, so ids do not leak.
- An administrator lists everyone's (`everyone=True`; anyone else is refused)
  and may remove anyone's.

The records live in the `launches` collection, one document per launch. The
input is checked again here (not only where it was made): a model built with
model_construct or changed after it was made must not reach the database. The
HTTP client checks it the same way before sending, so a detail only the Store
would refuse (a datetime, which JSON would turn into text) is refused by both.
"""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection

from rain.errors import NotFound
from rain.repository.accounts import now, require_admin
from rain.repository.acting import Acting
from rain.repository.fields import checked
from rain.repository.models import Launch, LaunchId, LaunchIn, Role, valid_launch

INDEXES = [[("owner", 1), ("started", -1)]]
"""What a user's own list reads by."""
NEWEST_FIRST = [("started", -1), ("_id", -1)]


def to_launch(doc: dict[str, Any]) -> Launch:
    return Launch(id=doc["_id"], **{k: v for k, v in doc.items() if k != "_id"})


class LaunchesMixin(Acting):
    @property
    def _launch_docs(self) -> Collection:
        return self.db["launches"]

    def add_launch(self, launch: LaunchIn) -> Launch:
        """Record a launch for the acting user: a fresh id, owner = the user, started = now."""
        from rain.repository.store import new_id  # store.py imports this module

        user = self.whoami()
        launch = valid_launch(launch)
        image = self._find(launch.image, user)
        launch_id = new_id()
        doc = {"_id": launch_id, **launch.model_dump(), "owner": user.name, "started": now()}
        self._launch_docs.insert_one(doc)
        self._log("launch", image, launch=launch_id, target=launch.target, site=launch.site,
                  machines=len(launch.machines))
        stored = self._launch_docs.find_one({"_id": launch_id})  # as stored: times to the millisecond
        return to_launch(stored if stored is not None else doc)

    def launches(self, everyone: bool = False) -> list[Launch]:
        """The acting user's launches, newest first; `everyone`: all users' (administrators only)."""
        user = self.whoami()
        if everyone:
            require_admin(user, "see other users' launches")
        docs = self._launch_docs.find({} if everyone else {"owner": user.name}).sort(NEWEST_FIRST)
        return [to_launch(d) for d in docs]

    def remove_launch(self, launch_id: str) -> Launch:
        """The launch's record, removed: its owner's, or anyone's for an administrator."""
        user = self.whoami()
        checked(LaunchId, launch_id, "launch id")
        match: dict[str, Any] = {"_id": launch_id}
        if user.role != Role.ADMIN:
            match["owner"] = user.name
        doc = self._launch_docs.find_one_and_delete(match)
        if doc is None:
            raise NotFound(f"no launch {launch_id}", hint="see your launches with `fg-image instances list`")
        image = self.images.find_one({"_id": doc["image"]}, {"name": 1}) or {"_id": doc["image"]}
        self._log("release", image, launch=launch_id, target=doc["target"], owner=doc["owner"],
                  machines=len(doc.get("machines", [])))
        return to_launch(doc)
