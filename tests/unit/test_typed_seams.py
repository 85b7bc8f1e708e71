"""Rain's seams are typed with Rain's interfaces, so mypy checks every call across them.

A parameter or attribute that stands for a repository, builder, provider, reporter or a builder's
remote session is annotated with its protocol (Repository, Builder, Provider, Reporter, ...),
never `Any`: an `Any` there silently turns off checking of every call made through it.
"""

from __future__ import annotations

import ast
from pathlib import Path

RAIN = Path(__file__).resolve().parents[2] / "rain"

SEAMS = {"repo", "repository", "repo_factory", "builder", "provider", "remote", "reporter"}

# Not yet retyped, in the module the builder-registry change of issue #11 owns; remove each entry
# as that change lands (the test then keeps it typed).
PENDING: set[tuple[str, str]] = set()


def _annotated(tree: ast.AST) -> list[tuple[str, ast.expr, int]]:
    """(name, annotation, line) of every annotated parameter, variable and attribute."""
    found: list[tuple[str, ast.expr, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            found.append((node.arg, node.annotation, node.lineno))
        elif isinstance(node, ast.AnnAssign):
            target = node.target
            if isinstance(target, ast.Name | ast.Attribute):
                name = target.id if isinstance(target, ast.Name) else target.attr
                found.append((name, node.annotation, node.lineno))
    return found


def _mentions_any(annotation: ast.expr) -> bool:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):  # a quoted annotation
        return _mentions_any(ast.parse(annotation.value, mode="eval").body)
    return any(isinstance(n, ast.Name) and n.id == "Any" or isinstance(n, ast.Attribute) and n.attr == "Any"
               for n in ast.walk(annotation))


def _any_seams() -> list[str]:
    bad = []
    for path in sorted(RAIN.rglob("*.py")):
        where = path.relative_to(RAIN).as_posix()
        for name, annotation, line in _annotated(ast.parse(path.read_text(), str(path))):
            if name in SEAMS and _mentions_any(annotation) and (where, name) not in PENDING:
                bad.append(f"rain/{where}:{line}: {name}: {ast.unparse(annotation)}")
    return bad


def test_no_repository_builder_provider_or_reporter_is_typed_any() -> None:
    assert _any_seams() == [], ("annotate these with Rain's interface (Repository from rain.repository.base, "
                                "Builder, Provider, Reporter, ...), not Any")


def test_the_guard_sees_an_any_seam_in_every_spelling() -> None:
    source = ("def f(repo: Any, builder: typing.Any = None, reporter: 'Any | None' = None,\n"
              "      repo_factory: Callable[[], Any] | None = None) -> None:\n"
              "    self.provider: Any = None\n"
              "def ok(repo: Repository, data: Any) -> None: ...\n")
    seen = sorted((line, name) for name, annotation, line in _annotated(ast.parse(source))
                  if name in SEAMS and _mentions_any(annotation))
    assert seen == [(1, "builder"), (1, "repo"), (1, "reporter"), (2, "repo_factory"), (3, "provider")]
