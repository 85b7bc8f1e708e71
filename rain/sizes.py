"""Byte counts as people read them (1.5 GiB), for messages, tables and status lines."""

from __future__ import annotations


def human(n: int | None, none: str = "unlimited") -> str:
    """`n` bytes in binary units; `none` says what a missing count means where it is shown."""
    if n is None:
        return none
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
