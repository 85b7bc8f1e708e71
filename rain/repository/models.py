"""Typed records that pass between the store, the service, the client and the CLI."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rain.errors import InvalidInput
from rain.repository.fields import (
    LIST_MAX,
    MAX_JSON_INT,
    SCHEMA_HINT,
    ByteCount,
    Document,
    HistoryLimit,
    Pattern,
    Printable,
    Sha256,
    TargetName,
    field_path,
    matching,
    problem,
)

__all__ = ["ByteCount", "HistoryLimit", "TargetName", "field_path", "matching"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$")
FORMAT_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,31}$")
ID_RE = re.compile(r"^[0-9a-f]{12}$")


class Status(StrEnum):
    UPLOADING = "uploading"
    AVAILABLE = "available"
    QUARANTINED = "quarantined"


class Visibility(StrEnum):
    PRIVATE = "private"
    PUBLIC = "public"


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class UserStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


def check_user_name(name: str) -> str:
    return matching(USER_RE, name, "user name", "use lowercase letters, digits, '_', '.', '-' (max 32)")


DESCRIPTION_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
"""Control characters a description may not hold: all but tab, newline and carriage return."""


def _description(v: str) -> str:
    if len(v) > 4096:
        raise ValueError("description is longer than 4096 characters")
    if re.search(DESCRIPTION_CONTROL, v):
        raise ValueError("description may hold newlines and tabs but no other control characters")
    return v


# Each field rule is declared once and shared by what creates an image and what changes it.
ImageName = Annotated[str, Pattern(NAME_RE, "image name", "use letters, digits, '.', '_', '+', '-' (max 128)")]
ImageFormat = Annotated[str, Pattern(FORMAT_RE, "format", "e.g. raw, qcow2, tar.zst, squashfs")]
Tag = Annotated[str, Pattern(TAG_RE, "tag", "use letters, digits, '.', '_', ':', '+', '-'")]
Description = Annotated[str, Field(max_length=4096, json_schema_extra={"not": {"pattern": DESCRIPTION_CONTROL}}),
                        AfterValidator(_description)]
ImageId = Annotated[str, Pattern(ID_RE, "image id", "ids are 12 hex digits; see `fg-image list`")]
UserName = Annotated[str, Pattern(USER_RE, "user name", "use lowercase letters, digits, '_', '.', '-' (max 32)")]
OsField = Annotated[str, Field(max_length=64), Printable()]
QueryText = Annotated[str, Field(max_length=256), Printable()]
Provenance = Annotated[dict[str, Any], Document("provenance")]


class OsInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: OsField = ""
    release: OsField = ""
    arch: OsField = ""


class ImageMeta(BaseModel):
    """What an uploader says about an image."""

    model_config = ConfigDict(extra="forbid")
    name: ImageName
    os: OsInfo = Field(default_factory=OsInfo)
    format: ImageFormat = "raw"
    tags: list[Tag] = Field(default_factory=list, max_length=LIST_MAX)
    description: Description = ""
    public: bool = False
    parent: ImageId | None = None
    provenance: Provenance | None = None


class Registration(BaseModel):
    target: str
    site: str = ""
    remote_id: str
    when: datetime
    detail: dict[str, Any] = Field(default_factory=dict)
    by: str = ""


ReproductionText = Annotated[str, Field(max_length=600), Printable()]


class ReproductionIn(BaseModel):
    """What `fg-image rebuild` found: the same bytes again, or the first differences (rain.generate.rebuild)."""

    model_config = ConfigDict(extra="forbid")
    identical: bool
    format: Annotated[str, Field(max_length=16), Printable()]
    builder: Annotated[str, Field(max_length=64), Printable()]
    sha256: Sha256
    """The rebuilt file's."""
    differences: list[ReproductionText] = Field(default_factory=list, max_length=20)
    note: ReproductionText = ""


class Reproduction(ReproductionIn):
    when: datetime
    by: str


class ImageSummary(BaseModel):
    """A catalog record as `list` gives it: all but the provenance and the vetting reports, which can
    be tens of kilobytes each (a package list, every finding) and which `show` gives."""

    id: str
    name: str
    owner: str
    os: OsInfo
    format: str
    size: int
    sha256: str | None = None
    status: Status
    visibility: Visibility = Visibility.PRIVATE
    shared_with: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    created: datetime
    updated: datetime | None = None
    last_access: datetime | None = None
    access_count: int = 0
    parent: str | None = None
    quarantined: list[str] = Field(default_factory=list)
    """Targets this image failed vetting for."""
    accepted_rules: dict[str, list[str]] = Field(default_factory=dict)
    """Vetting rules an administrator accepted for this image, per target."""
    registrations: list[Registration] = Field(default_factory=list)
    origin: dict[str, Any] | None = None
    """For an image pulled from another repository (`fg-image repo pull`): its URL, when, by whom."""


class Image(ImageSummary):
    """A catalog record, whole."""

    provenance: dict[str, Any] | None = None
    vetting: dict[str, Any] = Field(default_factory=dict)
    """Vetting report per target."""
    reader_vetting: list[ReaderVetting] = Field(default_factory=list)
    """Reports of vetting runs by users who may read but do not own the image; they change no verdict."""
    reproductions: list[Reproduction] = Field(default_factory=list)
    """`fg-image rebuild` runs: who rebuilt the image from its provenance, when, and whether the bytes matched."""


SUMMARY_FIELDS = ["_id", *(f for f in ImageSummary.model_fields if f != "id")]
"""The record's fields a listing reads."""


SORT_KEYS = {"created", "name", "size", "owner", "last_access", "access_count", "updated"}
SORT_PATTERN = f"^[-+]?({'|'.join(sorted(SORT_KEYS))})$"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"


class ImageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: QueryText | None = None
    os_family: QueryText | None = None
    release: QueryText | None = None
    arch: QueryText | None = None
    format: QueryText | None = None
    tag: QueryText | None = None
    owner: QueryText | None = None
    parent: QueryText | None = None
    status: Status | None = None
    visibility: Visibility | None = None
    verdict: Verdict | None = None
    """pass: vetted and blocked for no target; fail: quarantined for a target; none: never vetted."""
    registered: TargetName | None = None
    """Registered on this target (any site)."""
    search: QueryText | None = None
    """Words whose starts the name's words have, in any case: `deb book` finds debian-bookworm-kernel."""
    sort: str = Field(default="-created", json_schema_extra={"pattern": SORT_PATTERN})
    limit: int = Field(default=100, ge=1, le=10000)
    skip: int = Field(default=0, ge=0, le=MAX_JSON_INT)
    after: ImageId | None = None
    """Only images after this one in the listing's order (the last one of the page before): a next page
    that reads no more than the first, where `skip` reads every image it skips."""
    before: ImageId | None = None
    """Only images before this one (the first one of the page after): the `limit` nearest it, in order."""

    @field_validator("sort")
    @classmethod
    def _sort(cls, v: str) -> str:
        key = v[1:] if v[:1] in ("-", "+") else v
        if key not in SORT_KEYS:
            raise ValueError(f"cannot sort by {key!r}: use one of {', '.join(sorted(SORT_KEYS))}")
        return v

    @model_validator(mode="after")
    def _one_cursor(self) -> ImageQuery:
        if self.after and self.before:
            raise ValueError("give after or before, not both: a page is read from one side of one image")
        return self




class ImageChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ImageName | None = None
    description: Description | None = None
    os: OsInfo | None = None
    format: ImageFormat | None = None
    add_tags: list[Tag] = Field(default_factory=list, max_length=LIST_MAX)
    remove_tags: list[Tag] = Field(default_factory=list, max_length=LIST_MAX)
    public: bool | None = None


class User(BaseModel):
    name: str
    role: Role = Role.USER
    status: UserStatus = UserStatus.ACTIVE
    quota_bytes: int | None = None
    used_bytes: int = 0
    created: datetime | None = None


class Event(BaseModel):
    when: datetime
    user: str
    action: str
    image_id: str | None = None
    image_name: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class ImageChunks(BaseModel):
    """An image as its content-defined chunks, in file order: what a delta download fetches by."""

    id: str
    sha256: str
    size: int
    chunks: list[str]
    sizes: list[int]


class StorageReport(BaseModel):
    """What the repository's images would take stored one by one, and what they take with dedup."""

    images: int = 0
    logical_bytes: int = 0
    stored_bytes: int = 0
    chunks: int = 0
    dedup_ratio: float = 1.0  # logical / stored


class GcReport(BaseModel):
    uploads_removed: int = 0
    files_removed: int = 0
    chunks_removed: int = 0
    counts_corrected: int = 0
    bytes_freed: int = 0


# -- who wrote what on a record, and API tokens (issue #9, part C) ----------------------------------


class ReaderVetting(BaseModel):
    """A vetting run by a reader of the image: kept as theirs, it never quarantines or clears the image."""

    user: str
    target: str
    verdict: str
    when: datetime
    report: dict[str, Any] = Field(default_factory=dict)


Image.model_rebuild()


class TokenInfo(BaseModel):
    """What a token list shows: never the secret or its hash."""

    id: str
    user: str
    name: str = ""
    created: datetime | None = None
    expires: datetime | None = None
    last_used: datetime | None = None


class NewToken(TokenInfo):
    token: str
    """The secret, shown this once."""


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$",
                      description="what the token is for, e.g. ci-runner")
    expires_in: int | None = Field(default=None, ge=1, le=10 * 366 * 86400,
                                   description="seconds until the token stops working; none: never")


class TokensRevoked(BaseModel):
    user: str
    revoked: int


# -- launched machines (`fg-image launch`, `fg-image instances`) ------------------------------------

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_NAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
"""RFC 1123 host names (letters, digits, inner hyphens; labels of 1 to 63), either case."""
LAUNCH_ID_RE = re.compile(r"^[0-9a-f]{12}$")
LaunchId = Annotated[str, Pattern(LAUNCH_ID_RE, "launch id", "ids are 12 hex digits; see `fg-image instances list`")]
LAUNCH_MACHINES_MAX = 64
"""Machines one launch record holds."""


def _port(v: Any) -> Any:
    """A JSON integer: 22 or 22.0, not true or "22" (which pydantic's lax mode would read as 1 and 22)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError("must be a whole number from 1 to 65535")
    return v


def _moment(v: Any) -> Any:
    """A date and time as text (ISO 8601) or a datetime; a bare number, which pydantic would read as
    seconds or milliseconds since 1970 by its size, is refused."""
    if not isinstance(v, str | datetime):
        raise ValueError("must be a date and time such as 2030-01-31T12:00:00Z")
    return v


def _utc(v: datetime) -> datetime:
    """The moment in UTC (a time without a zone is taken as UTC), as the database stores it: a zone that
    pushes it past year 1 or 9999 would fail there (an error 500), so it is refused here."""
    try:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is out of range in UTC") from None


HostName = Annotated[str, Field(max_length=253),
                     Pattern(HOST_NAME_RE, "host name", "use letters, digits and inner hyphens, labels of "
                                                        "1-63 characters joined by dots (max 253)")]
Port = Annotated[int, Field(ge=1, le=65535, description="a TCP port, 1 to 65535"), BeforeValidator(_port)]
Moment = Annotated[datetime, BeforeValidator(_moment), AfterValidator(_utc)]
LaunchDetail = Annotated[dict[str, Any], Document("launch detail")]


class LaunchedMachine(BaseModel):
    """One machine of a launch, as `fg-image instances list` shows it."""

    model_config = ConfigDict(extra="forbid", revalidate_instances="always")
    name: HostName
    """Its host name."""
    address: Annotated[str, Field(max_length=64), Printable()] = ""
    """Its address on the launch's network."""
    ssh_host: Annotated[str, Field(min_length=1, max_length=253), Printable()]
    """Where Rain reaches its sshd (e.g. 127.0.0.1)."""
    ssh_port: Port
    remote_id: Annotated[str, Field(max_length=256), Printable()] = ""
    """The target's id for it (qemu: the QEMU pid; a cloud: its server id)."""


class LaunchIn(BaseModel):
    """What `fg-image launch` records when its machines are up; checked again by the repository (a model
    built with model_construct or changed after it was made is revalidated, not trusted)."""

    model_config = ConfigDict(extra="forbid", revalidate_instances="always")
    image: ImageId
    target: TargetName
    site: Annotated[str, Field(max_length=128), Printable()] = ""
    host: Annotated[str, Field(max_length=253), Printable()] = ""
    """The host the launch ran on (a qemu launch's machines live there)."""
    user: Annotated[str, Field(max_length=32), Printable()] = ""
    """The login user on the machines."""
    machines: list[LaunchedMachine] = Field(min_length=1, max_length=LAUNCH_MACHINES_MAX)
    expires: Moment | None = None
    """When Rain releases them at the latest."""
    detail: LaunchDetail = {}
    """Target-specific."""


class Launch(LaunchIn):
    """A launch as the repository holds it: made by `owner` at `started`."""

    model_config = ConfigDict(extra="ignore")  # an answer may carry fields a newer service adds
    id: str
    """12 lowercase hex digits, made by the repository."""
    owner: str
    started: datetime


def valid_launch(launch: LaunchIn) -> LaunchIn:
    """The launch checked field by field (again, if it was made unchecked or changed since), or the one-line
    InvalidInput the service answers for the same record. The Store and the HTTP client both call it."""
    try:
        return LaunchIn.model_validate(launch)
    except ValidationError as e:
        raise InvalidInput(problem(e), hint=SCHEMA_HINT) from None
