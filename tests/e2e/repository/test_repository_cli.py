"""The real `fg-image` console script against the repository, locally and through `fg-image serve`."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest
from support.cli import FG_IMAGE, free_port, json_out

from rain.repository import embedded
from rain.repository.models import ImageMeta
from rain.repository.store import Store

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
MiB = 1 << 20


def sha_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(params=["local", "service"])
def mode_env(request, settings) -> dict[str, str]:
    """Extra environment for fg-image: none (MongoDB directly) or the running service's URL and token."""
    if request.param == "local":
        return {}
    return request.getfixturevalue("remote_env")


def test_upload_find_change_share_download_remove(fg, mode_env, make_file, tmp_path):
    def ok(*args: str) -> subprocess.CompletedProcess[str]:
        result = fg(*args, env=mode_env, cwd=tmp_path)
        assert result.returncode == 0, f"fg-image {' '.join(args)}: {result.stderr}"
        # nothing on stderr but a transfer's done line (upload, download): `✓ upload NAME (0.1s)`
        assert all(line.startswith(("✓ upload ", "✓ download ")) for line in result.stderr.splitlines()), \
            result.stderr
        return result

    ok("users", "add", "bob")
    src = make_file(3 * MiB + 7, "deb12.qcow2")
    image = json_out(ok("upload", str(src), "--os", "debian", "--release", "12", "--arch", "amd64",
                        "--tag", "hpc", "--json"))
    assert (image["name"], image["format"], image["sha256"]) == ("deb12", "qcow2", sha_file(src))
    assert ok("upload", str(make_file(100, "other.raw"))).stdout.strip() != image["id"]

    assert [i["id"] for i in json_out(ok("list", "--os", "debian", "--tag", "hpc", "--json"))] == [image["id"]]
    assert [i["name"] for i in json_out(ok("list", "--sort", "name", "--json"))] == ["deb12", "other"]
    assert "deb12" in ok("list").stdout
    assert json_out(ok("show", image["id"], "--json"))["os"] == {"family": "debian", "release": "12",
                                                                 "arch": "amd64"}

    ok("modify", image["id"], "--name", "bookworm", "--tag", "gpu", "--untag", "hpc", "--public")
    shown = json_out(ok("show", image["id"], "--json"))
    assert (shown["name"], shown["tags"], shown["visibility"]) == ("bookworm", ["gpu"], "public")
    assert "bob" in ok("share", image["id"], "bob").stdout
    assert json_out(ok("show", image["id"], "--json"))["shared_with"] == ["bob"]
    ok("unshare", image["id"], "bob")

    out = ok("download", image["id"], "-o", str(tmp_path / "got.qcow2"))
    assert out.stdout.strip() == str(tmp_path / "got.qcow2")
    assert sha_file(tmp_path / "got.qcow2") == image["sha256"]
    assert not (tmp_path / "got.qcow2.part").exists()
    assert json_out(ok("show", image["id"], "--json"))["access_count"] == 1

    actions = [e["action"] for e in json_out(ok("history", image["id"], "--json"))]
    assert actions == ["download", "unshare", "share", "modify", "upload"]

    assert "removed" in ok("remove", image["id"], "--yes").stdout
    assert [i["name"] for i in json_out(ok("list", "--json"))] == ["other"]


@pytest.mark.parametrize("mode", ["local", "service"])
def test_an_interrupted_download_resumes_and_is_verified(mode, fg, make_file, tmp_path, request):
    env = {} if mode == "local" else request.getfixturevalue("remote_env")
    src = make_file(5 * MiB + 3, "src.raw")
    image_id = fg("upload", str(src), env=env).stdout.strip()
    target = tmp_path / "out.raw"
    part = tmp_path / "out.raw.part"
    part.write_bytes(src.read_bytes()[: 2 * MiB + 5])  # what an interrupted download leaves

    result = fg("download", image_id, "-o", str(target), env=env)
    assert result.returncode == 0, result.stderr
    assert sha_file(target) == sha_file(src) and not part.exists()
    last = json_out(fg("history", image_id, "--limit", "1", "--json", env=env))[0]
    if mode == "service":  # a delta download: the partial file is a seed, its whole chunks are not fetched again
        assert (last["action"], last["detail"]) == ("download", {"delta": True})
        target.unlink()
        part.write_bytes(b"\0" * MiB)  # a damaged partial file gives no chunk; the rest comes from the service
        result = fg("download", image_id, "-o", str(target), env=env)
        assert result.returncode == 0, result.stderr
        assert sha_file(target) == sha_file(src) and not part.exists()
        return
    assert (last["action"], last["detail"]["offset"]) == ("download", 2 * MiB + 5)  # fetched only the rest

    target.unlink()
    part.write_bytes(b"\0" * MiB)  # a damaged partial file is caught by the checksum
    result = fg("download", image_id, "-o", str(target), env=env)
    assert result.returncode == 9
    assert result.stderr.startswith("error:") and "checksum" in result.stderr
    assert not part.exists() and not target.exists()
    assert fg("download", image_id, "-o", str(target), env=env).returncode == 0
    assert sha_file(target) == sha_file(src)


CASES = {
    # name: (args, exit code, words the message must hold)
    "missing file": (["upload", "{tmp}/no-such.raw"], 2, "no such file"),
    "unknown id": (["show", "0123456789ab"], 3, "no image 0123456789ab"),
    "unknown id download": (["download", "0123456789ab", "-o", "{tmp}/out.raw"], 3, "no image"),
    "malformed id": (["download", "not-an-id", "-o", "{tmp}/out.raw"], 2, "bad image id"),
    "bad size": (["users", "quota", "bob", "12Q"], 2, "bad quota '12Q'"),
    "bad sort": (["list", "--sort", "colour"], 2, "cannot sort by 'colour'"),
    "bad status": (["list", "--status", "lost"], 2, "'lost' is not one of"),
    "bad verdict": (["list", "--verdict", "maybe"], 2, "'maybe' is not one of"),
    "manifest of another build": (["upload", "{tmp}/big.raw", "--manifest", "{tmp}/m/other.json"], 2,
                                  "does not list big.raw"),
    "not a manifest": (["upload", "{tmp}/big.raw", "--manifest", "{tmp}/m/notes.txt"], 2, "is not a build manifest"),
    "over quota": (["upload", "{tmp}/big.raw"], 7, "quota exceeded"),
    "no token": (["--repo", "{url}", "list"], 5, "no API token"),
    "bad token": (["--repo", "{url}", "--token", "rain_bogus", "list"], 5, "not valid"),
    "unreachable": (["--repo", "http://127.0.0.1:{closed}", "list"], 8, "cannot reach"),
    "remote unknown id": (["--repo", "{url}", "--token", "{token}", "show", "0123456789ab"], 3, "no image"),
    "remote bad sort": (["--repo", "{url}", "--token", "{token}", "list", "--sort", "x"], 2, "cannot sort"),
    "bad format on modify": (["modify", "{image}", "--format", "Not A Format"], 2, "format: bad format"),
    "remove without a yes": (["remove", "{image}"], 2, "without a yes"),
    "remote bad tag": (["--repo", "{url}", "--token", "{token}", "modify", "{image}", "--tag", "a b"], 2,
                       "add_tags: bad tag"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(case, fg, db, make_file, tmp_path, request):
    assert fg("users", "add", "bob", "--quota", "1M").returncode == 0
    admin = Store(db, "admin")
    existing = admin.put(io.BytesIO(b"\0" * 1000), ImageMeta(name="existing", tags=["t"]), 1000)
    make_file(2 * MiB, "big.raw")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "other.json").write_text('{"artifacts": [{"file": "big.raw", "sha256": "%s"}]}' % ("0" * 64))
    (tmp_path / "m" / "notes.txt").write_text("packages: many\n")
    args, code, words = CASES[case]
    fields = {"tmp": str(tmp_path), "closed": str(free_port()), "image": existing.id}
    if any("{url}" in a for a in args):
        fields["url"] = request.getfixturevalue("service").url
        fields["token"] = admin.issue_token("admin")
    env = {"RAIN_USER": "bob"} if case == "over quota" else None

    def state() -> dict[str, object]:
        return {name: list(db[name].find({}, {"when": 0})) for name in ("images", "users", "fs.files", "blobs")} | \
            {"chunks": db["fs.chunks"].count_documents({})}

    before = state()

    result = fg(*[a.format(**fields) for a in args], env=env, cwd=tmp_path)

    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert words in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert state() == before
    assert {p.name for p in tmp_path.iterdir() if p.is_file()} <= {"big.raw", "serve.log"}


def test_embedded_repository_starts_on_demand_stops_and_keeps_its_data(rain_env, make_file, tmp_path):
    env = {k: v for k, v in rain_env.items() if k not in ("RAIN_MONGO_URI", "RAIN_MONGO_DB")}
    env["RAIN_DATA_DIR"] = str(tmp_path / "own-data")

    def fg(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(FG_IMAGE), *args], env=env, capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        return result

    try:
        assert json_out(fg("repo", "status", "--json"))["running"] is False
        image_id = fg("upload", str(make_file(MiB, "kept.raw"))).stdout.strip()
        status = json_out(fg("repo", "status", "--json"))
        assert status["mode"] == "embedded" and status["running"] is True and status["pid"]
        assert status["data"].startswith(str(tmp_path / "own-data"))
        assert "running: True" in fg("repo", "status").stdout

        assert "stopped" in fg("repo", "stop").stdout
        assert json_out(fg("repo", "status", "--json"))["running"] is False
        assert "not running" in fg("repo", "stop").stdout

        assert [i["id"] for i in json_out(fg("list", "--json"))] == [image_id]  # started again, data intact
        assert json_out(fg("repo", "status", "--json"))["running"] is True
    finally:
        embedded.stop(tmp_path / "own-data")


def test_config_show_gives_each_value_its_source_and_hides_secrets(tmp_path):
    config = tmp_path / "rain.toml"
    config.write_text('mongo_db = "from-file"\ntimeout = 11\nrepo_url = "http://file.example:1"\n'
                      'mongo_uri = "mongodb://rain:file-s3cret@db.example:27017/"\nserve_port = 9000\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAIN_")}
    env.update({"RAIN_CONFIG": str(config), "RAIN_TIMEOUT": "12", "RAIN_REPO_URL": "http://env.example:2",
                "RAIN_SERVE_PORT": "9001", "RAIN_DATA_DIR": str(tmp_path / "data")})
    argv = [str(FG_IMAGE), "--repo", "http://flag.example:3", "--token", "rain_flag-secret", "config", "show"]

    result = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True, timeout=60)
    shown = json_out(result)
    rows = {s["name"]: (s["value"], s["source"]) for s in shown["settings"]}
    assert shown["config_file"] == str(config)
    assert rows["mirror"] == ("", "default")
    assert rows["mongo_db"] == ("from-file", f"file {config}")
    assert rows["timeout"] == ("12", "env RAIN_TIMEOUT")
    assert rows["serve_port"] == ("9001", "env RAIN_SERVE_PORT")
    assert rows["repo_url"] == ("http://flag.example:3", "flag")
    assert rows["token"] == ("***", "flag")
    assert rows["mongo_uri"] == ("mongodb://***@db.example:27017/", f"file {config}")

    table = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert f"config file: {config}" in table.stdout
    assert "from-file" in table.stdout and "env RAIN_TIMEOUT" in table.stdout
    for out in (result.stdout, table.stdout):
        assert "file-s3cret" not in out and "flag-secret" not in out
