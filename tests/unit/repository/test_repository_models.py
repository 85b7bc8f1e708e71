"""Pure pieces of the repository: human sizes, ranges, names, queries and token hashes."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from rain.errors import InvalidInput
from rain.repository.accounts import hash_token, human
from rain.repository.models import ImageChanges, ImageMeta, ImageQuery
from rain.repository.server import _parse_range, _RangeNotSatisfiable

MiB = 1 << 20


@pytest.mark.parametrize("n, text", [(None, "unlimited"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                     (100 * MiB, "100.0 MiB"), (3 << 40, "3.0 TiB")])
def test_human_sizes(n, text):
    assert human(n) == text


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=0-", (0, 999)), ("bytes=10-19", (10, 19)), ("bytes=990-5000", (990, 999)),
    ("bytes=-100", (900, 999)), ("bytes=-5000", (0, 999)),
])
def test_range_header(header, expected):
    assert _parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-4", "bytes=2000-3000"])
def test_range_outside_the_image_is_416(header):
    with pytest.raises(_RangeNotSatisfiable) as e:
        _parse_range(header, 1000)
    assert e.value.http_status == 416 and "1000 bytes" in e.value.message


@pytest.mark.parametrize("header", ["bytes=-", "items=0-5", "bytes=0-5,10-20"])
def test_unsupported_range_is_invalid_input(header):
    with pytest.raises(InvalidInput):
        _parse_range(header, 1000)


def test_image_meta_checks_names_tags_and_formats():
    assert ImageMeta(name="debian-12.1_hpc+gpu", tags=["a:b"], format="tar.zst").name == "debian-12.1_hpc+gpu"
    for bad in ({"name": "has space"}, {"name": "-leading"}, {"name": "x" * 129}, {"name": "ok", "tags": ["a b"]},
                {"name": "ok", "format": "QCOW2"}, {"name": "ok", "description": "d" * 4097},
                {"name": "ok", "colour": "red"}):
        with pytest.raises(ValidationError):
            ImageMeta(**bad)
    for bad in ({"name": "bad name"}, {"format": "Not A Format"}, {"description": "d" * 4097},
                {"add_tags": ["a b"]}):
        with pytest.raises(ValidationError):
            ImageChanges(**bad)


def test_image_query_sort_keys():
    assert ImageQuery(sort="-size").sort == "-size"
    with pytest.raises(ValidationError) as e:
        ImageQuery(sort="colour")
    assert "cannot sort by 'colour'" in str(e.value)
    with pytest.raises(ValidationError):
        ImageQuery(limit=0)


def test_tokens_are_hashed_with_sha256():
    assert hash_token("rain_x") == hashlib.sha256(b"rain_x").hexdigest()
