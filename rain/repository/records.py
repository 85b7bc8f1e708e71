"""What the register stage records on an image: vetting reports, quarantine, registrations."""

from __future__ import annotations

from typing import Any

from rain.errors import InvalidInput
from rain.repository.accounts import now, require_admin
from rain.repository.acting import Acting, to_image
from rain.repository.models import Image, Status


class RecordsMixin(Acting):
    def _update(self, image_id: str, update: dict[str, Any]) -> dict[str, Any]:
        doc = self._updated(image_id, update)
        # status follows the quarantine list
        status = str(Status.QUARANTINED if doc.get("quarantined") else Status.AVAILABLE)
        if doc["status"] != status:
            doc = self._updated(image_id, {"$set": {"status": status}})
        return doc

    def set_vetting(self, image_id: str, target: str, report: dict[str, Any]) -> Image:
        """Store a vetting report; a failing verdict quarantines the image for that target."""
        self._find(image_id, self.whoami())
        verdict = report.get("verdict")
        if verdict not in ("pass", "fail"):
            raise InvalidInput(f"vetting verdict must be 'pass' or 'fail', not {verdict!r}")
        quarantine = {"$addToSet": {"quarantined": target}} if verdict == "fail" else \
            {"$pull": {"quarantined": target}}
        doc = self._update(image_id, {"$set": {f"vetting.{target}": report, "updated": now()}, **quarantine})
        self._log("vet", doc, target=target, verdict=verdict)
        return to_image(doc)

    def accept_rule(self, image_id: str, target: str, rule_id: str) -> Image:
        """An administrator accepts one vetting rule's finding for one image and target."""
        require_admin(self.whoami(), "accept vetting findings")
        self._find(image_id, self.whoami())
        doc = self._update(image_id, {"$addToSet": {f"accepted_rules.{target}": rule_id}})
        self._log("accept-rule", doc, target=target, rule=rule_id)
        return to_image(doc)

    def add_registration(self, image_id: str, target: str, site: str, remote_id: str,
                         detail: dict[str, Any] | None = None) -> Image:
        self._find(image_id, self.whoami())
        entry = {"target": target, "site": site, "remote_id": remote_id, "when": now(),
                 "detail": detail or {}, "by": self.actor_name}
        doc = self._update(image_id, {"$push": {"registrations": entry}})
        self._log("register", doc, target=target, site=site, remote_id=remote_id)
        return to_image(doc)

    def remove_registration(self, image_id: str, target: str, site: str = "") -> Image:
        self._find(image_id, self.whoami())
        match: dict[str, Any] = {"target": target}
        if site:
            match["site"] = site
        doc = self._update(image_id, {"$pull": {"registrations": match}})
        self._log("deregister", doc, target=target, site=site)
        return to_image(doc)
