"""The `fg-image` command: thin typer faces over Rain's core.

Each command group lives in its own module: its commands are decorated onto
that module's Typer (a named group such as `cache_app`, or `commands` for
top-level commands such as `generate`), and its `register(app)` adds them
here. Errors are caught here, in one place, and each becomes one line.
"""

from __future__ import annotations

import ctypes
import sys

import typer

from rain.cli import builder, cache, common, config, generate, images, instances, launch, register, repo, users
from rain.cli.failures import known_failure
from rain.cli.untrusted import markup
from rain.cli.usage import is_usage_error, usage_error
from rain.errors import ExitCode, RainError

app = typer.Typer(
    name="fg-image",
    help="Build, store, share, vet and register OS images.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    repo: str = typer.Option(None, "--repo", help="URL of a remote repository service (RAIN_REPO_URL)"),
    token: str = typer.Option(None, "--token", help="bearer token for --repo (RAIN_TOKEN)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    common.configure(repo_url=repo, token=token, debug=debug or None)


for group in (images, users, repo, config, generate, cache, builder, register, launch, instances):
    group.register(app)


def _give_back_large_buffers() -> None:
    """Fix glibc's mmap threshold at 1 MiB (M_MMAP_THRESHOLD). Left dynamic, it rises to the size of the
    largest buffer freed, so the 16 MiB runs a transfer moves on several threads end up in per-thread
    heaps that keep them after they are freed: a 1 GiB download peaked anywhere from 155 to 221 MiB
    resident. Mapped on their own, they go back to the system when freed (132-147 MiB)."""
    try:
        ctypes.CDLL(None).mallopt(-3, 1 << 20)
    except (OSError, AttributeError):  # not glibc: its allocator is its own business
        pass


def main() -> None:
    _give_back_large_buffers()
    try:
        # Without standalone mode click returns, rather than raises, the code of a typer.Exit.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except RainError as e:
        common.print_error(e)
        if common.debug_enabled():
            raise
        sys.exit(int(e.exit_code))
    except KeyboardInterrupt:
        common.err_console.print("[red]interrupted[/red]")
        sys.exit(int(ExitCode.INTERRUPTED))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        common.err_console.print("[red]aborted[/red]")
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as e:  # click's usage errors (typer vendors click) and the unexpected
        if is_usage_error(e):
            common.print_error(usage_error(e))
            sys.exit(int(getattr(e, "exit_code", ExitCode.USAGE)))
        if common.debug_enabled():
            raise
        known = known_failure(e)
        if known is not None:
            common.print_error(known)
            sys.exit(int(known.exit_code))
        common.err_console.print(f"[red]error:[/red] internal error: {markup(type(e).__name__)}: {markup(e)} "
                                 "(run with --debug for a traceback and report it)", highlight=False)
        sys.exit(int(ExitCode.ERROR))
