"""The recipe reference in docs/recipes.md, generated from the models so it cannot drift.

    python -m rain.generate.reference > /tmp/ref.md   # the generated part
    python -m rain.generate.reference --write docs/recipes.md

A unit test checks that docs/recipes.md holds exactly what this renders.
"""

from __future__ import annotations

import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rain.generate.recipe import (
    RELEASES,
    FileSpec,
    Format,
    OsSpec,
    Recipe,
    RepoSpec,
    RunStep,
    UploadSpec,
    UserSpec,
    Variant,
)

BEGIN = "<!-- BEGIN GENERATED: python -m rain.generate.reference --write docs/recipes.md -->"
END = "<!-- END GENERATED -->"
MODELS: list[tuple[str, type[BaseModel]]] = [
    ("recipe (top level)", Recipe), ("os", OsSpec), ("repositories[]", RepoSpec), ("files[]", FileSpec),
    ("users[]", UserSpec), ("run[]", RunStep), ("upload", UploadSpec),
]


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (list,):
        return f"list of {_type(args[0])}"
    if origin in (dict,):
        return "mapping"
    if args and origin is not None:
        return " or ".join(_type(a) for a in args)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (below)"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if value is PydanticUndefined or value is None or value in ([], {}, ""):
        return "—"
    if isinstance(value, BaseModel):
        return "—"
    if isinstance(value, list):
        return ", ".join(f"`{v.value if isinstance(v, Enum) else v}`" for v in value)
    return f"`{value.value if isinstance(value, Enum) else value}`"


def render() -> str:
    out = [BEGIN, ""]
    for title, model in MODELS:
        out += [f"### `{title}`", ""]
        doc = (model.__doc__ or "").strip()
        if doc:
            out += [" ".join(doc.split("\n\n")[0].split()), ""]
        out += ["| field | type | default | notes |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            notes = (field.description or "").replace("|", "\\|")
            out.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {notes} |")
        out.append("")
    out += ["### Known releases", "", "| family | releases (aliases accepted) |", "| --- | --- |"]
    for family, names in RELEASES.items():
        out.append(f"| `{family}` | " + ", ".join(sorted(set(names.values()))) + " |")
    out += ["", "Variants: " + ", ".join(f"`{v.value}`" for v in Variant) + ". Formats: "
            + ", ".join(f"`{f.value}`" for f in Format) + ".", "", END]
    return "\n".join(out) + "\n"


def splice(document: str) -> str:
    head, _, rest = document.partition(BEGIN)
    _, _, tail = rest.partition(END + "\n")
    return head + render() + tail


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        p = Path(sys.argv[2])
        p.write_text(splice(p.read_text()))
    else:
        sys.stdout.write(render())
