"""OS releases Rain knows, by family: the names a recipe may use for each, and its version number.

generate checks a recipe's release against this table and bootstraps the codename; register
publishes the version number where a cloud wants one (Glance's os_version). Families are the
values of generate's OsFamily.
"""

from __future__ import annotations

RELEASES: dict[str, dict[str, str]] = {
    "debian": {"bullseye": "bullseye", "11": "bullseye", "bookworm": "bookworm", "12": "bookworm",
               "trixie": "trixie", "13": "trixie", "sid": "sid", "unstable": "sid"},
    "ubuntu": {"focal": "focal", "20.04": "focal", "jammy": "jammy", "22.04": "jammy",
               "noble": "noble", "24.04": "noble"},
    "rocky": {"8": "8", "9": "9", "10": "10"},
    "alma": {"8": "8", "9": "9", "10": "10"},
    "centos": {"9": "9", "stream9": "9", "10": "10", "stream10": "10"},
    "fedora": {str(n): str(n) for n in range(38, 44)},
}
"""Release names (numbers are aliases) → the name a family's tools use for that release."""


def release_version(family: str, release: str) -> str:
    """The release's version number where it has one (bookworm → 12, jammy → 22.04), else its codename
    (unstable → sid), else the release as given: the form OpenStack's os_version and libosinfo expect,
    whichever name a recipe or an upload used."""
    names = RELEASES.get(family.lower(), {})
    codename = names.get(release.lower())
    return next((k for k, v in names.items() if v == codename and k[:1].isdigit()), codename or release)
