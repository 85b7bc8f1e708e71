"""The reference tables in docs/, rendered from the code so they cannot drift.

    python -m rain.reference            # print every generated region
    python -m rain.reference --write    # rewrite the regions in docs/*.md
    python -m rain.reference --check    # exit 1 naming the stale documents

Each table lives in a marked region of a hand-written page:

    <!-- generated: settings (python -m rain.reference --write) -->
    ...
    <!-- end generated -->

Invariants: only the text between the markers is ever rewritten; every region
named in REGIONS exists exactly once in its document; the sources are the
code's own tables (config.FIELDS, errors.ExitCode, the recipe models, the
builders-file and targets-file models and their field docstrings).
A unit test fails when a document differs from what this renders.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rain.config import FIELDS, Field
from rain.errors import KINDS, ExitCode

COMMAND = "python -m rain.reference --write"
END = "<!-- end generated -->"
ROOT = Path(__file__).resolve().parents[1]


def begin(name: str) -> str:
    return f"<!-- generated: {name} ({COMMAND}) -->"


# --- types and defaults of pydantic fields ---------------------------------------------------

def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
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
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined or value is None or value in ([], {}, ""):
        return "—"
    if isinstance(value, BaseModel):
        return "—"
    if isinstance(value, list):
        return ", ".join(f"`{v.value if isinstance(v, Enum) else v}`" for v in value)
    return f"`{value.value if isinstance(value, Enum) else value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """The docstrings under a model's fields (`x: int = 1`, then a string on the next line), bases first."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
        assert isinstance(body, ast.ClassDef)
        for stmt, after in zip(body.body, body.body[1:], strict=False):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[stmt.target.id] = after.value.value
    return docs


def _credential_doc(name: str) -> str:
    """What a credential reference means (rain/settings_file.py: only references, never values)."""
    if name.endswith("_env"):
        return f"name of the environment variable holding the {name[:-4].replace('_', ' ')} (never the value)"
    if name.endswith("_file"):
        return f"file whose first line is the {name[:-5].replace('_', ' ')}"
    return ""


def model_table(model: type[BaseModel], head: str = "field", notes: str = "notes") -> list[str]:
    docs = field_docs(model)
    out = [f"| {head} | type | default | {notes} |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        doc = field.description or docs.get(name) or _credential_doc(name)
        out.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {_cell(doc)} |")
    return out


# --- the regions -----------------------------------------------------------------------------

def recipe_reference() -> str:
    """The recipe models' field tables, known releases, variants and formats (docs/recipes.md)."""
    from rain.generate.recipe import (
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
    from rain.releases import RELEASES

    models: list[tuple[str, type[BaseModel]]] = [
        ("recipe (top level)", Recipe), ("os", OsSpec), ("repositories[]", RepoSpec), ("files[]", FileSpec),
        ("users[]", UserSpec), ("run[]", RunStep), ("upload", UploadSpec),
    ]
    out: list[str] = []
    for title, model in models:
        out += [f"### `{title}`", ""]
        doc = (model.__doc__ or "").strip()
        if doc:
            out += [" ".join(doc.split("\n\n")[0].split()), ""]
        out += [*model_table(model), ""]
    out += ["### Known releases", "", "| family | releases (aliases accepted) |", "| --- | --- |"]
    for family, names in RELEASES.items():
        out.append(f"| `{family}` | " + ", ".join(sorted(set(names.values()))) + " |")
    out += ["", "Variants: " + ", ".join(f"`{v.value}`" for v in Variant) + ". Formats: "
            + ", ".join(f"`{f.value}`" for f in Format) + "."]
    return "\n".join(out)


COMPUTED_DEFAULTS = {
    "data_dir": "`$XDG_DATA_HOME/rain`, else `~/.local/share/rain`",
    "user": "your login name",
}
"""Settings whose default depends on the machine: shown as the rule, not as this host's value."""


def settings_table(fields: Iterable[Field] = FIELDS) -> str:
    """config.FIELDS as a table: key, environment variable, default, what it does (docs/operator.md)."""
    fields = tuple(fields)
    unknown = set(COMPUTED_DEFAULTS) - {f.name for f in fields}
    if unknown:
        raise KeyError(f"COMPUTED_DEFAULTS names settings FIELDS lacks: {sorted(unknown)}")
    out = ["| key | env | default | what it does |", "| --- | --- | --- | --- |"]
    for f in fields:
        if f.name in COMPUTED_DEFAULTS:
            default = COMPUTED_DEFAULTS[f.name]
        else:
            value = f.default()
            default = "unset" if value is None else f"`{str(value).lower() if isinstance(value, bool) else value}`"
        out.append(f"| `{f.name}` | `{f.env}` | {default} | {_cell(f.help)} |")
    return "\n".join(out)


EXIT_WHEN = {
    ExitCode.OK: "the command did what it was asked",
    ExitCode.ERROR: "anything else; a message starting `internal error` is a bug in Rain: please report it",
    ExitCode.USAGE: "bad input: a flag, recipe, settings file, request body or an output path that cannot be written",
    ExitCode.NOT_FOUND: "no such image, user, token, upload or registration (an image you may not read looks missing)",
    ExitCode.FORBIDDEN: "you may not do this (a role, an owner or a suspended user)",
    ExitCode.UNAUTHORIZED: "not authenticated: no token, a wrong or an expired one",
    ExitCode.CONFLICT: "the state does not allow it: a user name taken, an image still registered, "
                       "a user still owning images",
    ExitCode.QUOTA: "the owner's quota would be exceeded; nothing was stored",
    ExitCode.UNREACHABLE: "a repository, database, mirror or cloud endpoint did not answer",
    ExitCode.INTEGRITY: "bytes did not match their checksum or declared size",
    ExitCode.BUILD: "a build failed (in a batch: any build did not finish)",
    ExitCode.VET_FAILED: "vetting refused the image; the report says why",
    ExitCode.TARGET: "a register target refused or failed (an API error, a failed boot test); a launch's machine "
                     "did not come up, or its job's connection or download failed",
    ExitCode.STORAGE: "a disk is full or read-only: the database's, or the one a download writes to",
    ExitCode.NOT_REPRODUCED: "`fg-image rebuild` made other bytes than the stored image's; it names the first "
                             "differing files",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C (a build also by SIGTERM)",
}
"""What each exit code means to a user; every ExitCode must have an entry."""


def exit_code_table() -> str:
    """errors.ExitCode with what each means and the error kinds (and HTTP statuses) that carry it."""
    out = ["| code | name | when | error kinds (HTTP status) |", "| --- | --- | --- | --- |"]
    for code in ExitCode:
        kinds = ", ".join(f"`{k}` ({cls.http_status})" for k, cls in KINDS.items()
                          if cls.exit_code is code and k != "error")
        out.append(f"| {code.value} | `{code.name}` | {_cell(EXIT_WHEN[code])} | {kinds or '—'} |")
    return "\n".join(out)


def builders_reference() -> str:
    """Each section of the builders file, from its settings model (docs/builders.md)."""
    from rain.generate.builders.opennebula import OpenNebulaBuilderSettings
    from rain.generate.builders.openstack import OpenStackBuilderSettings
    from rain.generate.builders.qemu import QemuSettings

    sections: list[tuple[str, type[BaseModel]]] = [
        ("qemu", QemuSettings), ("opennebula", OpenNebulaBuilderSettings), ("openstack", OpenStackBuilderSettings),
    ]
    return _sections(sections)


def targets_reference() -> str:
    """Each target's site settings in the targets file, from its site model (docs/targets.md)."""
    from rain.register.targets.base import TargetName

    return _sections([(name.value, name.load().site_model) for name in TargetName])


def _sections(sections: list[tuple[str, type[BaseModel]]]) -> str:
    out: list[str] = []
    for title, model in sections:
        out += [f"### `{title}`", "", *model_table(model, head="key", notes="what it does"), ""]
    return "\n".join(out[:-1])


@dataclass(frozen=True)
class Region:
    document: str
    """Path of the markdown file, relative to the repository root."""
    render: Callable[[], str]


REGIONS: dict[str, Region] = {
    "recipe": Region("docs/recipes.md", recipe_reference),
    "settings": Region("docs/operator.md", settings_table),
    "exit-codes": Region("docs/operator.md", exit_code_table),
    "builders": Region("docs/builders.md", builders_reference),
    "targets": Region("docs/targets.md", targets_reference),
}


# --- splicing, checking, writing -------------------------------------------------------------

def splice(document: str, name: str, body: str) -> str:
    """The document with region `name` holding `body`; the text around the markers is kept as it is."""
    start = begin(name)
    if document.count(start) != 1:
        raise ValueError(f"expected one line {start!r} in the document, found {document.count(start)}")
    head, _, rest = document.partition(start + "\n")
    if END not in rest:
        raise ValueError(f"region {name!r} has no closing {END!r}")
    _, _, tail = rest.partition(END)
    return f"{head}{start}\n\n{body}\n\n{END}{tail}"


def rendered(root: Path = ROOT, regions: dict[str, Region] | None = None) -> dict[str, tuple[str, str]]:
    """Document path → (its text now, its text with every region rendered afresh)."""
    docs: dict[str, tuple[str, str]] = {}
    for name, region in (REGIONS if regions is None else regions).items():
        now, new = docs.get(region.document) or ((root / region.document).read_text(),) * 2
        docs[region.document] = (now, splice(new, name, region.render()))
    return docs


def stale(root: Path = ROOT, regions: dict[str, Region] | None = None) -> list[str]:
    """The documents whose generated regions differ from what the code renders now."""
    return [doc for doc, (now, new) in rendered(root, regions).items() if now != new]


def stale_message(documents: list[str]) -> str:
    return f"stale generated docs: {', '.join(documents)}; regenerate them with `{COMMAND}`"


def write(root: Path = ROOT) -> list[str]:
    """Rewrite the stale documents; returns their paths."""
    changed = []
    for doc, (now, new) in rendered(root).items():
        if now != new:
            (root / doc).write_text(new)
            changed.append(doc)
    return changed


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        for doc in write():
            print(f"rewrote {doc}")
        return 0
    if argv == ["--check"]:
        documents = stale()
        if documents:
            print(stale_message(documents), file=sys.stderr)
            return 1
        return 0
    if not argv:
        for name, region in REGIONS.items():
            print(f"{begin(name)}\n\n{region.render()}\n\n{END}\n")
        return 0
    print("usage: python -m rain.reference [--write | --check]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
