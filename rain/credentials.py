"""Credentials in settings files: only references (`<name>_env`, `<name>_file`), never values.

Shared by the register targets file and the builders file:

    class Site(Credentials):
        settings_file: ClassVar[str] = "targets file"
        password_env: str | None = None
        password_file: str | None = None
        check_secrets = one_secret("password")

    site.secret("password")   # read from the environment variable or the file, at use time
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from rain.config import env_value
from rain.errors import ConfigError


class Credentials(BaseModel):
    """Validated settings with credential references (extra keys are refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    settings_file: ClassVar[str] = "settings file"
    """How errors name the file these settings come from."""

    def secret(self, field: str) -> str:
        """The credential named by `<field>_env` or `<field>_file`; never stored in the settings file."""
        var, path = getattr(self, f"{field}_env", None), getattr(self, f"{field}_file", None)
        if var:
            value = env_value(var)
            if not value:
                raise ConfigError(f"{field} comes from ${var} ({self.settings_file}), which is not set",
                                  hint=f"export {var}=... first")
            return value
        if path:
            try:
                return Path(path).expanduser().read_text().strip()
            except OSError as e:
                raise ConfigError(f"cannot read {field} from {path}: {e.strerror}",
                                  hint=f"check the path in the {self.settings_file} and its permissions") from e
        raise ConfigError(f"no {field} configured in the {self.settings_file}",
                          hint=f"set {field}_env (an environment variable name) or {field}_file there")


def one_secret(*fields: str) -> Any:
    """A model validator: each credential is given by exactly one of `<f>_env` / `<f>_file`."""

    @model_validator(mode="after")
    def check(self: BaseModel) -> BaseModel:
        for f in fields:
            if getattr(self, f"{f}_env", None) and getattr(self, f"{f}_file", None):
                raise ValueError(f"give {f}_env or {f}_file, not both")
        return self

    return check

