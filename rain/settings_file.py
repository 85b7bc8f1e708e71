"""Settings files (the targets file, the builders file): one loader, one error format.

A settings file is YAML whose top level maps names to sections; a section is
validated by a pydantic model that refuses unknown keys. Every error is one
line naming the file, the key path in it and what is wrong; the hint says how
to fix it and where the docs are:

    targets file /etc/rain/targets.yaml: openstack.lab.pasword: Extra inputs are not permitted
      hint: valid keys: auth_url, username, ... (see docs/targets.md)

Credentials appear only as references (`<name>_env`, `<name>_file`), never as
values; a `Credentials` model reads them at use time with `secret(name)`:

    class Site(Credentials):
        settings_file: ClassVar[str] = "targets file"
        password_env: str | None = None
        password_file: str | None = None
        check_secrets = one_secret("password")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from rain.config import env_value, read_yaml_mapping
from rain.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class SettingsFile:
    """One settings file at `path`: `what` names it in errors ("targets file"), `doc` is its documentation."""

    path: Path
    what: str
    doc: str
    example: str
    """A one-line YAML example of the file's shape, for the hint when it is not a mapping."""
    missing_hint: str = ""
    """When set, a missing file is an error with this hint; otherwise it reads as empty."""

    def data(self) -> dict[str, Any]:
        """The file's top-level mapping ({} for a missing optional file)."""
        if not self.path.is_file():
            if self.missing_hint:
                raise ConfigError(f"no {self.what} at {self.path}", hint=self.missing_hint)
            return {}
        return read_yaml_mapping(self.path, self.what, self.doc, self.example)

    def error(self, where: str, problem: str, hint: str) -> ConfigError:
        """The one error format: `<what> <path>: <key path>: <problem>`."""
        return ConfigError(f"{self.what} {self.path}: {where}: {problem}", hint=hint)

    def section(self, keys: tuple[str, ...], model: type[M]) -> M:
        """The section at `keys` (e.g. ("openstack", "lab")) validated by `model`; absent means defaults."""
        data: Any = self.data()
        for key in keys:
            data = data.get(key) if isinstance(data, dict) else None
        return self.validate(keys, data or {}, model)

    def validate(self, keys: tuple[str, ...], section: object, model: type[M]) -> M:
        """`section` (found at `keys` in this file) validated by `model`."""
        valid = f"valid keys: {', '.join(model.model_fields)} (see {self.doc})"
        if not isinstance(section, dict):
            raise self.error(".".join(keys), "must be a mapping of settings", valid)
        try:
            return model.model_validate(section)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join([*keys, *(str(p) for p in err["loc"])])
            absent = "" if self.path.is_file() else f" (there is no {self.what}: write one)"
            given = err.get("input")
            # a bad value is named (the fix is the value); an unknown key gets the list of valid keys
            problem = err["msg"] if err["type"] in ("extra_forbidden", "missing") or isinstance(given, dict | list) \
                else f"{given!r}: {err['msg']}"
            hint = valid if err["type"] in ("extra_forbidden", "missing") else f"see {self.doc}"
            raise self.error(where, f"{problem}{absent}", hint) from e


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
