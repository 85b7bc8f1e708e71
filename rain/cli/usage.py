"""Click's usage errors (typer parses the command line with its own copy of click) as Rain's one line.

Click would print a usage box of several lines; `fg-image` reports every
failure as one `error:` line on stderr with exit code 2 (ExitCode.USAGE).
A value outside an enum's choices names the flag, the value and every valid
value, e.g. `--target 'opnstack' is not one of: hpc, opennebula, openstack, ec2`,
so the fix is on the same line. The choices come from the parameter itself
(the enum typer shows in --help), never from a copy kept here.
"""

from __future__ import annotations

import re
from typing import Any

from rain.errors import InvalidInput, RainError

_NOT_ONE_OF = re.compile(r"'(?P<value>.*?)' is not one of ")


def is_usage_error(e: BaseException) -> bool:
    """Whether `e` is click's complaint about the command line (typer vendors click, so test by shape)."""
    return hasattr(e, "format_message") and hasattr(e, "exit_code")


def usage_error(e: Any) -> RainError:
    """The one-line Rain error for a click usage error: the flag's choices when a value was not one of them."""
    choices = _choices(getattr(e, "param", None))
    value = _bad_value(e)
    if choices and value is not None:
        return InvalidInput(f"{_flag(e.param)} {value!r} is not one of: {', '.join(choices)}")
    ctx = getattr(e, "ctx", None)
    where = f"{ctx.command_path} --help" if ctx is not None else "fg-image --help"
    message = e.format_message().replace("Value error, ", "").rstrip(".")
    return InvalidInput(message, hint=f"see `{where}`")


def _choices(param: Any) -> list[str]:
    described = getattr(param, "type_descriptor", None)
    found = getattr(described, "choices", None) or ()
    return [str(getattr(c, "value", c)) for c in found]


def _bad_value(e: Any) -> str | None:
    """The value typed, from the validation error typer raised it from, else from click's message."""
    cause = e.__cause__
    if cause is not None and hasattr(cause, "errors"):
        errors = cause.errors()
        if errors and isinstance(errors[0].get("input"), str):
            return str(errors[0]["input"])
    m = _NOT_ONE_OF.search(str(getattr(e, "message", "")))
    return m.group("value") if m else None


def _flag(param: Any) -> str:
    """How the user wrote the parameter: its long option, or an argument's metavar."""
    opts = [o for o in getattr(param, "opts", None) or () if o.startswith("--")]
    if opts and getattr(param, "param_type_name", "option") == "option":
        return max(opts, key=len)
    return str(getattr(param, "metavar", None) or getattr(param, "name", "value")).upper()
