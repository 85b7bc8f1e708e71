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
import requests
import yaml
from support.openstack_cloud import SIZE_CAP, TOKEN_SECONDS, Cloud, EdgeKeystone, password
from support.simulators.tcp_cut import StallingRelay

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


@pytest.mark.parametrize("upload", ["auto", "put"])
def test_publish_gives_an_active_image_as_rain_made_it_and_delete_removes_it(
        glance: Cloud, packed: Packed, monkeypatch: pytest.MonkeyPatch, upload: str) -> None:
    t = target(glance, monkeypatch, "alice", firmware="uefi", properties={"site_note": "gpu"}, upload=upload)
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
    # auto: this Glance offers glance-direct, so the bytes were staged and imported (which leaves its mark)
    assert ("os_glance_importing_to_stores" in image) == (upload == "auto")

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


def test_a_shared_image_has_the_other_project_as_member(glance: Cloud, packed: Packed,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    other = glance.projects["other"]
    image_id = target(glance, monkeypatch, "alice", share_with=[other]).publish(packed, LABEL)
    assert glance.image(image_id, "alice").json()["visibility"] == "shared"
    members = requests.get(f"{glance.glance}/v2/images/{image_id}/members", timeout=30,
                           headers={"X-Auth-Token": glance.token("alice")}).json()["members"]
    assert [(m["member_id"], m["status"]) for m in members] == [(other, "pending")]
    assert glance.image(image_id, "carol").status_code == 200, "the member project sees it"
    target(glance, monkeypatch, "alice").delete(image_id)


def test_a_project_name_is_not_a_member_id(glance: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as e:
        target(glance, monkeypatch, "alice", share_with=["other"])
    assert "'other' is not a project id" in e.value.one_line() and "openstack project show" in e.value.one_line()


def test_an_application_credential_logs_in_without_user_or_password(glance: Cloud, packed: Packed,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cred_id, secret = glance.app_credential("alice")
    monkeypatch.setenv("RAIN_TEST_OS_APP_SECRET", secret)
    path = glance.root / f"targets-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump({"openstack": {"real": {
        "auth_url": glance.keystone.removesuffix("/v3"), "application_credential_id": cred_id,
        "application_credential_secret_env": "RAIN_TEST_OS_APP_SECRET"}}}))
    t, _ = open_target(load_settings(environ={"RAIN_TARGETS_FILE": str(path)}), "openstack", "real")
    image_id = t.publish(packed, LABEL)
    assert glance.image(image_id, "alice").json()["owner"] == glance.projects["rain"]
    t.delete(image_id)


def test_a_cloud_from_clouds_yaml_with_a_bare_auth_url(glance: Cloud, packed: Packed, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"lab": {"region_name": "RegionOne", "auth": {
        "auth_url": glance.keystone.removesuffix("/v3"), "username": "alice", "password": password("alice"),
        "project_name": "rain", "user_domain_name": "Default", "project_domain_name": "Default"}}}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"openstack": {"lab": {"cloud": "lab"}, "typo": {"cloud": "lba"}}}))
    settings = load_settings(environ={"RAIN_TARGETS_FILE": str(path)})
    t, _ = open_target(settings, "openstack", "lab")
    image_id = t.publish(packed, LABEL)
    assert glance.image(image_id, "alice").json()["owner"] == glance.projects["rain"]
    t.delete(image_id)

    with pytest.raises(ConfigError) as e:
        open_target(settings, "openstack", "typo")
    assert f"no cloud 'lba' in clouds.yaml (read: {clouds}; clouds there: lab)" in e.value.one_line()

    clouds.write_text(yaml.safe_dump({"clouds": {"lab": {"auth": {"auth_url": glance.keystone, "username": "alice",
                                                                  "project_name": "rain"}}}}))
    with pytest.raises(ConfigError) as e:  # said when the settings are read, not as an internal error later
        open_target(settings, "openstack", "lab")
    assert e.value.message == "clouds.yaml cloud 'lab' has no password", e.value.one_line()
    assert "password_env" in (e.value.hint or "")


def test_a_region_without_glance_names_the_regions_that_have_one(glance: Cloud, packed: Packed,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as e:
        target(glance, monkeypatch, "alice", region="Atlantis").publish(packed, LABEL)
    text = e.value.one_line()
    assert "no public image endpoint in region Atlantis (regions with one: RegionOne)" in text, text
    assert "region" in (e.value.hint or "")


def test_glance_down_is_unreachable_naming_glance_in_register_and_deregister(
        glance: Cloud, packed: Packed, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    with glance.region("Down", down):
        t = target(glance, monkeypatch, "alice", region="Down")
        with pytest.raises(RainError) as e:
            t.publish(packed, LABEL)
        assert e.value.exit_code == ExitCode.UNREACHABLE
        assert f"at {down}/v2/info/import: Connection refused" in e.value.one_line(), e.value.one_line()
        assert "region and interface" in (e.value.hint or "")
        with pytest.raises(RainError) as e:
            t.delete("9c1d6f3e-0000-4000-8000-000000000000")
        assert e.value.exit_code == ExitCode.UNREACHABLE and "deleting the image" in e.value.one_line()


def test_glance_s_size_cap_is_its_own_words_and_nothing_is_left(glance: Cloud, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.qcow2"
    with open(big, "wb") as f:  # sparse: cheap to make, still SIZE_CAP + 1 MiB on the wire
        f.truncate(SIZE_CAP + (1 << 20))
    with pytest.raises(RainError) as e:
        target(glance, monkeypatch, "alice").publish(Packed(tmp_path, {"big.qcow2": big}, "big.qcow2", "qcow2"),
                                                    LABEL)
    assert e.value.exit_code == ExitCode.TARGET
    text = e.value.one_line()
    assert "uploading the image failed: HTTP 413: The incoming image is too large" in text and "<" not in text, text


def test_tls_with_a_ca_nobody_trusts_is_refused_with_the_cacert_hint(
        glance: Cloud, edge_keystone: EdgeKeystone, packed: Packed, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RainError) as e:
        target(glance, monkeypatch, "alice", auth_url=edge_keystone.url).publish(packed, LABEL)
    assert e.value.exit_code == ExitCode.UNREACHABLE
    assert "over TLS: certificate verify failed" in e.value.one_line(), e.value.one_line()
    assert "cacert" in (e.value.hint or "")


def test_with_the_ca_configured_an_upload_outliving_its_token_completes(
        glance: Cloud, edge_keystone: EdgeKeystone, packed: Packed, monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = glance.glance.removeprefix("http://").split(":")
    relay = StallingRelay(host, int(port), b"PUT /v2/images/", after=4096, stall=TOKEN_SECONDS + 2)
    try:
        with glance.region("Slow", f"http://127.0.0.1:{relay.port}"):
            t = target(glance, monkeypatch, "alice", auth_url=edge_keystone.url, cacert=str(edge_keystone.tls.ca),
                       region="Slow")
            before = edge_keystone.token(password("alice"))
            image_id = t.publish(packed, LABEL)
            assert relay.stalled == 1
            assert glance.image_as(image_id, before).status_code == 401, "a token from before the upload expired"
            assert glance.image(image_id, "alice").json()["status"] == "active"
            t.delete(image_id)
    finally:
        relay.stop()


@pytest.mark.parametrize("upload", ["import", "put"])
def test_bytes_glance_refuses_are_refused_with_its_words_and_nothing_is_left(
        glance: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upload: str) -> None:
    raw = tmp_path / "disk.qcow2"  # called qcow2, but raw bytes: Glance's format check refuses them
    raw.write_bytes(b"\0" * 65536)
    with pytest.raises(RainError) as e:
        target(glance, monkeypatch, "alice", upload=upload).publish(
            Packed(tmp_path, {"disk.qcow2": raw}, "disk.qcow2", "qcow2"), LABEL)
    assert e.value.exit_code == ExitCode.TARGET
    text = e.value.one_line()
    if upload == "import":  # the task's message is all Glance tells a client; the hint says where to look
        assert "Glance could not import image" in text and "Task failed" in text, text
        assert "Glance's log" in (e.value.hint or "") and "disk_format" in (e.value.hint or "")
    else:  # Glance's (odd) words for bytes that are not the declared format
        assert "uploading the image failed: HTTP 415: The request media type" in text, text
