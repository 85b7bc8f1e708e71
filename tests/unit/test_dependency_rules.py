"""The import rules docs/architecture.md states hold in the code: the core never imports the CLI,
generate never imports register, the repository, image and host code import neither pipeline, and
register reaches into generate only from its sandbox (a ratchet: the list may shrink, never grow)."""

from __future__ import annotations

import ast
from pathlib import Path

RAIN = Path(__file__).resolve().parents[2] / "rain"
REGISTER_USES_GENERATE = {"register/chroot.py"}
"""The sandbox: an image's own programs run on a builder (builders, apt helpers, cache, mirror). The boot-test
VMs' qemu, keys and reaper, the seeds' key pattern and export's runner moved to rain/host/."""


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _importers(package: str, under: str) -> list[str]:
    """Modules below rain/<under> that import rain.<package> (or something in it)."""
    found = []
    for path in sorted((RAIN / under).rglob("*.py")):
        if any(n == f"rain.{package}" or n.startswith(f"rain.{package}.") for n in _imports(path)):
            found.append(str(path.relative_to(RAIN)))
    return found


def test_nothing_outside_the_cli_imports_the_cli() -> None:
    offenders = [m for m in _importers("cli", ".") if not m.startswith("cli/")]
    assert offenders == [], "the core must not import rain.cli: " + ", ".join(offenders)


def test_generate_never_imports_register() -> None:
    assert _importers("register", "generate") == []


def test_register_imports_generate_only_where_it_already_does() -> None:
    offenders = set(_importers("generate", "register")) - REGISTER_USES_GENERATE
    assert offenders == set(), "see docs/architecture.md, Dependency rules: " + ", ".join(sorted(offenders))


def test_the_repository_image_and_host_code_import_neither_pipeline_nor_the_cli() -> None:
    for under in ("repository", "image", "host"):
        for package in ("generate", "register", "cli"):
            assert _importers(package, under) == [], f"rain/{under} imports rain.{package}"


def test_only_the_cli_imports_launch() -> None:
    """launch sits on top: it uses the repository and register's boot pieces; no stage depends on it."""
    offenders = [m for m in _importers("launch", ".") if not m.startswith(("cli/", "launch/"))]
    assert offenders == [], "rain.launch is imported by " + ", ".join(offenders)


def test_only_the_cli_imports_rebuild() -> None:
    """rebuild sits on top of generate (the build) and register (the unpacker), as launch does."""
    offenders = [m for m in _importers("rebuild", ".") if not m.startswith("cli/")]
    assert offenders == [], "rain.rebuild is imported by " + ", ".join(offenders)
