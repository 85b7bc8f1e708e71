"""Typed records that pass between the store, the service, the client and the CLI."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


def _check(regex: re.Pattern[str], value: str, what: str, hint: str) -> str:
    if not regex.match(value):
        raise ValueError(f"bad {what} {value!r}: {hint}")
    return value


def check_user_name(name: str) -> str:
    return _check(USER_RE, name, "user name", "use lowercase letters, digits, '_', '.', '-' (max 32)")


class OsInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str = ""
    release: str = ""
    arch: str = ""


class ImageMeta(BaseModel):
    """What an uploader says about an image."""

    model_config = ConfigDict(extra="forbid")
    name: str
    os: OsInfo = Field(default_factory=OsInfo)
    format: str = "raw"
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    public: bool = False
    parent: str | None = None
    provenance: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check(NAME_RE, v, "image name", "use letters, digits, '.', '_', '+', '-' (max 128)")

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        return _check(FORMAT_RE, v, "format", "e.g. raw, qcow2, tar.zst, squashfs")

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return [_check(TAG_RE, t, "tag", "use letters, digits, '.', '_', ':', '+', '-'") for t in v]

    @field_validator("description")
    @classmethod
    def _description(cls, v: str) -> str:
        if len(v) > 4096:
            raise ValueError("description is longer than 4096 characters")
        return v


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
    name: str | None = None
    description: str | None = None
    os: OsInfo | None = None
    format: str | None = None
    add_tags: list[str] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)
    public: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else ImageMeta._name(v)  # type: ignore[call-arg]

    @field_validator("add_tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return ImageMeta._tags(v)  # type: ignore[call-arg]

    @field_validator("format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        return None if v is None else ImageMeta._format(v)  # type: ignore[call-arg]

    @field_validator("description")
    @classmethod
    def _description(cls, v: str | None) -> str | None:
        return None if v is None else ImageMeta._description(v)  # type: ignore[call-arg]


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
