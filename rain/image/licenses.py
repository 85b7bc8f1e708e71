"""What a package's own metadata says its license is, and that name as an SPDX license expression.

Debian keeps no license field in dpkg's database: a package states it in
/usr/share/doc/PKG/copyright, and only a machine-readable one (DEP-5,
"copyright-format/1.0") names it in a form a program can take. The license
of its `Files: *` paragraph (else of its header) is the package's; a
copyright file in free prose gives none. RPM has a License tag (read by
rain.generate.bootstrap.rhel). The name is kept as the package gives it (the
image's manifest holds it so); `spdx_expression` turns it into SPDX's
terms when an SBOM is written: the DEP-5 and Fedora short names map to SPDX
identifiers, and anything else becomes a `LicenseRef-` of its own.

The copyright file is read from an image root, through RootFS (links
followed inside the image only, regular files only) and bounded.
"""

from __future__ import annotations

import re

from rain.image.rootfs import RootFS

COPYRIGHT_MAX = 256 << 10
"""Bytes of a copyright file read: the License line of `Files: *` comes near the top of every real one."""
_NAME_MAX = 200

# the DEP-5 (Debian) and Fedora short names Debian and RHEL-family packages use, in SPDX's terms
_SHORT = {
    "gpl-1": "GPL-1.0-only", "gpl-1+": "GPL-1.0-or-later", "gpl-2": "GPL-2.0-only", "gpl-2+": "GPL-2.0-or-later",
    "gpl-3": "GPL-3.0-only", "gpl-3+": "GPL-3.0-or-later", "lgpl-2": "LGPL-2.0-only",
    "lgpl-2+": "LGPL-2.0-or-later", "lgpl-2.1": "LGPL-2.1-only", "lgpl-2.1+": "LGPL-2.1-or-later",
    "lgpl-3": "LGPL-3.0-only", "lgpl-3+": "LGPL-3.0-or-later", "agpl-3": "AGPL-3.0-only",
    "agpl-3+": "AGPL-3.0-or-later", "gfdl-1.2": "GFDL-1.2-only", "gfdl-1.2+": "GFDL-1.2-or-later",
    "gfdl-1.3": "GFDL-1.3-only", "gfdl-1.3+": "GFDL-1.3-or-later", "artistic": "Artistic-1.0-Perl",
    "artistic-1": "Artistic-1.0", "artistic-2": "Artistic-2.0", "artistic-2.0": "Artistic-2.0",
    "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause", "bsd-4-clause": "BSD-4-Clause",
    "expat": "MIT", "mit": "MIT", "isc": "ISC", "zlib": "Zlib", "apache-2": "Apache-2.0", "apache-2.0": "Apache-2.0",
    "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0", "cc0": "CC0-1.0", "cc0-1.0": "CC0-1.0", "psf-2": "PSF-2.0",
    "python-2.0": "Python-2.0", "openssl": "OpenSSL", "x11": "X11", "curl": "curl", "ftl": "FTL",
    "bsl-1.0": "BSL-1.0", "unicode-dfs-2016": "Unicode-DFS-2016", "cc-by-3.0": "CC-BY-3.0",
    "cc-by-4.0": "CC-BY-4.0", "cc-by-sa-3.0": "CC-BY-SA-3.0", "cc-by-sa-4.0": "CC-BY-SA-4.0",
    "gplv2": "GPL-2.0-only", "gplv2+": "GPL-2.0-or-later", "gplv3": "GPL-3.0-only", "gplv3+": "GPL-3.0-or-later",
    "lgplv2": "LGPL-2.0-only", "lgplv2+": "LGPL-2.0-or-later", "lgplv2.1": "LGPL-2.1-only",
    "lgplv2.1+": "LGPL-2.1-or-later", "lgplv3": "LGPL-3.0-only", "lgplv3+": "LGPL-3.0-or-later",
    "asl 2.0": "Apache-2.0", "gpl-2.0-only": "GPL-2.0-only", "gpl-2.0-or-later": "GPL-2.0-or-later",
    "gpl-3.0-only": "GPL-3.0-only", "gpl-3.0-or-later": "GPL-3.0-or-later", "lgpl-2.1-only": "LGPL-2.1-only",
    "lgpl-2.1-or-later": "LGPL-2.1-or-later", "lgpl-3.0-only": "LGPL-3.0-only",
    "lgpl-3.0-or-later": "LGPL-3.0-or-later", "bsd-2-clause-patent": "BSD-2-Clause-Patent",
}
_OPERATORS = {"or": "OR", "and": "AND"}


def debian_license(root: RootFS, package: str) -> str | None:
    """The license a Debian package's machine-readable copyright file states for its files as a whole."""
    text = root.read_text(f"/usr/share/doc/{package}/copyright", COPYRIGHT_MAX)
    return None if text is None else dep5_license(text)


def dep5_license(text: str) -> str | None:
    """The `License:` of the `Files: *` paragraph of a DEP-5 copyright file (else of its header), or None
    for a file that is not machine-readable or names none."""
    paragraphs = [_fields(p) for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]
    if not paragraphs or "copyright-format/1.0" not in paragraphs[0].get("format", ""):
        return None
    for fields in paragraphs[1:]:
        if fields.get("files", "").split()[:1] == ["*"] and fields.get("license"):
            return fields["license"][:_NAME_MAX]
    return paragraphs[0].get("license", "")[:_NAME_MAX] or None


def _fields(paragraph: str) -> dict[str, str]:
    """A paragraph's fields, lower-cased names → the first line of each value (the license's name)."""
    fields: dict[str, str] = {}
    for line in paragraph.split("\n"):
        if line[:1] in (" ", "\t") or ":" not in line:
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    return fields


def license_ref(name: str) -> str:
    """A `LicenseRef-` id (SPDX allows letters, digits, '.' and '-') for a license SPDX has no id for."""
    return "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")[:_NAME_MAX] or "unnamed")


def spdx_expression(name: str) -> tuple[str, dict[str, str]]:
    """A package's license name as an SPDX license expression, and the `LicenseRef-`s it uses (id → the
    name they stand for). "GPL-2+ or Artistic, and BSD-3-clause" → "(GPL-2.0-or-later OR
    Artistic-1.0-Perl) AND BSD-3-Clause"; what cannot be read so is one LicenseRef of the whole name."""
    refs: dict[str, str] = {}
    try:
        segments = [_segment(s, refs) for s in name.split(",")]
    except ValueError:
        ref = license_ref(name)
        return ref, {ref: name}
    expression = segments[0][1]
    for operator, text in segments[1:]:
        expression = f"({expression}) {operator} {text}" if operator else f"({expression}) AND {text}"
    return expression, refs


def _segment(text: str, refs: dict[str, str]) -> tuple[str | None, str]:
    """One comma-separated part: (the operator it starts with, if any, and its expression)."""
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    lead = _OPERATORS.get(tokens[0].lower()) if tokens else None
    if lead:
        tokens = tokens[1:]
    out: list[str] = []
    depth = 0
    term: list[str] = []

    def end_operand() -> None:
        """Before an operator, a ')' or the end: the name being read, or a ')' already there."""
        if term:
            out.append(_term(" ".join(term), refs))
            term.clear()
        elif not out or out[-1] != ")":
            raise ValueError("an operator or parenthesis with no license before it")

    for token in tokens:
        if token.lower() in _OPERATORS:
            end_operand()
            out.append(_OPERATORS[token.lower()])
        elif token == "(":
            if term or (out and out[-1] not in ("(", "AND", "OR")):
                raise ValueError("a parenthesis right after a license")
            out.append("(")
            depth += 1
        elif token == ")":
            end_operand()
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced parentheses")
            out.append(")")
        elif out and out[-1] == ")":
            raise ValueError("a license right after a parenthesis")
        else:
            term.append(token)
    end_operand()
    if depth != 0:
        raise ValueError("unbalanced parentheses")
    return lead, " ".join(out).replace("( ", "(").replace(" )", ")")


def _term(name: str, refs: dict[str, str]) -> str:
    """One license name: its SPDX id, or a LicenseRef (a name with an exception is one LicenseRef)."""
    known = _SHORT.get(name.lower())
    if known:
        return known
    ref = license_ref(name)
    refs[ref] = name
    return ref
