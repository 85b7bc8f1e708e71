"""Values other people control, made safe to show and to use as a file name.

Names, descriptions, OS fields, user names, remote ids and vetting findings
come from the repository, which another user, an older Rain or a hostile
service may have filled. Printed as rich markup, `[/]` crashes the command;
printed raw, escape sequences rewrite the user's terminal. A download's
default file name comes from the same place and must not climb out of the
directory the user is in.
"""

from __future__ import annotations

import re

from rich.markup import escape
from rich.text import Text

from rain.errors import IntegrityError
from rain.repository.models import ID_RE

NAME_LIMIT = 128  # an image name's own limit; with a format it stays far below a file system's 255 bytes
FORMAT_LIMIT = 32


def visible(value: object) -> str:
    """The value as one line of text, every character a terminal would act on (ESC, BEL, CR,
    newlines, C1 controls, bidi overrides, lone surrogates) written out the way repr() writes it."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def plain(value: object) -> Text:
    """A table cell or line that rich prints as the text it is: markup is not parsed in a Text."""
    return Text(visible(value))


def markup(value: object) -> str:
    """The value, visible and escaped, for the places that build a rich markup string around it."""
    return escape(visible(value))


def _safe_part(text: str, limit: int) -> str:
    """ASCII letters, digits and . _ + - only; no '..'; starting with a letter or digit."""
    kept = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "._+-" else "_" for ch in text)
    return re.sub(r"\.{2,}", ".", kept).lstrip("._+-")[:limit]


def checked_id(answered: str, asked: str) -> str:
    """The id a repository answered, if it is the one asked for; anything else means the service
    is broken or hostile, and its answer must not name files."""
    if answered != asked or not ID_RE.match(answered or ""):
        raise IntegrityError(f"the repository answered image id {answered[:40]!r} for {asked}",
                             hint="the repository service is misbehaving; tell its operator")
    return answered


def local_file_name(name: str, fmt: str, image_id: str) -> str:
    """One file name in the current directory for an image: NAME.FORMAT made safe, else the id.

    Never empty, never '.', '..', a hidden file or a path; at most 161 ASCII characters.
    """
    if not ID_RE.match(image_id or ""):
        raise IntegrityError(f"bad image id {image_id[:40]!r}", hint="ids are 12 hex digits")
    stem = _safe_part(name, NAME_LIMIT).rstrip(".") or image_id
    suffix = _safe_part(fmt, FORMAT_LIMIT).rstrip(".")
    return f"{stem}.{suffix}" if suffix else stem
