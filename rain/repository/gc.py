"""Collecting what interrupted uploads leave behind: records stuck in `uploading`,
their reserved quota and their partial GridFS bytes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rain.host.tools import pid_alive
from rain.repository.accounts import now
from rain.repository.acting import HOST, Acting
from rain.repository.models import GcReport, Status


class CollectorMixin(Acting):
    def _stale_uploads(self) -> list[dict[str, Any]]:
        cutoff = now() - timedelta(seconds=self.upload_grace)
        stale = []
        for doc in self.images.find({"status": str(Status.UPLOADING)}):
            up = doc.get("upload") or {}
            beat = up.get("heartbeat")
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=cutoff.tzinfo)
            dead_here = up.get("host") == HOST and up.get("pid") and not pid_alive(int(up["pid"]))
            if dead_here or beat is None or beat < cutoff:
                stale.append(doc)
        return stale

    def collect_stale_uploads(self) -> GcReport:
        """Remove abandoned uploads: their record, their partial bytes, their quota reservation."""
        report = GcReport()
        for doc in self._stale_uploads():
            if not self.images.delete_one({"_id": doc["_id"], "status": str(Status.UPLOADING)}).deleted_count:
                continue  # finished or collected meanwhile
            file_id = (doc.get("upload") or {}).get("file_id")
            if file_id is not None:
                report.bytes_freed += self.blobs.file_size(file_id)
                self.blobs.delete_file(file_id)
                report.files_removed += 1
            self.accounts.release(doc["owner"], doc["size"])
            report.uploads_removed += 1
            self._log("gc-upload", doc, reason="abandoned upload")
        return report

    def gc(self) -> GcReport:
        """Abandoned uploads, then any GridFS bytes no blob or live upload refers to."""
        self._admin("collect garbage")
        report = self.collect_stale_uploads()
        def live() -> set[Any]:
            return {d["upload"]["file_id"] for d in self.images.find({"status": str(Status.UPLOADING)},
                                                                     {"upload.file_id": 1})
                    if d.get("upload", {}).get("file_id") is not None}

        for file_id in self.blobs.orphans(live):
            report.bytes_freed += self.blobs.file_size(file_id)
            self.blobs.delete_file(file_id)
            report.files_removed += 1
        if report.files_removed or report.uploads_removed:
            self._log("gc", None, **report.model_dump())
        return report
