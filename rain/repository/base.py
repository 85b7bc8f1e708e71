"""The Repository interface: store.Store (pymongo) and client.Client (HTTP) both satisfy it."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from rain.repository.models import (
    Event,
    GcReport,
    Image,
    ImageChanges,
    ImageMeta,
    ImageQuery,
    ImageSummary,
    Launch,
    LaunchIn,
    NewToken,
    Role,
    StorageReport,
    TokenInfo,
    User,
)

Progress = Callable[[int], None]
"""Called with the number of bytes just moved."""


class Repository(Protocol):
    """A repository as seen by one user; every call is authorized as that user."""

    def whoami(self) -> User: ...

    def put(self, src: BinaryIO, meta: ImageMeta, size: int, sha256: str | None = None,
            progress: Progress | None = None, bases: Sequence[str] = ()) -> Image:
        """Store `size` bytes from src; the image becomes available only once stored and checked.
        `bases`: images the caller may read whose chunks need not be sent again (the parent always is)."""

    def get(self, image_id: str, dest: BinaryIO, offset: int = 0,
            progress: Progress | None = None) -> Image:
        """Stream the image's bytes from `offset` into dest, verifying sha256 on a full read."""

    def list(self, query: ImageQuery | None = None) -> builtins.list[ImageSummary]:
        """The images the user may read that match, as summaries (`show` gives one whole)."""
    def show(self, image_id: str) -> Image: ...
    def modify(self, image_id: str, changes: ImageChanges) -> Image: ...
    def remove(self, image_id: str, force: bool = False) -> Image: ...
    def share(self, image_id: str, users: builtins.list[str]) -> Image: ...
    def unshare(self, image_id: str, users: builtins.list[str]) -> Image: ...
    def history(self, image_id: str | None = None, user: str | None = None,
                limit: int = 100) -> builtins.list[Event]: ...

    def add_user(self, name: str, role: Role = Role.USER, quota: int | None = None) -> User: ...
    def remove_user(self, name: str) -> None: ...
    def list_users(self) -> builtins.list[User]: ...
    def set_quota(self, name: str, quota: int | None) -> User: ...
    def set_role(self, name: str, role: Role) -> User: ...
    def suspend(self, name: str, suspended: bool = True) -> User: ...
    def gc(self) -> GcReport: ...
    def storage(self) -> StorageReport: ...

    # What the register stage records; see records.py for who may write what.
    def set_vetting(self, image_id: str, target: str, report: dict[str, Any]) -> Image:
        """The owner's or an admin's run sets the image's verdict; a reader's is kept as theirs."""

    def accept_rule(self, image_id: str, target: str, rule_id: str) -> Image:
        """Administrators only: accept one rule's finding for one image and target."""

    def add_registration(self, image_id: str, target: str, site: str, remote_id: str,
                         detail: dict[str, Any] | None = None) -> Image: ...

    def record_export(self, image_id: str, target: str, detail: dict[str, Any] | None = None) -> Image:
        """A history entry: the image was adapted and written to a file for `target` (nothing else changes)."""

    def remove_registration(self, image_id: str, target: str, site: str = "") -> Image:
        """Only the user's own registrations; an administrator's removes anyone's."""

    def add_reproduction(self, image_id: str, found: dict[str, Any]) -> Image:
        """`fg-image rebuild`'s outcome (models.ReproductionIn), recorded as the acting user's."""

    # Launched machines (`fg-image launch`, `fg-image instances`); see launches.py for who sees what.
    def add_launch(self, launch: LaunchIn) -> Launch:
        """Record a launch for the acting user (fresh id, owner, started = now); the image must be
        one they may read."""

    def launches(self, everyone: bool = False) -> builtins.list[Launch]:
        """The acting user's launches, newest first; `everyone`: all users' (administrators only)."""

    def remove_launch(self, launch_id: str) -> Launch:
        """The launch's record, removed: only its owner's (anyone else's is not found) or, for an
        administrator, anyone's."""

    # API tokens: a user manages their own, an administrator anyone's.
    def issue_token(self, name: str) -> str:
        """A new unnamed, non-expiring token's secret (what `fg-image users token NAME` always made)."""

    def create_token(self, name: str, label: str = "", expires_in: int | None = None) -> NewToken: ...
    def list_tokens(self, name: str | None = None) -> builtins.list[TokenInfo]: ...
    def revoke_token(self, name: str, token_id: str) -> TokenInfo: ...

    def revoke_tokens(self, name: str) -> int:
        """Administrators only: every token of `name` stops working; returns how many there were."""


if TYPE_CHECKING:  # mypy proves both implementations satisfy the protocol; nothing runs at import
    from rain.repository.client import Client
    from rain.repository.store import Store

    def _store_is_a_repository(s: Store) -> Repository:
        return s

    def _client_is_a_repository(c: Client) -> Repository:
        return c
