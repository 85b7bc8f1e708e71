"""Shared state, rendering and flags for the command modules.

Flags that mean the same everywhere are declared once here: `--yes/-y` (do
not ask; `confirm` refuses without a terminal rather than wait for an answer
that cannot come) and `--json`. `--force` is never "do not ask": it overrides
a safety check, and each command says which.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from rain.config import Settings, load_settings
from rain.errors import Interrupted, InvalidInput, RainError

if TYPE_CHECKING:  # the repository modules load only when a command needs one
    from rain.repository.base import Repository

# On pipes and files rich would wrap at 80 columns; scripts and logs read better unwrapped.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 200)

_flags: dict[str, Any] = {}
_settings: Settings | None = None


def configure(**flags: Any) -> None:
    global _settings
    _flags.update({k: v for k, v in flags.items() if v is not None})
    _settings = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = load_settings(**_flags)
    return _settings


def debug_enabled() -> bool:
    try:
        return bool(settings().debug)
    except RainError:
        return bool(_flags.get("debug"))


def open_repo() -> Repository:
    """The repository for this invocation: remote service if configured, else MongoDB."""
    from rain.repository.connect import open_repository

    return open_repository(settings())


def print_error(e: RainError) -> None:
    """One line: what is wrong, then how to fix it. Messages quote names and answers others chose,
    so the text is shown as text: no markup, no escape sequences."""
    from rain.cli.untrusted import markup

    text = markup(e.message.replace("\n", " "))
    if e.hint:
        hint = markup(e.hint.replace("\n", " "))
        text += f" [dim]— {hint}[/dim]"
    err_console.print(f"[red]error:[/red] {text}", highlight=False, soft_wrap=True)


def yes_flag() -> Any:
    """`--yes/-y`: what every command that asks before destroying something takes to not ask."""
    return typer.Option(False, "--yes", "-y", help="do not ask for confirmation")


def json_flag() -> Any:
    """`--json`: the same flag and help on every command that can print for scripts."""
    return typer.Option(False, "--json", help="print JSON for scripts instead of text")


def confirm(question: str, refusal: str) -> None:
    """Ask before destroying something (typer.Abort on no); without a terminal, refuse, pointing at --yes."""
    if not sys.stdin.isatty():
        raise InvalidInput(f"not {refusal} without a yes", hint="pass --yes to do it from a script")
    typer.confirm(question, abort=True)


def print_json(data: Any) -> None:
    """JSON for scripts: pydantic models, lists of them, or plain data."""
    def plain(x: Any) -> Any:
        if hasattr(x, "model_dump"):
            return x.model_dump(mode="json")
        if isinstance(x, list):
            return [plain(i) for i in x]
        return x

    print(json.dumps(plain(data), indent=2, sort_keys=True))


@contextmanager
def interrupted_as(message: str, hint: str) -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C, so whatever the block holds is undone
    either way; all three end as Interrupted (exit 130) once it has been."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(message, hint=hint) from None
    finally:
        for number, previous in old.items():
            signal.signal(number, previous)
