"""The openstack target against the real Keystone and Glance (support/openstack_cloud.py).

What a user of a real cloud sees: the published image as Glance holds it, and
every refusal as one line with Keystone's or Glance's own reason and the
documented exit code (5: credentials refused; 12: the cloud declined the
action), with no image left behind (the `glance` fixture fails a test that
leaves one).
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from support.openstack_cloud import Cloud, password

from rain.config import load_settings
from rain.errors import ConfigError, ExitCode, RainError
from rain.register.models import Label, Packed
from rain.register.targets.openstack import OpenStackTarget
from rain.register.targets.sites import open_target

pytestmark = pytest.mark.integration

LABEL = Label(image_id="0123456789ab", name="deb12", os_family="debian", os_release="12")


@pytest.fixture
def packed(tmp_path: Path) -> Packed:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    with open(disk, "ab") as f:  # some content past the header, so size and checksums mean something
        f.write(b"rain" * 4096)
    return Packed(tmp_path, {"disk.qcow2": disk}, "disk.qcow2", "qcow2")


def target(cloud: Cloud, monkeypatch: pytest.MonkeyPatch, user: str, project: str = "rain",
           secret: str | None = None, **site: object) -> OpenStackTarget:
    """The openstack target as a user gets it: from a targets file naming the real Keystone."""
    monkeypatch.setenv("RAIN_TEST_OS_PASSWORD", secret if secret is not None else password(user))
    path = cloud.root / f"targets-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump({"openstack": {"real": {
        "auth_url": cloud.keystone, "username": user, "project_name": project,
        "password_env": "RAIN_TEST_OS_PASSWORD", "timeout": 60, **site}}}))
    made, _ = open_target(load_settings(environ={"RAIN_TARGETS_FILE": str(path)}), "openstack", "real")
    assert isinstance(made, OpenStackTarget)
    return made


def digest(path: Path, algorithm: str) -> str:
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


def test_publish_gives_an_active_image_as_rain_made_it_and_delete_removes_it(
        glance: Cloud, packed: Packed, monkeypatch: pytest.MonkeyPatch) -> None:
    t = target(glance, monkeypatch, "alice", firmware="uefi", properties={"site_note": "gpu"})
    image_id = t.publish(packed, LABEL)

    image = glance.image(image_id, "alice").json()
    disk = packed.primary_path
    assert image["status"] == "active" and image["name"] == LABEL.slug
    assert image["size"] == disk.stat().st_size
    assert image["os_hash_algo"] == "sha512" and image["os_hash_value"] == digest(disk, "sha512")
    assert image["checksum"] == digest(disk, "md5")
    assert (image["disk_format"], image["container_format"], image["visibility"]) == ("qcow2", "bare", "private")
    assert image["owner"] == glance.projects["rain"]
    assert {k: image[k] for k in ("os_distro", "os_version", "hw_firmware_type", "rain_image", "site_note")} == {
        "os_distro": "debian", "os_version": "12", "hw_firmware_type": "uefi", "rain_image": LABEL.image_id,
        "site_note": "gpu"}
    assert [i["id"] for i in glance.images("carol")] == [], "a private image is not seen from another project"

    t.delete(image_id)
    assert glance.image(image_id).status_code == 404


def test_a_reader_is_refused_with_glance_s_reason_and_exit_12(glance: Cloud, packed: Packed,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RainError) as e:
        target(glance, monkeypatch, "bob").publish(packed, LABEL)
    assert e.value.exit_code == ExitCode.TARGET
    text = e.value.one_line()
    assert "HTTP 403" in text and "not authorized to complete add_image" in text, text
    assert "member role in project rain" in text and "\n" not in text and "<" not in text


def test_a_member_may_not_publish_public_images_and_nothing_is_left(glance: Cloud, packed: Packed,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RainError) as e:
        target(glance, monkeypatch, "alice", visibility="public").publish(packed, LABEL)
    assert e.value.exit_code == ExitCode.TARGET
    assert "publicize_image" in e.value.one_line()


def test_a_wrong_password_is_keystone_s_401_with_exit_5(glance: Cloud, packed: Packed,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RainError) as e:
        target(glance, monkeypatch, "alice", secret="not-it").publish(packed, LABEL)
    assert e.value.exit_code == ExitCode.UNAUTHORIZED
    assert "requires authentication" in e.value.one_line() and "password" in (e.value.hint or "")


def test_a_bad_visibility_is_refused_before_anything_reaches_the_cloud(glance: Cloud,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as e:
        target(glance, monkeypatch, "alice", visibility="everyone")
    text = e.value.one_line()
    assert "visibility" in text and "everyone" in text and "'community'" in text and "\n" not in text, text


def test_a_bare_auth_url_as_in_openrc_files_finds_keystone_v3(glance: Cloud, packed: Packed,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    t = target(glance, monkeypatch, "alice", auth_url=glance.keystone.removesuffix("/v3"))
    image_id = t.publish(packed, LABEL)
    assert glance.image(image_id, "alice").json()["status"] == "active"
    t.delete(image_id)


def test_keystone_down_is_unreachable_naming_the_whole_url(glance: Cloud, packed: Packed,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v3"
    with pytest.raises(RainError) as e:
        target(glance, monkeypatch, "alice", auth_url=url).publish(packed, LABEL)
    assert e.value.exit_code == ExitCode.UNREACHABLE
    assert f"at {url}:" in e.value.one_line() and "auth_url" in (e.value.hint or "")
