"""`fg-image users token ...`: make, list and revoke API tokens.

`fg-image users token NAME` (what scripts have always run) is kept as the short
form of `fg-image users token create NAME`: it still prints only the secret on
stdout. A user named like a subcommand (list, revoke, create) needs the long form.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import typer
from typer.core import TyperGroup

from rain.cli import render
from rain.cli.common import console, err_console, json_flag, open_repo, print_json
from rain.errors import InvalidInput
from rain.repository.models import TokenInfo

_DURATION = re.compile(r"(\d{1,6})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class _CreateByDefault(TyperGroup):
    """A group whose first word, when it is not a subcommand, starts `create` (the old `users token NAME`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: typer's own click Context
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["create", *args]
        return super().parse_args(ctx, args)


token_app = typer.Typer(cls=_CreateByDefault, no_args_is_help=True,
                        help="Make, list and revoke API tokens. `users token NAME` is `users token create NAME`.")


def parse_expiry(text: str | None) -> int | None:
    """Seconds from a duration such as 30d, 12h, 90m, 2w or 45s; None for 'never' or no flag."""
    if text is None or text.strip().lower() == "never":
        return None
    m = _DURATION.fullmatch(text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise InvalidInput(f"bad expiry {text!r}", hint="use a number and a unit (s, m, h, d, w), e.g. 30d, "
                                                         "or 'never'")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def _when(t: datetime | None, never: str = "-") -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if t else never


def _expiry(t: datetime | None) -> str:
    if t is None:
        return "never"
    return ("expired " if t <= datetime.now(UTC) else "") + _when(t)


@token_app.command("create")
def create(name: str = typer.Argument(..., help="the user the token acts as"),
           label: str = typer.Option("", "--name", help="what the token is for, e.g. ci-runner"),
           expires: str = typer.Option(None, "--expires", help="e.g. 30d, 12h, 2w; default: never"),
           as_json: bool = json_flag()) -> None:
    """Make an API token and print its secret once (only its hash is stored: keep it)."""
    new = open_repo().create_token(name, label, parse_expiry(expires))
    if as_json:
        print_json(new)
        return
    print(new.token)  # alone on stdout, as `$(fg-image users token NAME)` expects
    err_console.print(f"token {new.id} {new.name or '(unnamed)'} for {new.user}, expires {_expiry(new.expires)}; "
                      f"`fg-image users token revoke {new.id} --user {new.user}` revokes it")


@token_app.command("list")
def list_tokens(name: str = typer.Argument(None, help="whose tokens (administrators); default: yours"),
                as_json: bool = json_flag()) -> None:
    """List tokens with their ids, names, creation, last use and expiry; never their secrets."""
    tokens = open_repo().list_tokens(name)
    if as_json:
        print_json(tokens)
    else:
        tokens_table(tokens)


@token_app.command("revoke")
def revoke(what: str = typer.Argument(..., metavar="ID|NAME", help="a token id, or with --all a user name"),
           every: bool = typer.Option(False, "--all", help="administrators: revoke every token of user NAME"),
           user: str = typer.Option(None, "--user", help="whose token ID is (default: yours)")) -> None:
    """Revoke one token by id, or (administrators) all of a user's tokens; requests with them are refused."""
    repo = open_repo()
    if every:
        if user:
            raise InvalidInput("--all takes the user as its argument, not --user", hint="revoke --all NAME")
        count = repo.revoke_tokens(what)
        console.print(f"revoked all {count} token(s) of {what}")
        return
    gone = repo.revoke_token(user or repo.whoami().name, what)
    console.print(f"revoked token {gone.id} {gone.name or '(unnamed)'} of {gone.user}")


def tokens_table(tokens: list[TokenInfo]) -> None:
    if not tokens:
        console.print("no tokens")
        return
    table = render.table("id", "user", "name", "created", "last used", "expires")
    for t in tokens:
        table.add_row(t.id, t.user, t.name or "-", _when(t.created), _when(t.last_used, "never"), _expiry(t.expires))
    console.print(table)
