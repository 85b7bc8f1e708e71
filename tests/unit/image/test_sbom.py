"""An image's SBOM (issue #16, acceptance 4): SPDX 2.3 JSON that SPDX's own validator (spdx-tools) accepts,
listing every package of the manifest with its version and license, and the image file's sha256.

The licenses come from the packages' own metadata: a Debian package's machine-readable copyright file, read
from an image root that may be hostile (links out of the root, FIFOs, huge files), so the reader is bounded
and never leaves the root.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.spdx import spdx_problems

from rain.errors import NotFound
from rain.generate.bootstrap.debian import dpkg_installed
from rain.image import sbom
from rain.image.licenses import COPYRIGHT_MAX, debian_license, dep5_license, spdx_expression
from rain.image.rootfs import RootFS

SHA = "0123456789abcdef" * 4
DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: {name}\n\n"


def manifest(packages: list[dict[str, str]], epoch: int | None = 1_700_000_000) -> dict:
    return {"name": "mini", "os": {"family": "debian", "release": "bookworm", "arch": "amd64"},
            "recipe_hash": "ab" * 32, "rain_version": "1.2.3", "source_date_epoch": epoch,
            "created": "2026-12-06T10:00:00+00:00", "packages": packages}


def problems(document: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / "doc.spdx.json"
    path.write_bytes(document)
    return spdx_problems(path)


def test_the_sbom_validates_lists_every_package_with_its_version_and_license_and_carries_the_sha256(tmp_path):
    packages = [{"name": "bash", "version": "5.2.15-2+b7", "arch": "amd64", "license": "GPL-3+"},
                {"name": "libc6", "version": "2.36-9+deb12u9", "arch": "amd64"},
                {"name": "perl-base", "version": "5.36.0-7+deb12u1", "arch": "amd64",
                 "license": "GPL-1+ or Artistic, and public-domain"},
                {"name": "libcryptsetup12", "version": "2:2.6.1-4~deb12u2", "arch": "amd64",
                 "license": "GPL-2+ with OpenSSL exception"}]
    document = sbom.render(manifest(packages), SHA, "tar.zst")
    assert problems(document, tmp_path) == []
    doc = json.loads(document)
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    [image] = [p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-Image"]
    assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": SHA}]
    listed = {p["name"]: p for p in doc["packages"] if p["SPDXID"] != "SPDXRef-Image"}
    assert {n: p["versionInfo"] for n, p in listed.items()} == {p["name"]: p["version"] for p in packages}
    assert listed["bash"]["licenseDeclared"] == "GPL-3.0-or-later"
    assert listed["libc6"]["licenseDeclared"] == "NOASSERTION"  # its copyright file states none a program can read
    assert listed["perl-base"]["licenseDeclared"] == "(GPL-1.0-or-later OR Artistic-1.0-Perl) AND " \
                                                     "LicenseRef-public-domain"
    assert listed["libcryptsetup12"]["externalRefs"][0]["referenceLocator"] == \
        "pkg:deb/debian/libcryptsetup12@2%3A2.6.1-4~deb12u2?arch=amd64&distro=debian-bookworm"
    contains = {r["relatedSpdxElement"] for r in doc["relationships"] if r["relationshipType"] == "CONTAINS"}
    assert contains == {p["SPDXID"] for p in listed.values()}
    # the same inputs give the same bytes: the document's sha256 names it (registrations record it)
    assert sbom.render(manifest(packages), SHA, "tar.zst") == document
    assert sbom.render(manifest(packages), "f" * 64, "tar.zst") != document


def test_an_sbom_of_an_rpm_image_validates(tmp_path):
    m = manifest([{"name": "bash", "version": "5.1.8-9.el9", "arch": "x86_64", "license": "GPLv3+"},
                  {"name": "glibc", "version": "2.34-100.el9", "arch": "x86_64",
                   "license": "LGPL-2.1-or-later AND SISSL AND LicenseRef-Fedora-Public-Domain AND GFDL-1.1-or-later"}])
    m["os"] = {"family": "rocky", "release": "9", "arch": "x86_64"}
    document = sbom.render(m, SHA, "qcow2")
    assert problems(document, tmp_path) == []
    purls = [p["externalRefs"][0]["referenceLocator"] for p in json.loads(document)["packages"][1:]]
    assert purls[0] == "pkg:rpm/rocky/bash@5.1.8-9.el9?arch=x86_64"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=4))
def test_whatever_a_package_names_as_its_license_the_document_still_validates(names, tmp_path):
    """A license name comes from the image (a copyright file, an RPM header): a name Rain cannot read as an
    expression becomes a LicenseRef, declared in the document, never an invalid document."""
    packages = [{"name": f"p{i}", "version": "1.0", "arch": "amd64", "license": n} for i, n in enumerate(names)]
    assert problems(sbom.render(manifest(packages), SHA, "raw"), tmp_path) == []


@pytest.mark.parametrize(("name", "expression"), [
    ("GPL-2+", "GPL-2.0-or-later"),
    ("Expat and (LGPL-2.1+ or GPL-2+)", "MIT AND (LGPL-2.1-or-later OR GPL-2.0-or-later)"),
    ("GPL-2+ or Artistic, and BSD-3-clause", "(GPL-2.0-or-later OR Artistic-1.0-Perl) AND BSD-3-Clause"),
    ("ASL 2.0", "Apache-2.0"),
    ("GPL-2+ and and MIT", "LicenseRef-GPL-2-and-and-MIT"),  # not an expression: one LicenseRef of it all
    ("(BSD", "LicenseRef-BSD"),
])
def test_license_names_become_spdx_expressions(name, expression):
    assert spdx_expression(name)[0] == expression


def test_the_license_of_files_star_else_of_the_header_and_none_for_prose():
    assert dep5_license(DEP5 + "Files: debian/*\nLicense: MIT\n\nFiles: *\nCopyright: x\nLicense: GPL-2+\n text\n") \
        == "GPL-2+"
    assert dep5_license(DEP5.replace("\n\n", "\nLicense: ISC\n\n") + "Files: src/*\nLicense: MIT\n") == "ISC"
    assert dep5_license("This is the Debian prepackaged version of bash.\n\nLicense: GPL-3+\n") is None


def test_the_copyright_reader_stays_in_the_image_and_never_blocks(tmp_path):
    root = tmp_path / "root"
    doc = root / "usr/share/doc"
    (doc / "good").mkdir(parents=True)
    (doc / "good/copyright").write_text(DEP5 + "Files: *\nLicense: GPL-3+\n")
    outside = tmp_path / "host-secret"
    outside.write_text(DEP5 + "Files: *\nLicense: HOST-FILE\n")
    (doc / "escape").mkdir()
    (doc / "escape/copyright").symlink_to(f"../../../../../../..{outside}")  # .. past the root stays at the root
    (doc / "absolute").mkdir()
    (doc / "absolute/copyright").symlink_to(outside)  # an absolute link is the image's own path
    (doc / "fifo").mkdir()
    os.mkfifo(doc / "fifo/copyright")
    (doc / "huge").mkdir()
    (doc / "huge/copyright").write_text(DEP5 + "x" * (2 * COPYRIGHT_MAX) + "\n\nFiles: *\nLicense: LATE\n")
    tree = RootFS(root)
    done: dict[str, str | None] = {}
    reader = threading.Thread(target=lambda: done.update(
        {p: debian_license(tree, p) for p in ("good", "escape", "absolute", "fifo", "huge", "missing")}), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO's copyright blocked"
    assert done == {"good": "GPL-3+", "escape": None, "absolute": None, "fifo": None, "huge": None, "missing": None}


def test_licenses_are_read_from_the_image_dpkg_lists(tmp_path):
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\nArchitecture: amd64\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: amd64\n\n")
    (root / "usr/share/doc/hello").mkdir(parents=True)
    (root / "usr/share/doc/hello/copyright").write_text(DEP5 + "Files: *\nLicense: GPL-3+\n")
    [hello] = dpkg_installed(root, licenses=True)
    assert (hello.name, hello.version, hello.license) == ("hello", "2.10-3", "GPL-3+")
    assert dpkg_installed(root)[0].license is None  # register's package diffs do not read copyright files


def test_an_image_no_build_made_has_no_sbom():
    with pytest.raises(NotFound, match="not built by `fg-image generate`"):
        sbom.sbom_for("abc", {"derived_from": "x", "changes": []}, SHA, "qcow2")
    with pytest.raises(NotFound):
        sbom.sbom_for("abc", None, SHA, "raw")
