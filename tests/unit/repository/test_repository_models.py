"""Pure pieces of the repository: sizes, ranges, names, queries, settings and error kinds."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from rain.config import load_settings, parse_size
from rain.errors import KINDS, ConfigError, ExitCode, InvalidInput, NotFound, QuotaExceeded, from_kind
from rain.repository.accounts import hash_token, human
from rain.repository.models import ImageChanges, ImageMeta, ImageQuery
from rain.repository.server import _parse_range, _RangeNotSatisfiable

MiB = 1 << 20


@pytest.mark.parametrize("text, expected", [
    ("500000", 500000), ("100M", 100 * MiB), ("100MB", 100 * MiB), ("2GiB", 2 << 30), ("1.5G", 3 << 29),
    ("1t", 1 << 40), (" 7 k ", 7 << 10), ("unlimited", None), ("", None), (12, 12), (None, None),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12Q", "-5M", "lots", "1.2.3G", "5 MiBs"])
def test_parse_size_refuses_nonsense_with_a_hint(text):
    with pytest.raises(InvalidInput) as e:
        parse_size(text, "quota")
    assert e.value.message == f"bad quota {text!r}" and "500M" in (e.value.hint or "")


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


def test_settings_layers_and_redaction(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('timeout = 11\nmongo_db = "filedb"\nmongo_uri = "mongodb://u:pw@h:1/"\n')
    s = load_settings(environ={"RAIN_CONFIG": str(config), "RAIN_TIMEOUT": "12", "RAIN_TOKEN": "rain_t"},
                      timeout=13)
    assert (s.timeout, s.mongo_db, s.token) == (13, "filedb", "rain_t")
    rows = {name: (value, source) for name, value, source in s.shown()}
    assert rows["timeout"] == ("13", "flag")
    assert rows["mongo_db"] == ("filedb", f"file {config}")
    assert rows["token"] == ("***", "env RAIN_TOKEN")
    assert rows["mongo_uri"] == ("mongodb://***@h:1/", f"file {config}")
    assert rows["serve_port"] == ("8780", "default")


@pytest.mark.parametrize("content, words", [("timeout = 'soon'", "bad value 'soon' for timeout"),
                                            ("colour = 1", "unknown setting 'colour'"),
                                            ("not toml", "not valid TOML")])
def test_bad_config_files_name_the_problem(tmp_path, content, words):
    config = tmp_path / "c.toml"
    config.write_text(content)
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"RAIN_CONFIG": str(config)})
    assert words in e.value.message


def test_errors_cross_the_wire_as_the_same_kind():
    for kind, cls in KINDS.items():
        back = from_kind(kind, "message", "hint")
        assert type(back) is cls and back.one_line() == "message (hint)"
    assert type(from_kind("something-new", "m")).__name__ == "RainError"
    assert (NotFound.exit_code, QuotaExceeded.exit_code, InvalidInput.exit_code) == \
        (ExitCode.NOT_FOUND, ExitCode.QUOTA, ExitCode.USAGE)
    assert InvalidInput("two\nlines").one_line() == "two lines"
