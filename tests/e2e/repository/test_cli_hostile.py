"""The real `fg-image` facing hostile strings in the repository, hostile answers and a failing world.

Stored strings are shown as text (never terminal markup or raw escapes), a
download never writes outside where the user asked, and a missing directory
or a database that goes away is a one-line error with its own exit code.
"""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import pytest
from support.cli import free_port, json_out
from support.simulators.tcp_cut import CuttingRelay

from rain.errors import ExitCode
from rain.repository.connect import open_store
from rain.repository.models import ImageMeta

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# Clears the screen, retitles the terminal window and rings the bell if printed raw.
HOSTILE = "\x1b[2J\x1b]0;pwned\x07"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b")


def assert_safe_for_a_terminal(result) -> None:
    for stream in (result.stdout, result.stderr):
        assert not any(c in stream for c in RAW_CONTROLS), f"raw control characters reached the terminal: {stream!r}"
        assert "Traceback" not in stream and "internal error" not in stream, stream


def assert_one_line_error(result, code: ExitCode) -> None:
    assert result.returncode == int(code), (result.returncode, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert_safe_for_a_terminal(result)


@pytest.fixture
def stored(settings, db):
    """stored(data, **fields) → the id of an image put in the test database directly, then given
    `fields` no upload would accept (what an older Rain stored, or a hostile peer)."""
    admin = open_store(settings, "admin")

    def store(data: bytes = b"\0" * 1000, **fields) -> str:
        image = admin.put(io.BytesIO(data), ImageMeta(name="plain"), len(data))
        if fields:
            db.images.update_one({"_id": image.id}, {"$set": fields})
        return image.id

    return store


def test_list_show_and_history_print_hostile_strings_as_visible_text(fg, db, stored):
    # Written straight into the database: what an older Rain accepted, or a hostile peer stored.
    image_id = stored(os={"family": "[/]", "release": "[bold]12", "arch": ""}, description=HOSTILE,
                      shared_with=["[red]eve\x1b[5m"], vetting={"hpc": {"verdict": "[/]\x07"}},
                      registrations=[{"target": "hpc", "site": "[/]", "remote_id": HOSTILE,
                                      "when": datetime.now(UTC)}])
    db.events.insert_one({"when": datetime.now(UTC), "user": "admin", "action": "modify", "image_id": image_id,
                          "image_name": "[/]", "detail": {"changes": {"description": HOSTILE}}})

    listed = fg("list")
    assert listed.returncode == 0, listed.stderr
    assert_safe_for_a_terminal(listed)
    assert "[/]/[bold]12" in listed.stdout

    shown = fg("show", image_id)
    assert shown.returncode == 0, shown.stderr
    assert_safe_for_a_terminal(shown)
    assert "\\x1b[2J\\x1b]0;pwned\\x07" in shown.stdout
    assert "[red]eve\\x1b[5m" in shown.stdout and "hpc@[/]: \\x1b[2J" in shown.stdout

    history = fg("history", image_id)
    assert history.returncode == 0, history.stderr
    assert_safe_for_a_terminal(history)
    assert "\\x1b[2J" in history.stdout

    as_json = fg("show", image_id, "--json")
    assert "\x1b" not in as_json.stdout  # JSON escapes it as \u001b ...
    assert json_out(as_json)["description"] == HOSTILE  # ... and gives back the exact value


def test_an_error_quoting_a_hostile_stored_value_stays_one_visible_line(fg, stored):
    image_id = stored(owner="\x1b]0;pwned\x07[/]mallory", visibility="public")
    result = fg("modify", image_id, "--description", "mine now", env={"RAIN_USER": "bob"})
    assert_one_line_error(result, ExitCode.FORBIDDEN)
    assert "\\x1b]0;pwned\\x07[/]mallory" in result.stderr


# (name, format) a hostile service might answer → the file `download` writes in the current directory.
HOSTILE_NAMES = [
    ("../../evil", "raw", "evil.raw"),
    (".bashrc", "raw", "bashrc.raw"),
    ("/etc/cron.d/job", "raw", "etc_cron.d_job.raw"),
    ("a\x1b[2Jb", "../../../x", "a__2Jb.x"),
    ("x" * 5000, "qcow2", "x" * 128 + ".qcow2"),
    ("..", "..", None),  # nothing usable: the image id
]


@pytest.mark.parametrize("mode", ["local", "service"])
def test_download_writes_a_safe_name_in_the_current_directory(mode, fg, stored, tmp_path, request):
    env = {} if mode == "local" else request.getfixturevalue("remote_env")
    here = tmp_path / "a" / "b" / "here"
    here.mkdir(parents=True)
    cases = HOSTILE_NAMES if mode == "local" else HOSTILE_NAMES[:2]  # the service passes names on as they are
    for n, (name, fmt, expected) in enumerate(cases):
        data = os.urandom(1000 + n)
        image_id = stored(data=data, name=name, format=fmt)
        result = fg("download", image_id, env=env, cwd=here)
        assert result.returncode == 0, result.stderr
        assert_safe_for_a_terminal(result)
        written = here / (expected or image_id)
        assert result.stdout.strip() == written.name
        assert written.read_bytes() == data
    assert [p for p in (tmp_path / "a").rglob("*") if p.is_file() and p.parent != here] == []
    assert len(list(here.iterdir())) == len(cases)

    out = tmp_path / "out"
    out.mkdir()
    image_id = stored(data=b"into a directory", name="../../../../evil2")
    result = fg("download", image_id, "-o", str(out), env=env, cwd=here)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["evil2.raw"]


def test_download_into_a_missing_directory_is_a_one_line_input_error(fg, stored, tmp_path):
    image_id = stored()
    result = fg("download", image_id, "-o", "/no/such/dir/x.raw", cwd=tmp_path)
    assert_one_line_error(result, ExitCode.USAGE)
    assert "/no/such/dir" in result.stderr


def test_a_database_that_goes_away_mid_download_is_unreachable_not_internal(fg, stored, embedded_mongo, tmp_path):
    data = os.urandom(4 << 20)
    image_id = stored(data=data)
    relay = CuttingRelay("127.0.0.1", embedded_mongo.port, cut_after=1 << 20)
    uri = urlsplit(str(embedded_mongo.uri))  # the same server and credential, through the relay
    through = urlunsplit(uri._replace(netloc=uri.netloc.replace(f":{embedded_mongo.port}", f":{relay.port}")))
    try:
        result = fg("download", image_id, "-o", str(tmp_path / "got.raw"), timeout=60,
                    env={"RAIN_MONGO_URI": through, "RAIN_TIMEOUT": "2"})
    finally:
        relay.stop()
    assert relay.cut.is_set(), "the relay never cut: the test proves nothing"
    assert_one_line_error(result, ExitCode.UNREACHABLE)
    assert "MongoDB" in result.stderr
    assert not (tmp_path / "got.raw").exists()
    again = fg("download", image_id, "-o", str(tmp_path / "got.raw"))  # the server is back: it resumes
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "got.raw").read_bytes() == data


def test_a_stopped_database_in_direct_mode_is_unreachable(fg):
    result = fg("list", env={"RAIN_MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/", "RAIN_TIMEOUT": "1"})
    assert_one_line_error(result, ExitCode.UNREACHABLE)
