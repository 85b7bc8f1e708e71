"""The field types that keep hostile input out of the database, without a database."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from rain.errors import InvalidInput
from rain.repository.fields import MAX_JSON_INT, ByteCount, HistoryLimit, checked, matching, problem
from rain.repository.models import ImageChanges, ImageMeta, ImageQuery

BIG = MAX_JSON_INT + 1  # JSON parsers that use floats cannot tell it from its neighbours


def refusal(**meta: object) -> str:
    with pytest.raises(ValidationError) as e:
        ImageMeta(**meta)  # type: ignore[arg-type]
    return problem(e.value)


def test_a_pattern_must_match_the_whole_value_not_up_to_a_trailing_newline():
    assert matching(re.compile(r"^[a-z]+$"), "abc", "name", "letters") == "abc"
    with pytest.raises(ValueError, match="bad name 'abc\\\\n'"):
        matching(re.compile(r"^[a-z]+$"), "abc\n", "name", "letters")
    assert refusal(name="img\n").startswith("name: bad image name")
    assert refusal(name="img", tags=["ok", "bad\n"]).startswith("tags: bad tag")


@pytest.mark.parametrize("provenance, why", [
    ({"a\x00b": 1}, "NUL"), ({"$where": 1}, "start with '$'"), ({"x": [{"a.b": 1}]}, "at x"),
    ({"n": BIG}, "2**53"), ({"n": -BIG}, "2**53"), ({"n": 2**64}, "2**53"), ({"f": 1e300}, "2**53"),
    ({"f": float("nan")}, "finite"), ({"big": "x" * (1 << 20)}, "the limit is"),
])
def test_provenance_must_be_storable(provenance, why):
    message = refusal(name="img", provenance=provenance)
    assert message.startswith("provenance: ") and why in message and "\n" not in message


def test_provenance_nesting_is_bounded():
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["k"] = {}
        node = node["k"]
    assert "nested deeper" in refusal(name="img", provenance=deep)
    assert ImageMeta(name="img", provenance={"recipe": {"packages": [{"name": "bash", "version": "5.2"}]}})


@pytest.mark.parametrize("field, value", [("family", "deb\nian"), ("release", "12\x00"), ("arch", "x" * 65)])
def test_os_fields_are_one_bounded_line(field, value):
    assert refusal(name="img", os={field: value}).startswith(f"os.{field}: ")
    with pytest.raises(ValidationError):
        ImageChanges(os={field: value})  # type: ignore[arg-type]


def test_query_bounds():
    with pytest.raises(ValidationError):
        ImageQuery(skip=BIG)
    with pytest.raises(ValidationError):
        ImageQuery(sort="--created")
    assert ImageQuery(sort="+name").sort == "+name"


def test_checked_gives_the_services_message():
    with pytest.raises(InvalidInput) as e:
        checked(ByteCount, BIG, "quota_bytes")
    assert e.value.message == f"quota_bytes: Input should be less than or equal to {MAX_JSON_INT}"
    for bad in (0, -1, 10_001):
        with pytest.raises(InvalidInput, match="^limit: "):
            checked(HistoryLimit, bad, "limit")
    assert checked(ByteCount | None, None, "quota_bytes") is None
