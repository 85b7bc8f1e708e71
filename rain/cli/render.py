"""Tables and detail views: images, users, events, builds, caches, registrations.

Every table `fg-image` prints is made by `table()`, in one style: UPPERCASE
headers, no box, no padding at the edges; sizes are `rain.sizes.human` (1.5 GiB).
Every cell holds values others chose (names, descriptions, OS fields, remote
ids, tool output), so each goes in as plain text (untrusted.plain): never
parsed as markup, control characters shown rather than sent to the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from rain.cli.common import console
from rain.cli.untrusted import plain
from rain.image import sbom
from rain.repository.models import Event, Image, ImageSummary, Registration, User
from rain.sizes import human

if TYPE_CHECKING:
    from rain.generate.batch import Outcome
    from rain.generate.cache import CacheEntry


def table(*columns: str, title: str | None = None) -> Table:
    """An empty table in Rain's one style, with these column headers (shown in capitals)."""
    made = Table(box=None, pad_edge=False, title=title)
    for column in columns:
        made.add_column(column.upper())
    return made


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _row(table: Table, *cells: object) -> None:
    table.add_row(*(plain(c) for c in cells))


def images_table(images: Sequence[ImageSummary]) -> None:
    if not images:
        console.print("no images")
        return
    shown = table("id", "name", "owner", "os", "format", "size", "status", "access", "created")
    for column in shown.columns:
        column.no_wrap = column.header != "NAME"
    for i in images:
        os_text = "/".join(p for p in (i.os.family, i.os.release, i.os.arch) if p) or "-"
        access = i.visibility.value + (f"+{len(i.shared_with)}" if i.shared_with else "")
        _row(shown, i.id, i.name, i.owner, os_text, i.format, human(i.size), i.status.value, access,
             when(i.created))
    console.print(shown)


def _boot(manifest: dict, fmt: str) -> str | None:
    """raw/qcow2 only: whether the disk boots by itself (from the build's manifest)."""
    for a in manifest.get("artifacts") or []:
        if isinstance(a, dict) and a.get("format") == fmt and "bootable" in a:
            return ("BIOS and UEFI (GRUB on a GPT disk; the image's own kernel)" if a["bootable"] else
                    "not bootable: the image has no kernel (add linux-image-amd64 to the recipe's packages)")
    return None


def image_detail(i: Image, derived: Sequence[ImageSummary] | None = None) -> None:
    rows: list[tuple[str, str]] = [
        ("id", i.id), ("name", i.name), ("owner", i.owner),
        ("os", "/".join(p for p in (i.os.family, i.os.release, i.os.arch) if p) or "-"),
        ("format", i.format), ("size", f"{human(i.size)} ({i.size} bytes)"), ("sha256", i.sha256 or "-"),
        ("status", i.status.value), ("visibility", i.visibility.value),
        ("shared with", ", ".join(i.shared_with) or "-"), ("tags", ", ".join(i.tags) or "-"),
        ("description", i.description or "-"), ("created", when(i.created)),
        ("last access", when(i.last_access)), ("access count", str(i.access_count)),
        ("parent", i.parent or "-"),
    ]
    if i.provenance and i.provenance.get("derived_from"):  # a registration's adapted copy: what Rain changed
        p = i.provenance
        rows.append(("provenance", f"derived from {p['derived_from']} for {p.get('target', '?')}"
                                   f"{'@' + str(p['site']) if p.get('site') else ''}, {p.get('tool', 'rain')}"))
        rows.extend(("adapted", str(line)) for line in p.get("changes") or [])
        if p.get("sbom"):  # the SBOM of the image it was adapted from (what adapt added is in `adapted`)
            rows.append(("sbom", f"of {p['derived_from']}: sha256 {str(p['sbom'])[:16]}"))
    elif i.provenance:
        p = i.provenance
        packages = p.get("packages") or []
        count = len(packages) if isinstance(packages, list) else "?"
        rows.append(("provenance", f"recipe {str(p.get('recipe_hash', '?'))[:12]}, {count} packages, "
                                   f"builder {p.get('builder', '?')}, rain {p.get('rain_version', '?')}"))
        boot = _boot(p, i.format)
        if boot:
            rows.append(("boot", boot))
        digest = sbom.digest_of(p, i.sha256, i.format)
        if digest:
            rows.append(("sbom", f"SPDX 2.3, sha256 {digest[:16]} (`fg-image sbom {i.id}`)"))
    for target, report in sorted(i.vetting.items()):
        verdict = report.get("verdict", "?") if isinstance(report, dict) else "?"
        rows.append((f"vetting {target}", str(verdict)))
    for rv in i.reader_vetting:  # readers' own runs: shown, but they set no verdict
        rows.append((f"vetting {rv.target} by {rv.user}", f"{rv.verdict} ({when(rv.when)})"))
    if i.quarantined:
        rows.append(("quarantined for", ", ".join(i.quarantined)))
    for r in i.registrations:
        site = f"@{r.site}" if r.site else ""
        sbom_of = f", from SBOM {str(r.detail['sbom'])[:16]}" if r.detail.get("sbom") else ""
        rows.append(("registered", f"{r.target}{site}: {r.remote_id} ({when(r.when)}){sbom_of}"))
    for rep in i.reproductions:
        if rep.identical:
            rows.append(("reproduced", f"on {when(rep.when)} by {rep.by} ({rep.format}, {rep.builder} builder)"))
        else:
            rows.append(("not reproduced", f"on {when(rep.when)} by {rep.by} ({rep.format}, {rep.builder} builder): "
                                           + "; ".join([*rep.differences[:3], *([rep.note] if rep.note else [])])))
    for d in derived or []:
        rows.append(("derived", f"{d.id} {d.name} ({d.format}, {human(d.size)})"))
    shown = table("", "")
    shown.show_header = False
    shown.columns[0].style = "bold"
    for key, value in rows:
        _row(shown, key, value)
    console.print(shown)


def users_table(users: list[User]) -> None:
    shown = table("name", "role", "status", "used", "quota", "created")
    for u in users:
        _row(shown, u.name, u.role.value, u.status.value, human(u.used_bytes), human(u.quota_bytes),
             when(u.created))
    console.print(shown)


def events_table(events: list[Event]) -> None:
    if not events:
        console.print("no history")
        return
    shown = table("when", "user", "action", "image", "detail")
    for e in events:
        image = f"{e.image_id} ({e.image_name})" if e.image_id else "-"
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items() if v not in (None, "", [], {}))
        _row(shown, e.when.strftime("%Y-%m-%d %H:%M:%S"), e.user, e.action, image, detail)
    console.print(shown)


def registrations_table(registrations: Sequence[Registration]) -> None:
    shown = table("target", "site", "remote id", "when", "derived image")
    for r in registrations:
        _row(shown, r.target, r.site, r.remote_id, when(r.when), r.detail.get("derived_image", ""))
    console.print(shown)


def batch_table(title: str, outcomes: Sequence[Outcome]) -> None:
    """A batch's builds: each entry, its image, outcome (coloured), time, the base system it started from
    (made by it or shared from the base cache), and image ids or error."""
    shown = table("entry", "image", "outcome", "time", "base", "image ids / error", title=title)
    colour = {"built": "green", "cached": "green", "failed": "red", "skipped": "yellow"}
    for o in outcomes:
        detail = o.error or " ".join(f"{v} ({k})" for k, v in o.image_ids.items())
        if not detail and o.result is not None:
            detail = str(o.result.directory)
        c = colour.get(o.status, "cyan")
        # labels like recipe.yaml[release=trixie] and errors quoting tool output are text, not rich markup
        shown.add_row(plain(o.label), plain(o.name), f"[{c}]{o.status}[/{c}]",
                      f"{o.seconds:.0f}s" if o.seconds else "", plain(o.base), plain(detail))
    console.print(shown)


def cache_table(entries: Sequence[CacheEntry], where: Path) -> None:
    """Cache entries with their sizes and last use, then the total."""
    shown = table("kind", "key", "size", "last used", "detail")
    for e in entries:
        _row(shown, str(e.kind), e.key[:40], human(e.size),
             time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)), e.detail)
    console.print(shown)
    console.print(f"total {human(sum(e.size for e in entries))} in {where}", highlight=False)
