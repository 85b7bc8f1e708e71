"""The default package mirror, read from the host's own apt or dnf configuration.

Rain never names a mirror itself: a recipe's `mirror:`, else the `mirror`
setting, else the first matching source the host's package manager uses.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from rain.errors import RecipeError
from rain.generate.recipe import URL_RE, OsFamily, Recipe
from rain.releases import RELEASES

APT_DIR = Path("/etc/apt")
YUM_DIRS = (Path("/etc/yum.repos.d"), Path("/etc/distro.repos.d"))


def apt_sources(apt_dir: Path = APT_DIR) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every enabled `deb` source: deb822 *.sources first, then one-line lists."""
    found: list[tuple[str, list[str]]] = []
    d = apt_dir / "sources.list.d"
    for f in sorted(d.glob("*.sources")) if d.is_dir() else []:
        for stanza in re.split(r"\n\s*\n", _read(f)):
            fields = _deb822(stanza)
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                found.append((uri, fields.get("suites", "").split()))
    lists = [apt_dir / "sources.list"] + (sorted(d.glob("*.list")) if d.is_dir() else [])
    for f in lists:
        for line in _read(f).splitlines():
            line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()  # type: ignore[assignment]
            if len(line) >= 3 and line[0] == "deb":
                found.append((line[1], [line[2]]))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0] in " \t" and key:
            fields[key] += " " + line.strip()
            continue
        k, _, v = line.partition(":")
        key = k.strip().lower()
        fields[key] = v.strip()
    return fields


def host_apt_mirror(family: OsFamily, apt_dir: Path = APT_DIR) -> str | None:
    """The host's main archive for this family: a source whose suites include a release of it."""
    names = set(RELEASES[family].values())
    for uri, suites in apt_sources(apt_dir):
        if any(s in names for s in suites) and URL_RE.match(uri):
            return uri.rstrip("/")
    return None


def host_dnf_baseurl(yum_dirs: tuple[Path, ...] = YUM_DIRS) -> str | None:
    for d in yum_dirs:
        for f in sorted(d.glob("*.repo")) if d.is_dir() else []:
            cp = configparser.ConfigParser(interpolation=None)
            try:
                cp.read_string(_read(f))
            except configparser.Error:
                continue
            for section in cp.sections():
                if cp[section].get("enabled", "1").strip() in ("1", "true", "yes"):
                    url = cp[section].get("baseurl", "").split()
                    if url and URL_RE.match(url[0]):
                        return url[0]
    return None


def resolve_mirror(recipe: Recipe, setting: str | None) -> str:
    """The mirror this build uses, or a RecipeError saying how to give one."""
    if recipe.mirror:
        return recipe.mirror.rstrip("/")
    if setting:
        return setting.rstrip("/")
    fam = recipe.os.family
    found = host_apt_mirror(fam) if fam.is_debian else host_dnf_baseurl()
    if found:
        return found
    if not fam.is_debian and recipe.repositories:
        return ""  # the recipe's repositories are all there is
    where = "apt sources" if fam.is_debian else "dnf/yum repositories"
    raise RecipeError(f"mirror: no {fam} mirror in this host's {where}",
                      hint="set `mirror:` or `repositories:` in the recipe, or the `mirror` setting")
