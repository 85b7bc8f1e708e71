"""What the register stage records on an image: vetting reports, quarantine, registrations (and rebuilds).

Who may write what (issue #9, defect 6). The registrar runs as the user who
started it, so every record says whose run it was:

- The image's own verdict per target (`vetting`, `quarantined`, its status)
  changes only by a run of its owner or an administrator. A reader's run (the
  image is shared with them, or public) is kept as that reader's report in
  `reader_vetting`: a failing one does not quarantine someone else's image, and
  a passing one does not lift a quarantine.
- Accepting a vetting rule for an image (the quarantine override) is for
  administrators only.
- Anyone who may read an image may record where they registered it; each
  registration is theirs (`by`), and only they or an administrator may remove it.

Target names become keys of the record (`vetting.<target>`), so they are
checked against a strict pattern first: "a.b" or "$x" would be field paths.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import ValidationError

from rain.errors import Forbidden, InvalidInput, NotFound
from rain.repository.accounts import now, require_admin
from rain.repository.acting import Acting, to_image
from rain.repository.fields import SCHEMA_HINT, Document, TargetName, checked, problem
from rain.repository.listing import verdict_of
from rain.repository.models import Image, ReproductionIn, Role, Status, User

RULE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
READER_REPORTS_KEPT = 200
"""The newest reader reports an image keeps: readers cannot grow someone else's record without bound."""
REPRODUCTIONS_KEPT = 50
VettingReport = Annotated[dict[str, Any], Document("vetting report")]
RegistrationDetail = Annotated[dict[str, Any], Document("registration detail")]


def _target(target: str) -> str:
    return checked(TargetName, target, "target")


def _report(report: dict[str, Any]) -> str:
    """The report's verdict, once the report is known to be storable as it is."""
    if not isinstance(report, dict):
        raise InvalidInput("a vetting report is a JSON object", hint=SCHEMA_HINT)
    checked(VettingReport, report, "vetting report")
    verdict = report.get("verdict")
    if verdict not in ("pass", "fail"):
        raise InvalidInput(f"vetting verdict must be 'pass' or 'fail', not {verdict!r}")
    return str(verdict)


def _judges(doc: dict[str, Any], user: User) -> bool:
    """Whether this user's vetting run decides the image's own verdict."""
    return doc["owner"] == user.name or user.role == Role.ADMIN


class RecordsMixin(Acting):
    def _update(self, image_id: str, update: dict[str, Any]) -> dict[str, Any]:
        doc = self._updated(image_id, update)
        # status and verdict follow the vetting reports and the quarantine list
        follows = {"status": str(Status.QUARANTINED if doc.get("quarantined") else Status.AVAILABLE),
                   "verdict": verdict_of(doc)}
        if any(doc.get(k) != v for k, v in follows.items()):
            doc = self._updated(image_id, {"$set": follows})
        return doc

    def set_vetting(self, image_id: str, target: str, report: dict[str, Any]) -> Image:
        """Store a vetting run's report. The owner's or an admin's sets the image's verdict for
        the target (a fail quarantines it); anyone else's is kept as theirs and changes nothing."""
        user = self.whoami()
        _target(target)
        verdict = _report(report)
        doc = self._find(image_id, user)
        if not _judges(doc, user):
            return self._reader_vetting(image_id, user, target, verdict, report)
        quarantine = {"$addToSet": {"quarantined": target}} if verdict == "fail" else \
            {"$pull": {"quarantined": target}}
        entry = {**report, "by": user.name}
        doc = self._update(image_id, {"$set": {f"vetting.{target}": entry, "updated": now()}, **quarantine})
        self._log("vet", doc, target=target, verdict=verdict)
        return to_image(doc)

    def _reader_vetting(self, image_id: str, user: User, target: str, verdict: str,
                        report: dict[str, Any]) -> Image:
        entry = {"user": user.name, "target": target, "verdict": verdict, "when": now(), "report": report}
        self._updated(image_id, {"$pull": {"reader_vetting": {"user": user.name, "target": target}}})
        doc = self._updated(image_id, {"$push": {"reader_vetting": {"$each": [entry],
                                                                    "$slice": -READER_REPORTS_KEPT}}})
        self._log("vet", doc, target=target, verdict=verdict, reader=True)
        return to_image(doc)

    def accept_rule(self, image_id: str, target: str, rule_id: str) -> Image:
        """An administrator accepts one vetting rule's finding for one image and target."""
        require_admin(self.whoami(), "accept vetting findings")
        _target(target)
        if not isinstance(rule_id, str) or not RULE_RE.fullmatch(rule_id):
            raise InvalidInput(f"bad rule id {rule_id!r}", hint="rule ids are like root-login; "
                               "`fg-image vet ID --target T` names them")
        self._find(image_id, self.whoami())
        doc = self._update(image_id, {"$addToSet": {f"accepted_rules.{target}": rule_id}})
        self._log("accept-rule", doc, target=target, rule=rule_id)
        return to_image(doc)

    def add_registration(self, image_id: str, target: str, site: str, remote_id: str,
                         detail: dict[str, Any] | None = None) -> Image:
        """Record where the acting user registered the image; the record is theirs."""
        user = self.whoami()
        _target(target)
        checked(RegistrationDetail, detail or {}, "registration detail")
        self._find(image_id, user)
        entry = {"target": target, "site": site, "remote_id": remote_id, "when": now(),
                 "detail": detail or {}, "by": user.name}
        doc = self._update(image_id, {"$push": {"registrations": entry}})
        self._log("register", doc, target=target, site=site, remote_id=remote_id)
        return to_image(doc)

    def record_export(self, image_id: str, target: str, detail: dict[str, Any] | None = None) -> Image:
        """Note in the history that the acting user wrote the image out for a target (`register --output`):
        the copy left the repository's sight, so the image's record stays as it was."""
        user = self.whoami()
        _target(target)
        checked(RegistrationDetail, detail or {}, "export detail")
        doc = self._find(image_id, user)
        self._log("export", doc, target=target, detail=detail or {})
        return to_image(doc)

    def add_reproduction(self, image_id: str, found: dict[str, Any]) -> Image:
        """Record a rebuild of the image by the acting user (anyone who may read it): theirs, kept with the
        newest REPRODUCTIONS_KEPT; it changes nothing else on the image."""
        user = self.whoami()
        try:
            entry = ReproductionIn.model_validate(found).model_dump()
        except ValidationError as e:
            raise InvalidInput(f"reproduction: {problem(e)}", hint=SCHEMA_HINT) from None
        self._find(image_id, user)
        entry.update(when=now(), by=user.name)
        doc = self._updated(image_id, {"$push": {"reproductions": {"$each": [entry],
                                                                   "$slice": -REPRODUCTIONS_KEPT}}})
        self._log("rebuild", doc, identical=entry["identical"], builder=entry["builder"])
        return to_image(doc)

    def remove_registration(self, image_id: str, target: str, site: str = "") -> Image:
        """Drop the acting user's registrations on target (and site). An administrator with none
        there drops anyone's; one with their own there drops only those (a deregister of theirs
        must not take another user's record with it)."""
        user = self.whoami()
        _target(target)
        doc = self._find(image_id, user)
        match: dict[str, Any] = {"target": target}
        if site:
            match["site"] = site
        found = [r for r in doc.get("registrations", []) if all(r.get(k) == v for k, v in match.items())]
        if any(r.get("by") == user.name for r in found):
            match["by"] = user.name
        elif found and user.role != Role.ADMIN:
            owners = ", ".join(sorted({str(r.get("by") or "?") for r in found}))
            raise Forbidden(f"the registration of image {image_id} on {target} is {owners}'s",
                            hint="only the user who registered it or an administrator may remove it")
        if not found:
            raise NotFound(f"image {image_id} has no registration on {target}" + (f" site {site}" if site else ""),
                           hint=f"`fg-image registrations {image_id}` lists where it is registered")
        doc = self._update(image_id, {"$pull": {"registrations": match}})
        self._log("deregister", doc, target=target, site=site)
        return to_image(doc)
