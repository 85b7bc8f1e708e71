"""rain/config.py: sizes as people write them, settings layered flag > env > file > default, and bad config files."""

from __future__ import annotations

import pytest

from rain.config import load_settings, parse_size
from rain.errors import ConfigError, InvalidInput

MiB = 1 << 20


@pytest.mark.parametrize("text, expected", [
    ("500000", 500000), ("100M", 100 * MiB), ("100MB", 100 * MiB), ("2GiB", 2 << 30), ("1.5G", 3 << 29),
    ("1t", 1 << 40), (" 7 k ", 7 << 10), ("unlimited", None), ("", None), (12, 12), (None, None),
])
def test_sizes_read_as_people_write_them(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12Q", "-5M", "lots", "1.2.3G", "5 MiBs"])
def test_parse_size_refuses_nonsense_with_a_hint(text):
    with pytest.raises(InvalidInput) as e:
        parse_size(text, "quota")
    assert e.value.message == f"bad quota {text!r}" and "500M" in (e.value.hint or "")


def test_a_flag_beats_the_env_which_beats_the_file_and_secrets_show_redacted(tmp_path):
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
