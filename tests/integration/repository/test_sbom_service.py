"""`fg-image sbom ID` and GET /api/v1/images/ID/sbom (issue #16): the SBOM of a stored image, the same bytes
from the embedded repository, the service and the command, under the same access rules as the image.

The image carries a build manifest as `generate` writes it (uploaded with `--manifest`); the e2e generate
tests check the SBOM of a real build (tests/e2e/generate/test_generate_debian.py).
"""

from __future__ import annotations

import json

import pytest
import requests

from rain.image import sbom
from rain.repository.connect import open_store

pytestmark = pytest.mark.integration
API = "/api/v1"


def _manifest(tmp_path, payload: bytes) -> tuple:
    from rain.digests import sha256_of

    image = tmp_path / "mini.raw"
    image.write_bytes(payload)
    digest = sha256_of(image)
    manifest = {"name": "mini", "os": {"family": "debian", "release": "bookworm", "arch": "amd64"},
                "recipe_hash": "cd" * 32, "rain_version": "9.9", "source_date_epoch": 1_700_000_000,
                "packages": [{"name": "bash", "version": "5.2.15-2+b7", "arch": "amd64", "license": "GPL-3+"},
                             {"name": "libc6", "version": "2.36-9", "arch": "amd64"}],
                "artifacts": [{"format": "raw", "file": "mini.raw", "size": len(payload), "sha256": digest}]}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return image, path, manifest, digest


def test_the_sbom_is_served_printed_and_written_alike_and_only_to_those_who_may_read_the_image(
        fg, settings, service, tmp_path):
    admin = open_store(settings, "admin")
    for name in ("alice", "bob"):
        admin.add_user(name)
    tokens = {n: admin.issue_token(n) for n in ("alice", "bob")}

    def as_user(who: str, *args: str):
        return fg("--repo", service.url, "--token", tokens[who], *args)

    def served(who: str, image_id: str) -> requests.Response:
        return requests.get(f"{service.url}{API}/images/{image_id}/sbom", timeout=30,
                            headers={"Authorization": f"Bearer {tokens[who]}"})

    image, manifest_path, manifest, digest = _manifest(tmp_path, b"\x00image bytes\x01" * 1000)
    up = as_user("alice", "upload", str(image), "--manifest", str(manifest_path), "--name", "mini")
    assert up.returncode == 0, up.stderr
    image_id = up.stdout.strip().split()[-1]

    printed = as_user("alice", "sbom", image_id)
    assert printed.returncode == 0, printed.stderr
    answer = served("alice", image_id)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/spdx+json"
    assert answer.text == printed.stdout == sbom.render(manifest, digest, "raw").decode()
    doc = json.loads(answer.content)
    assert doc["packages"][0]["checksums"][0]["checksumValue"] == digest
    assert {p["name"]: p["versionInfo"] for p in doc["packages"][1:]} == {"bash": "5.2.15-2+b7", "libc6": "2.36-9"}
    # `show` names it by its sha256, and a later change of the record's format does not change the document
    assert f"sha256 {sbom.digest(answer.content)[:16]}" in as_user("alice", "show", image_id).stdout
    assert as_user("alice", "modify", image_id, "--format", "qcow2").returncode == 0
    assert served("alice", image_id).content == answer.content
    assert f"sha256 {sbom.digest(answer.content)[:16]}" in as_user("alice", "show", image_id).stdout

    # bob may not read alice's private image: its SBOM is as unknown to him as the image
    assert served("bob", image_id).status_code == 404
    refused = as_user("bob", "sbom", image_id)
    assert refused.returncode == 3 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert as_user("alice", "share", image_id, "bob").returncode == 0
    assert served("bob", image_id).content == answer.content

    # the embedded repository (no service) gives the same bytes, to a file with --output
    out = tmp_path / "out" / "mini.spdx.json"
    out.parent.mkdir()
    local = fg("sbom", image_id, "--output", str(out), env={"RAIN_USER": "admin"})
    assert local.returncode == 0, local.stderr
    assert out.read_bytes() == answer.content and [p.name for p in out.parent.iterdir()] == ["mini.spdx.json"]
    bad = fg("sbom", image_id, "--output", str(tmp_path / "missing-dir" / "x.json"), env={"RAIN_USER": "admin"})
    assert bad.returncode == 2 and "missing-dir" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "missing-dir").exists()

    # an image uploaded without a build manifest has none: one line, exit 3, and a 404 from the service
    plain = as_user("alice", "upload", str(image), "--name", "plain")
    plain_id = plain.stdout.strip().split()[-1]
    none = as_user("alice", "sbom", plain_id)
    assert none.returncode == 3 and "not built by `fg-image generate`" in none.stderr, none.stderr
    assert len(none.stderr.strip().splitlines()) == 1
    assert served("alice", plain_id).json()["error"] == "not_found"
