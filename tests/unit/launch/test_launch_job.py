"""What a launch brings back from a machine, and what it lets a user ask for: a machine's tar stream is
unpacked as a new directory with nothing outside it, no device node, and nothing at all if it is refused."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from rain.errors import InvalidInput
from rain.launch import local
from rain.launch.job import JobError, remote_dir, unpack


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    buffer.seek(0)
    return buffer


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def test_a_download_arrives_whole_as_a_new_directory(tmp_path: Path) -> None:
    archive = _tar((_info(".", tarfile.DIRTYPE), b""), (_info("./result.txt"), b"42\n"),
                   (_info("./logs", tarfile.DIRTYPE), b""), (_info("./logs/a.log"), b"a"),
                   (_info("./latest", tarfile.SYMTYPE, "logs/a.log"), b""))
    assert unpack(archive, tmp_path / "out", "node1") == 2
    assert (tmp_path / "out" / "result.txt").read_text() == "42\n"
    assert (tmp_path / "out" / "latest").read_text() == "a", "a link inside the download is kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging directory is left"


@pytest.mark.parametrize("member", [
    _info("../escaped"),
    _info("./link", tarfile.SYMTYPE, "../../etc/passwd"),
    _info("./abs-link", tarfile.SYMTYPE, "/etc/passwd"),
    _info("./dev", tarfile.CHRTYPE),
    _info("./fifo", tarfile.FIFOTYPE),
], ids=["dotdot", "link-out", "absolute-link", "device", "fifo"])
def test_a_hostile_download_is_refused_and_leaves_nothing(tmp_path: Path, member: tarfile.TarInfo) -> None:
    archive = _tar((_info("./good.txt"), b"fine"), (member, b"x"))
    with pytest.raises(JobError, match="refused .* from node1"):
        unpack(archive, tmp_path / "out", "node1")
    assert list(tmp_path.iterdir()) == [], "neither the directory nor its staging copy is left"
    assert not (tmp_path.parent / "escaped").exists()


def test_an_absolute_name_lands_inside_the_download(tmp_path: Path) -> None:
    unpack(_tar((_info("/etc/escaped"), b"x")), tmp_path / "out", "node1")
    assert (tmp_path / "out" / "etc" / "escaped").read_bytes() == b"x"
    assert not Path("/etc/escaped").exists()


def test_a_stream_that_is_not_a_tar_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="not a tar stream"):
        unpack(io.BytesIO(b"tar: out: Cannot open: No such file or directory\n" * 20), tmp_path / "out", "node1")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["", "/abs", "../up", "a/../../b", "bad\nname"])
def test_download_must_name_a_directory_under_the_job(text: str) -> None:
    with pytest.raises(InvalidInput, match="--download"):
        remote_dir(text)


def test_each_machine_is_seeded_with_its_own_host_key_the_launch_key_and_every_name() -> None:
    from rain.host.ssh import KeyPair

    key, host = KeyPair.generate("client"), KeyPair.generate("host")
    text = local._cloud_config(key, host, "10.99.0.11 node1\n10.99.0.12 node2\n")
    assert text.startswith("#cloud-config\n")
    config = json.loads(text.split("\n", 1)[1])
    assert config["ssh_authorized_keys"] == [key.public_line]
    assert config["ssh_keys"]["ed25519_private"] == host.private_openssh
    assert config["ssh_genkeytypes"] == [] and config["ssh_deletekeys"] is True, "no host key but the pinned one"
    assert config["manage_etc_hosts"] is False, "else cloud-init rewrites /etc/hosts and the names are lost"
    assert config["write_files"] == [{"path": "/etc/hosts", "append": True,
                                      "content": "10.99.0.11 node1\n10.99.0.12 node2\n"}]
