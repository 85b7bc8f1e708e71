"""Plugins named by "module:Class" strings, imported on first use.

Each plugin table (targets, builders, providers, bootstrappers) belongs to the
enum whose members name the plugins; the enum's method calls `load_class`.
Invariant: nothing in a table is imported until it is asked for, so the CLI
starts without importing boto3, openstacksdk or the bootstrappers.
"""

from __future__ import annotations

import importlib


def load_class(path: str) -> type:
    """The class at "package.module:Class" (its module is imported now)."""
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not isinstance(cls, type):
        raise TypeError(f"{path} is not a class")
    return cls
