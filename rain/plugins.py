"""Plugins named by "module:Class" strings, imported on first use.

Each plugin table (targets, builders, providers, bootstrappers) belongs to the
enum whose members name the plugins; the enum's method calls `load_class`.
Invariant: nothing in a table is imported until it is asked for, so the CLI
starts without importing boto3, openstacksdk or the bootstrappers.
"""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import TypeVar

from rain.errors import InvalidInput

E = TypeVar("E", bound=StrEnum)


def choice(names: type[E], text: str, what: str) -> E:
    """The member of `names` called `text`, or an InvalidInput listing the valid ones ("unknown target 'x'")."""
    try:
        return names(text)
    except ValueError:
        raise InvalidInput(f"unknown {what} {text!r}",
                           hint=f"valid {what}s: " + ", ".join(n.value for n in names)) from None


def load_class(path: str) -> type:
    """The class at "package.module:Class" (its module is imported now)."""
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not isinstance(cls, type):
        raise TypeError(f"{path} is not a class")
    return cls
