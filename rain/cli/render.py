"""Tables and detail views for images, users and events.

Every cell holds values others chose (names, descriptions, OS fields, remote
ids), so each goes in as plain text (untrusted.plain): never parsed as markup,
control characters shown rather than sent to the terminal.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from rain.cli.common import console
from rain.cli.untrusted import plain
from rain.repository.accounts import human
from rain.repository.models import Event, Image, User


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _row(table: Table, *cells: object) -> None:
    table.add_row(*(plain(c) for c in cells))


def images_table(images: list[Image]) -> None:
    if not images:
        console.print("no images")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "NAME", "OWNER", "OS", "FORMAT", "SIZE", "STATUS", "ACCESS", "CREATED"):
        table.add_column(column, no_wrap=column != "NAME")
    for i in images:
        os_text = "/".join(p for p in (i.os.family, i.os.release, i.os.arch) if p) or "-"
        access = i.visibility.value + (f"+{len(i.shared_with)}" if i.shared_with else "")
        _row(table, i.id, i.name, i.owner, os_text, i.format, human(i.size), i.status.value, access,
             _when(i.created))
    console.print(table)


def _boot(manifest: dict, fmt: str) -> str | None:
    """raw/qcow2 only: whether the disk boots by itself (from the build's manifest)."""
    for a in manifest.get("artifacts") or []:
        if isinstance(a, dict) and a.get("format") == fmt and "bootable" in a:
            return ("BIOS and UEFI (GRUB on a GPT disk; the image's own kernel)" if a["bootable"] else
                    "not bootable: the image has no kernel (add linux-image-amd64 to the recipe's packages)")
    return None


def image_detail(i: Image, derived: list[Image] | None = None) -> None:
    rows: list[tuple[str, str]] = [
        ("id", i.id), ("name", i.name), ("owner", i.owner),
        ("os", "/".join(p for p in (i.os.family, i.os.release, i.os.arch) if p) or "-"),
        ("format", i.format), ("size", f"{human(i.size)} ({i.size} bytes)"), ("sha256", i.sha256 or "-"),
        ("status", i.status.value), ("visibility", i.visibility.value),
        ("shared with", ", ".join(i.shared_with) or "-"), ("tags", ", ".join(i.tags) or "-"),
        ("description", i.description or "-"), ("created", _when(i.created)),
        ("last access", _when(i.last_access)), ("access count", str(i.access_count)),
        ("parent", i.parent or "-"),
    ]
    if i.provenance and i.provenance.get("derived_from"):  # a registration's adapted copy: what Rain changed
        p = i.provenance
        rows.append(("provenance", f"derived from {p['derived_from']} for {p.get('target', '?')}"
                                   f"{'@' + str(p['site']) if p.get('site') else ''}, {p.get('tool', 'rain')}"))
        rows.extend(("adapted", str(line)) for line in p.get("changes") or [])
    elif i.provenance:
        p = i.provenance
        packages = p.get("packages") or []
        count = len(packages) if isinstance(packages, list) else "?"
        rows.append(("provenance", f"recipe {str(p.get('recipe_hash', '?'))[:12]}, {count} packages, "
                                   f"builder {p.get('builder', '?')}, rain {p.get('rain_version', '?')}"))
        boot = _boot(p, i.format)
        if boot:
            rows.append(("boot", boot))
    for target, report in sorted(i.vetting.items()):
        verdict = report.get("verdict", "?") if isinstance(report, dict) else "?"
        rows.append((f"vetting {target}", str(verdict)))
    for rv in i.reader_vetting:  # readers' own runs: shown, but they set no verdict
        rows.append((f"vetting {rv.target} by {rv.user}", f"{rv.verdict} ({_when(rv.when)})"))
    if i.quarantined:
        rows.append(("quarantined for", ", ".join(i.quarantined)))
    for r in i.registrations:
        site = f"@{r.site}" if r.site else ""
        rows.append(("registered", f"{r.target}{site}: {r.remote_id} ({_when(r.when)})"))
    for d in derived or []:
        rows.append(("derived", f"{d.id} {d.name} ({d.format}, {human(d.size)})"))
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        _row(table, key, value)
    console.print(table)


def users_table(users: list[User]) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "ROLE", "STATUS", "USED", "QUOTA", "CREATED"):
        table.add_column(column)
    for u in users:
        _row(table, u.name, u.role.value, u.status.value, human(u.used_bytes), human(u.quota_bytes),
             _when(u.created))
    console.print(table)


def events_table(events: list[Event]) -> None:
    if not events:
        console.print("no history")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("WHEN", "USER", "ACTION", "IMAGE", "DETAIL"):
        table.add_column(column)
    for e in events:
        image = f"{e.image_id} ({e.image_name})" if e.image_id else "-"
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items() if v not in (None, "", [], {}))
        _row(table, e.when.strftime("%Y-%m-%d %H:%M:%S"), e.user, e.action, image, detail)
    console.print(table)
