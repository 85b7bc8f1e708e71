"""Field types that keep hostile input out of the database: bounded, printable, storable.

MongoDB stores integers as at most 64 bits, refuses NUL in keys, treats keys starting
with '$' or holding '.' as operators and paths, and refuses documents over 16 MiB.
Each rule is declared once here, with a JSON schema saying the same thing, so the
service's OpenAPI schema, the HTTP service, the Store (direct mode) and the CLI all
refuse the same input with the same one-line message.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Union

from pydantic import BeforeValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, TypeAdapter, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema
from typing_extensions import TypeAliasType

from rain.errors import InvalidInput

T = TypeVar("T")

MAX_INT64 = (1 << 63) - 1
"""BSON's largest integer: a count beyond it cannot be stored (and gave HTTP 500)."""
MAX_JSON_INT = (1 << 53) - 1
"""The largest integer every JSON parser holds exactly (8 PiB as bytes), and so the largest a client may
send: beyond it a JSON schema validator (floats) and the service (exact ints) would disagree on a limit."""
HISTORY_MAX = 10_000
"""The most events one history call returns; a bigger or unbounded read is refused."""
DOCUMENT_MAX = 1 << 20
"""A free-form JSON document (provenance, a report) as JSON text, well under BSON's 16 MiB per image."""
DOCUMENT_DEPTH = 32
"""Nesting depth of a free-form document (MongoDB refuses deep nesting; parsers recurse)."""
LIST_MAX = 256
"""Entries in a list a client sends (tags, users to share with)."""

KEY_PATTERN = r"^([^$.\x00][^.\x00]*)?$"
"""Keys MongoDB stores as they are: no NUL, no '.', no leading '$'."""
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NO_CONTROL_SCHEMA = {"not": {"pattern": CONTROL.pattern}}


def matching(regex: re.Pattern[str], value: str, what: str, hint: str) -> str:
    """value if the pattern matches all of it; otherwise a ValueError naming what is wrong and how to fix it.

    fullmatch, not match: with match, '$' accepts a trailing newline ("name\\n")."""
    if not isinstance(value, str) or not regex.fullmatch(value):
        raise ValueError(f"bad {what} {value!r}: {hint}")
    return value


class Pattern:
    """Annotation: a str checked by regex (fullmatch), with the pattern in the JSON schema."""

    def __init__(self, regex: re.Pattern[str], what: str, hint: str) -> None:
        self.regex, self.what, self.hint = regex, what, hint

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(
            lambda v: matching(self.regex, v, self.what, self.hint), handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(schema), "pattern": self.regex.pattern}


class Printable:
    """Annotation: a str without control characters (they forge lines in listings and logs)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_printable, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(schema), **NO_CONTROL_SCHEMA}


def _printable(v: str) -> str:
    if CONTROL.search(v):
        raise ValueError("must not contain control characters (newlines, tabs, NUL)")
    return v


def _json_integer(v: Any) -> Any:
    """A JSON integer is a number without a fraction (10000.0 too); true or "5" is not one, though
    pydantic's lax mode would read them as 1 and 5."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError("must be a whole number of bytes")
    return v


ByteCount = Annotated[int, Field(ge=0, le=MAX_JSON_INT, description="bytes, 0 to 2**53-1 (8 PiB)"),
                      BeforeValidator(_json_integer)]
HistoryLimit = Annotated[int, Field(ge=1, le=HISTORY_MAX, description=f"events, 1 to {HISTORY_MAX}")]

TARGET_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
TargetName = Annotated[str, Pattern(TARGET_RE, "target name", "use a target such as opennebula, openstack, ec2, hpc")]
"""A registration target; safe to use as a key (no '.', '$' or NUL), e.g. vetting.<target>."""


def _at(where: str) -> str:
    return f" at {where}" if where else ""


def _check_key(key: object, where: str) -> str:
    if not isinstance(key, str):
        raise ValueError(f"keys must be strings{_at(where)}")
    if "\x00" in key or "." in key or key.startswith("$"):
        raise ValueError(f"key {key[:40]!r}{_at(where)} may not contain '.' or NUL or start with '$'")
    return f"{where}.{key}" if where else key


def _check_value(value: Any, where: str, depth: int) -> None:
    """Walk a JSON value: storable keys, 64-bit integers, finite numbers, bounded nesting."""
    if depth > DOCUMENT_DEPTH:
        raise ValueError(f"nested deeper than {DOCUMENT_DEPTH} levels{_at(where)}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_value(item, _check_key(key, where), depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, where, depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"numbers must be finite{_at(where)}")
        if not -MAX_JSON_INT <= value <= MAX_JSON_INT:
            raise ValueError(f"number {value}{_at(where)} is beyond ±2**53-1, what JSON holds exactly")
    else:
        raise ValueError(f"{type(value).__name__}{_at(where)} is not a JSON value")


def document_check(what: str, limit: int = DOCUMENT_MAX) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A validator for a free-form JSON object the database will store as it is."""

    def check(doc: dict[str, Any]) -> dict[str, Any]:
        _check_value(doc, "", 1)
        size = len(json.dumps(doc, separators=(",", ":")))
        if size > limit:
            raise ValueError(f"{what} is {size} bytes as JSON; the limit is {limit}")
        return doc

    return check


class Document:
    """Annotation: a free-form JSON object bounded in size and depth, with keys MongoDB stores as they are."""

    def __init__(self, what: str, limit: int = DOCUMENT_MAX, schema: dict[str, Any] | None = None) -> None:
        self.check = document_check(what, limit)
        self.schema = schema or {}
        """More JSON schema for the top level, e.g. a required verdict."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(_STORABLE_SCHEMA), **self.schema}


class _Closed:
    """JSON schema only: an object has no keys besides its patternProperties."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(schema), "additionalProperties": False}


_Key = Annotated[str, Field(pattern=KEY_PATTERN)]
_StorableValue: Any = TypeAliasType("StorableValue", Union[  # noqa: UP007  (a recursive alias needs Union here)
    str, bool, None, Annotated[float, Field(ge=-MAX_JSON_INT, le=MAX_JSON_INT)],
    list["_StorableValue"], Annotated[dict[_Key, "_StorableValue"], _Closed()]])  # type: ignore[misc]
_STORABLE_SCHEMA = TypeAdapter(Annotated[dict[_Key, _StorableValue], _Closed()]).core_schema
"""What a Document is, for the JSON schema alone: it recurses, so nested keys are described too."""


def problem(e: Any) -> str:
    """The first error of a pydantic ValidationError (or FastAPI's RequestValidationError, which
    has the same errors()) as one line: 'meta.os.family: <what is wrong>'."""
    first = e.errors()[0] if e.errors() else {}
    where = field_path(first.get("loc", ()))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """A pydantic error location as the field a user wrote: 'meta.tags', not 'body.meta.tags.0'."""
    return ".".join(str(p) for p in loc if not isinstance(p, int) and p not in ("body", "query", "path"))


def checked(kind: Any, value: T, what: str) -> T:
    """value if it is a valid `kind`, else InvalidInput with the message the service would give.

    For Store methods that take plain values (sizes, quotas, limits) rather than models."""
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError as e:
        raise InvalidInput(f"{what}: {problem(e)}", hint=SCHEMA_HINT) from None
    return value


SCHEMA_HINT = "see the API schema at /api/v1/openapi.json"


Sha256 = Annotated[str, Pattern(re.compile(r"^[0-9a-fA-F]{64}$"), "sha256", "64 hex digits, as sha256sum prints")]
