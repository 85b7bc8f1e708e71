"""`fg-image users ...`: accounts, roles, quotas, suspension; API tokens are in tokens.py."""

from __future__ import annotations

import typer

from rain.cli import render
from rain.cli.common import console, json_flag, open_repo, print_json
from rain.cli.tokens import token_app
from rain.config import parse_size
from rain.repository.models import Role

users_app = typer.Typer(help="Manage repository users (administrators).", no_args_is_help=True)


@users_app.command("add")
def add(name: str, role: Role = typer.Option(Role.USER, "--role"),
        quota: str = typer.Option(None, "--quota", help="e.g. 50G; default: the repository's default")) -> None:
    """Add a user."""
    user = open_repo().add_user(name, role, parse_size(quota, "quota"))
    console.print(f"added {user.name} ({user.role.value})")


@users_app.command("remove")
def remove(name: str) -> None:
    """Remove a user who owns no images; their tokens stop working."""
    open_repo().remove_user(name)
    console.print(f"removed {name}")


@users_app.command("list")
def list_users(as_json: bool = json_flag()) -> None:
    """List users with their usage and quota."""
    users = open_repo().list_users()
    print_json(users) if as_json else render.users_table(users)


@users_app.command("quota")
def quota(name: str, size: str = typer.Argument(..., help="e.g. 100M, 50G, or 'unlimited'")) -> None:
    """Set how many bytes a user may store."""
    user = open_repo().set_quota(name, parse_size(size, "quota"))
    render.users_table([user])


@users_app.command("role")
def role(name: str, new_role: Role = typer.Argument(..., metavar="admin|user")) -> None:
    """Make a user an administrator, or not."""
    render.users_table([open_repo().set_role(name, new_role)])


@users_app.command("suspend")
def suspend(name: str, undo: bool = typer.Option(False, "--undo", help="reinstate the user")) -> None:
    """Suspend a user (every request is refused) or, with --undo, reinstate them."""
    render.users_table([open_repo().suspend(name, not undo)])


users_app.add_typer(token_app, name="token")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
