"""Typed records that pass between the store, the service, the client and the CLI."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

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


def matching(regex: re.Pattern[str], value: str, what: str, hint: str) -> str:
    """value if the pattern matches it; otherwise a ValueError naming what is wrong and how to fix it."""
    if not isinstance(value, str) or not regex.match(value):
        raise ValueError(f"bad {what} {value!r}: {hint}")
    return value


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """A pydantic error location as the field a user wrote: 'meta.tags', not 'body.meta.tags.0'."""
    return ".".join(str(p) for p in loc if not isinstance(p, int) and p != "body")


def check_user_name(name: str) -> str:
    return matching(USER_RE, name, "user name", "use lowercase letters, digits, '_', '.', '-' (max 32)")


def _description(v: str) -> str:
    if len(v) > 4096:
        raise ValueError("description is longer than 4096 characters")
    return v


# Each field rule is declared once and shared by what creates an image and what changes it.
ImageName = Annotated[str, AfterValidator(
    lambda v: matching(NAME_RE, v, "image name", "use letters, digits, '.', '_', '+', '-' (max 128)"))]
ImageFormat = Annotated[str, AfterValidator(
    lambda v: matching(FORMAT_RE, v, "format", "e.g. raw, qcow2, tar.zst, squashfs"))]
Tag = Annotated[str, AfterValidator(
    lambda v: matching(TAG_RE, v, "tag", "use letters, digits, '.', '_', ':', '+', '-'"))]
Description = Annotated[str, AfterValidator(_description)]


class OsInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str = ""
    release: str = ""
    arch: str = ""


class ImageMeta(BaseModel):
    """What an uploader says about an image."""

    model_config = ConfigDict(extra="forbid")
    name: ImageName
    os: OsInfo = Field(default_factory=OsInfo)
    format: ImageFormat = "raw"
    tags: list[Tag] = Field(default_factory=list)
    description: Description = ""
    public: bool = False
    parent: str | None = None
    provenance: dict[str, Any] | None = None


class Registration(BaseModel):
    target: str
    site: str = ""
    remote_id: str
    when: datetime
    detail: dict[str, Any] = Field(default_factory=dict)
    by: str = ""


class Image(BaseModel):
    """A catalog record."""

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
    provenance: dict[str, Any] | None = None
    vetting: dict[str, Any] = Field(default_factory=dict)
    """Vetting report per target."""
    quarantined: list[str] = Field(default_factory=list)
    """Targets this image failed vetting for."""
    accepted_rules: dict[str, list[str]] = Field(default_factory=dict)
    """Vetting rules an administrator accepted for this image, per target."""
    registrations: list[Registration] = Field(default_factory=list)


class ImageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    os_family: str | None = None
    release: str | None = None
    arch: str | None = None
    format: str | None = None
    tag: str | None = None
    owner: str | None = None
    parent: str | None = None
    status: Status | None = None
    sort: str = "-created"
    limit: int = Field(default=100, ge=1, le=10000)
    skip: int = Field(default=0, ge=0)

    @field_validator("sort")
    @classmethod
    def _sort(cls, v: str) -> str:
        key = v.lstrip("-+")
        if key not in SORT_KEYS:
            raise ValueError(f"cannot sort by {key!r}: use one of {', '.join(sorted(SORT_KEYS))}")
        return v


SORT_KEYS = {"created", "name", "size", "owner", "last_access", "access_count", "updated"}


class ImageChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ImageName | None = None
    description: Description | None = None
    os: OsInfo | None = None
    format: ImageFormat | None = None
    add_tags: list[Tag] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)
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


class GcReport(BaseModel):
    uploads_removed: int = 0
    files_removed: int = 0
    bytes_freed: int = 0
