"""SPDX's own validator (spdx-tools, the SPDX project's Python library) on a document Rain wrote."""

from __future__ import annotations

from pathlib import Path

from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document


def spdx_problems(path: Path) -> list[str]:
    """What the validator finds wrong with the SPDX JSON document at path (after its own parser read it)."""
    return [m.validation_message for m in validate_full_spdx_document(parse_file(str(path)))]
