"""Collecting what interrupted uploads leave behind (records stuck in `uploading`, their
reserved quota, the chunks they held) and reconciling chunk reference counts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rain.host.tools import pid_alive
from rain.repository.accounts import now
from rain.repository.acting import HOST, Acting
from rain.repository.models import GcReport, Status, StorageReport


class CollectorMixin(Acting):
    def _upload_over(self, up: dict[str, Any], process_only: bool = False) -> bool:
        """Whether the upload an `upload` field describes is over: its process gone (same host), or
        silent past the grace time. A pull's record (`importer`) waits out its grace time even after its
        process died, so that the next pull of the image takes it over (imports.py), unless
        `process_only`: the question that next pull asks."""
        beat = up.get("heartbeat")
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=now().tzinfo)
        gone = bool(up.get("host") == HOST and up.get("pid") and not pid_alive(int(up["pid"])))
        if gone and (process_only or not up.get("importer")):
            return True
        return beat is None or beat < now() - timedelta(seconds=self.upload_grace)

    def _stale_uploads(self) -> list[dict[str, Any]]:
        return [doc for doc in self.images.find({"status": str(Status.UPLOADING)})
                if self._upload_over(doc.get("upload") or {})]

    def collect_stale_uploads(self) -> GcReport:
        """Remove abandoned uploads: their record, their partial bytes, their quota reservation."""
        report = GcReport()
        for doc in self._stale_uploads():
            if not self.images.delete_one({"_id": doc["_id"], "status": str(Status.UPLOADING)}).deleted_count:
                continue  # finished or collected meanwhile
            file_id = (doc.get("upload") or {}).get("file_id")  # an upload begun before chunking
            if file_id is not None:
                report.bytes_freed += self.blobs.file_size(file_id)
                self.blobs.delete_file(file_id)
                report.files_removed += 1
            report.bytes_freed += self.blobs.abandon(doc["_id"])
            self.accounts.release(doc["owner"], doc["size"])
            report.uploads_removed += 1
            self._log("gc-upload", doc, reason="abandoned upload")
        report.bytes_freed += self._collect_dead_holds()
        report.bytes_freed += self.blobs.chunks.collect_partial_files()
        return report

    def _collect_dead_holds(self) -> int:
        """Chunks still held by uploads that are over: an upload killed while giving them back, or
        between recording its blob and dropping its holds. Holders are read before their records:
        an upload's record exists before its first hold."""
        holders = self.blobs.chunks.holders()
        if not holders:
            return 0
        status = {d["_id"]: d["status"] for d in self.images.find({"_id": {"$in": sorted(holders)}}, {"status": 1})}
        freed = 0
        for holder in sorted(holders):
            if holder not in status:
                freed += self.blobs.abandon(holder)
            elif status[holder] != str(Status.UPLOADING):
                self.blobs.chunks.drop_holds(holder)  # its blob holds the chunks
        return freed

    def gc(self) -> GcReport:
        """Abandoned uploads; chunk counts set to what blobs and uploads hold, unheld chunks removed;
        then any GridFS bytes nothing refers to."""
        self._admin("collect garbage")
        report = self.collect_stale_uploads()

        def uploading() -> list[dict[str, Any]]:
            return list(self.images.find({"status": str(Status.UPLOADING)}, {"upload.file_id": 1}))

        report.counts_corrected, report.chunks_removed, freed = self.blobs.chunks.reconcile(self.blobs.blob_chunks)
        report.bytes_freed += freed

        def live() -> set[Any]:
            return {d["upload"]["file_id"] for d in uploading() if d.get("upload", {}).get("file_id") is not None}

        for file_id in self.blobs.orphans(live):
            report.bytes_freed += self.blobs.file_size(file_id)
            self.blobs.delete_file(file_id)
            report.files_removed += 1
        if report.files_removed or report.uploads_removed or report.chunks_removed or report.counts_corrected:
            self._log("gc", None, **report.model_dump())
        return report

    def storage(self) -> StorageReport:
        """Logical bytes (each image counted whole, as quotas charge it) against bytes stored once."""
        self._admin("see the repository's storage")
        images = logical = 0
        for doc in self.images.find({"status": {"$ne": str(Status.UPLOADING)}}, {"size": 1}):
            images, logical = images + 1, logical + int(doc["size"])
        chunks, stored = self.blobs.chunks.stored_bytes()
        stored += sum(int(d["size"]) for d in self.blobs.blobs.find({"file_id": {"$exists": True}}, {"size": 1}))
        return StorageReport(images=images, logical_bytes=logical, stored_bytes=stored, chunks=chunks,
                             dedup_ratio=round(logical / stored, 3) if stored else 1.0)
