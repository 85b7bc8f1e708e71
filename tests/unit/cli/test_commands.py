"""Every command group registers the one way (its module's `register(app)`), and every command is there."""

from __future__ import annotations

import typer

from rain.cli import app

TOP = {"upload", "download", "list", "show", "sbom", "modify", "remove", "share", "unshare", "history", "users", "repo",
       "serve", "config", "generate", "batch", "cache", "builder", "register", "vet", "registrations", "deregister",
       "launch", "instances", "lock", "rebuild"}
GROUPS = {"users": {"add", "remove", "list", "quota", "role", "suspend", "token"},
          "repo": {"status", "stop", "gc", "pull"}, "config": {"show"}, "cache": {"list", "prune"},
          "builder": {"image", "check", "reap"}, "instances": {"list", "stop", "reap"}}


def test_fg_image_has_every_command_and_group_users_know() -> None:
    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    assert set(root.list_commands(ctx)) == TOP
    for name, commands in GROUPS.items():
        group = root.get_command(ctx, name)
        assert set(group.list_commands(ctx)) == commands, name
