"""The default mirror comes from the host's package-manager configuration, never from Rain."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rain.errors import RecipeError
from rain.generate import mirror
from rain.generate.recipe import OsFamily, Recipe

DEB822 = """\
Types: deb deb-src
URIs: http://archive.example.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example.test/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb822_sources_give_the_archive_of_that_family(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert mirror.host_apt_mirror(OsFamily.DEBIAN, tmp_path) == "http://archive.example.test/debian"
    assert mirror.host_apt_mirror(OsFamily.UBUNTU, tmp_path) is None


def test_one_line_sources_with_options(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("# comment\ndeb [arch=amd64 signed-by=/k.gpg] "
                                           "http://ubuntu.example.test/ubuntu noble main universe\n")
    assert mirror.host_apt_mirror(OsFamily.UBUNTU, tmp_path) == "http://ubuntu.example.test/ubuntu"


def test_dnf_repo_files(tmp_path: Path) -> None:
    (tmp_path / "a.repo").write_text("[off]\nenabled=0\nbaseurl=http://off.example.test/\n"
                                     "[on]\nbaseurl=http://rpm.example.test/9/BaseOS/x86_64/os/\n")
    assert mirror.host_dnf_baseurl((tmp_path,)) == "http://rpm.example.test/9/BaseOS/x86_64/os/"


def test_recipe_mirror_wins_then_the_setting() -> None:
    r = Recipe.model_validate({"name": "x", "os": {"family": "debian", "release": "bookworm"},
                               "mirror": "http://mine.example.test/debian/"})
    assert mirror.resolve_mirror(r, "http://setting.example.test/d") == "http://mine.example.test/debian"
    r2 = r.model_copy(update={"mirror": None})
    assert mirror.resolve_mirror(r2, "http://setting.example.test/d") == "http://setting.example.test/d"


def test_no_mirror_anywhere_says_where_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror, "host_dnf_baseurl", lambda *a: None)
    r = Recipe.model_validate({"name": "x", "os": {"family": "fedora", "release": "40"}})
    with pytest.raises(RecipeError, match="mirror") as e:
        mirror.resolve_mirror(r, None)
    assert "repositories" in (e.value.hint or "")


def test_this_hosts_apt_config_gives_a_debian_mirror() -> None:
    """A Debian recipe without a mirror builds from the archive this host's apt lists (this host runs Debian):
    the main archive, not the security one, as written in the host's sources (less a trailing slash)."""
    found = mirror.host_apt_mirror(OsFamily.DEBIAN)
    assert found and found.startswith(("http://", "https://", "file://")) and not found.endswith("/")
    r = Recipe.model_validate({"name": "x", "os": {"family": "debian", "release": "bookworm"}})
    assert mirror.resolve_mirror(r, None) == found
    sources = [p for p in (mirror.APT_DIR / "sources.list", *sorted(mirror.APT_DIR.glob("sources.list.d/*")))
               if p.is_file() and p.suffix in (".list", ".sources")]
    lines = [ln for p in sources for ln in p.read_text().splitlines() if not ln.lstrip().startswith("#")]
    listed = re.findall(r"(?:https?|file)://[^\s\]]+", "\n".join(lines))
    assert found in {u.rstrip("/") for u in listed}
    assert "security" not in found
