"""A tiny local RPM repository built for real: rpmbuild a noarch package, createrepo_c it.

No RHEL mirror is reachable from CI, so the RHEL path is tested against this.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SPEC = """\
Name: {name}
Version: {version}
Release: 1
Summary: Rain test package
License: Apache-2.0
BuildArch: noarch
%description
A file that proves the package was installed.
%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo "{name} {version} installed by rain" > %{{buildroot}}/usr/share/{name}/README
%files
/usr/share/{name}/README
"""


COMPS = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" "comps.dtd">
<comps>
  <group>
    <id>core</id>
    <name>Core</name>
    <description>The @core group a base variant installs</description>
    <default>true</default>
    <uservisible>false</uservisible>
    <packagelist>
{packages}
    </packagelist>
  </group>
</comps>
"""


def build_rpm_repo(where: Path, names: tuple[str, ...] = ("rain-probe",), core: tuple[str, ...] = (),
                   versions: tuple[str, ...] = ("1.0",), built: int | None = None) -> Path:
    """A createrepo_c repository at where/repo with a noarch package per name and version (release 1);
    with `core`, a comps group `core` of those packages (what `variant: important` installs as the base).
    Called again with more versions, the same repository offers those too (a mirror that moved on).
    `built`: the first package's BUILDTIME, each next one a minute later (rpm's SOURCE_DATE_EPOCH); None:
    the time rpmbuild runs."""
    for tool in ("rpmbuild", "createrepo_c"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/setup.sh"
    top, repo = where / "rpmbuild", where / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    for n, (name, version) in enumerate((name, version) for name in names for version in versions):
        spec = where / f"{name}-{version}.spec"
        spec.write_text(SPEC.format(name=name, version=version))
        fixed = [] if built is None else ["--define", "use_source_date_epoch_as_buildtime 1"]
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(built + 60 * n)} if built is not None else None
        subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", *fixed, str(spec)], check=True,
                       capture_output=True, env=env)
    for rpm in (top / "RPMS" / "noarch").glob("*.rpm"):
        shutil.copy(rpm, repo)
    groups = []
    if core:
        comps = where / "comps.xml"
        comps.write_text(COMPS.format(packages="\n".join(
            f'      <packagereq type="mandatory">{n}</packagereq>' for n in core)))
        groups = ["-g", str(comps)]
    subprocess.run(["createrepo_c", "-q", *groups, str(repo)], check=True)
    return repo
