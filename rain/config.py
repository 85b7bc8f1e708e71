"""One Settings object: built-in defaults < config file < RAIN_* environment < flags.

Each setting is declared once in FIELDS; that declaration drives the config
file key, the environment variable, the default and `fg-image config show`.
No other module reads os.environ.
"""

from __future__ import annotations

import getpass
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rain.errors import ConfigError, InvalidInput

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int | None, what: str = "size") -> int | None:
    """'100M', '1.5G', '2GiB', '500000' → bytes; 'unlimited' or '' → None."""
    if text is None or isinstance(text, int):
        return text
    value = str(text).strip().lower()
    if value in ("", "none", "unlimited"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", value)
    if not m:
        raise InvalidInput(
            f"bad {what} {text!r}",
            hint="use a number of bytes or a unit such as 500M, 2G, 1TiB, or 'unlimited'",
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _xdg(var: str, fallback: str) -> Path:
    base = os.environ.get(var)
    return Path(base) if base else Path.home() / fallback


@dataclass(frozen=True)
class Field:
    name: str
    default: Callable[[], Any]
    help: str
    secret: bool = False
    convert: Callable[[Any], Any] = str

    @property
    def env(self) -> str:
        return "RAIN_" + self.name.upper()


def _opt_str(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("1", "true", "yes", "on")


ADAPT_BUILDERS = ("qemu", "opennebula", "openstack", "local")


def _builder(v: Any) -> str:
    name = str(v).strip()
    if name not in ADAPT_BUILDERS:
        raise InvalidInput(f"adapt_builder {name!r} is not a builder",
                           hint="set it to one of " + ", ".join(ADAPT_BUILDERS))
    return name


FIELDS: tuple[Field, ...] = (
    Field("data_dir", lambda: str(_xdg("XDG_DATA_HOME", ".local/share") / "rain"),
          "where the embedded repository, caches and logs live"),
    Field("mongo_uri", lambda: None, "MongoDB URI; unset = start the embedded SecantusDB server",
          secret=True, convert=_opt_str),
    Field("mongo_db", lambda: "rain", "database name inside MongoDB"),
    Field("repo_url", lambda: None, "URL of a remote `fg-image serve`; unset = talk to MongoDB directly",
          convert=_opt_str),
    Field("token", lambda: None, "bearer token for the remote repository", secret=True, convert=_opt_str),
    Field("user", lambda: getpass.getuser(), "who you are when talking to MongoDB directly"),
    Field("default_quota", lambda: None, "quota for new users (e.g. 50G); unset = unlimited",
          convert=lambda v: parse_size(v, "default_quota")),
    Field("unpack_max", lambda: None,
          "largest tree one image may unpack to when vetted or registered (e.g. 100G); "
          "unset = 20 × the image file's size + 256M; never more than the free space less 256M",
          convert=lambda v: parse_size(v, "unpack_max")),
    Field("chunk_cache", lambda: 2 << 30,
          "largest the cache of downloaded image chunks may grow (e.g. 10G); 0 = no cache, unlimited = no bound",
          convert=lambda v: parse_size(v, "chunk_cache")),
    Field("upload_grace", lambda: 600, "seconds without progress before an upload counts as abandoned",
          convert=int),
    Field("launch_max_machines", lambda: 8, "machines one user may run at once from `fg-image launch`: "
          "this host's qemu ones and every cloud one recorded", convert=int),
    Field("launch_lifetime", lambda: 86400, "seconds after which a launched machine is released even if nothing "
          "stops it (qemu: QEMU is killed)", convert=int),
    Field("serve_host", lambda: "127.0.0.1", "address `fg-image serve` listens on"),
    Field("serve_port", lambda: 8780, "port `fg-image serve` listens on", convert=int),
    Field("public_url", lambda: None, "URL clients and targets use to reach the service",
          convert=_opt_str),
    Field("mirror", lambda: None, "package mirror for builds; unset = the host's apt/dnf configuration",
          convert=_opt_str),
    Field("adapt_builder", lambda: "qemu",
          "where register runs an image's own programs (package installs, initramfs rebuilds): a builder VM "
          "(qemu, opennebula, openstack) or local (a chroot on this host: only for sites that register "
          "nothing but their own images)", convert=_builder),
    Field("timeout", lambda: 30, "seconds to wait for a repository or service to answer", convert=int),
    Field("db_timeout", lambda: 120, "seconds one MongoDB operation may take before Rain gives up on the database "
          "(a server that hangs is then an error, not a command that never ends)", convert=int),
    Field("reproducible", lambda: True, "generate the same bytes from the same recipe and package versions (times "
          "clamped to the source date epoch, disk identifiers from the recipe hash); false = the build's own times "
          "and random identifiers, which `fg-image rebuild` cannot check", convert=_bool),
    Field("debug", lambda: False, "show tracebacks", convert=_bool),
    Field("targets_file", lambda: None,
          "YAML file with register target sites; unset = DATA_DIR/targets.yaml, else ~/.config/rain/targets.yaml",
          convert=_opt_str),
    Field("builders_file", lambda: None,
          "YAML file with builder settings (qemu, opennebula, openstack); unset = DATA_DIR/builders.yaml, "
          "else ~/.config/rain/builders.yaml", convert=_opt_str),
)
_BY_NAME = {f.name: f for f in FIELDS}


@dataclass
class Settings:
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def data_path(self) -> Path:
        return Path(self.values["data_dir"]).expanduser()

    @property
    def targets_path(self) -> Path:
        """The register targets file."""
        return self._yaml_file("targets_file", "targets.yaml")

    @property
    def builders_path(self) -> Path:
        """The builders file."""
        return self._yaml_file("builders_file", "builders.yaml")

    def _yaml_file(self, setting: str, name: str) -> Path:
        """The setting, else DATA_DIR/<name> if it exists, else ~/.config/rain/<name>."""
        if self.values.get(setting):
            return Path(self.values[setting]).expanduser()
        in_data = self.data_path / name
        return in_data if in_data.is_file() else _xdg("XDG_CONFIG_HOME", ".config") / "rain" / name

    @property
    def config_file(self) -> Path:
        return Path(self.sources.get("_config_file", ""))

    def with_overrides(self, **flags: Any) -> Settings:
        values, sources = dict(self.values), dict(self.sources)
        for name, value in flags.items():
            if value is None:
                continue
            values[name] = _convert(_BY_NAME[name], value, "flag")
            sources[name] = "flag"
        return Settings(values, sources)

    def shown(self) -> list[tuple[str, str, str]]:
        """(name, value, source) rows with secrets redacted."""
        rows = []
        for f in FIELDS:
            value = self.values[f.name]
            text = "" if value is None else str(value)
            if f.secret and value:
                text = re.sub(r"//[^@/]*@", "//***@", text) if "://" in text else "***"
            rows.append((f.name, text, self.sources.get(f.name, "default")))
        return rows


def _convert(f: Field, value: Any, source: str) -> Any:
    try:
        return f.convert(value)
    except InvalidInput:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value {value!r} for {f.name} (from {source})",
                          hint=f"see `fg-image config show`; {f.help}") from e


def read_yaml_mapping(path: Path, what: str, doc: str, example: str) -> dict[str, Any]:
    """A YAML settings file whose top level maps names to settings (the targets file, the builders file)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}", hint="check the path and its permissions") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}",
                          hint=f"fix the file; see {doc} for its shape") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping of names to settings", hint=f"e.g. {example!r}")
    return data


def env_value(name: str) -> str | None:
    """A credential a targets file refers to by environment variable name (`password_env: OS_PASSWORD`)."""
    return os.environ.get(name)


def config_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("RAIN_CONFIG"):
        return Path(env["RAIN_CONFIG"]).expanduser()
    return _xdg("XDG_CONFIG_HOME", ".config") / "rain" / "config.toml"


def load_settings(environ: dict[str, str] | None = None, **flags: Any) -> Settings:
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f in FIELDS:
        values[f.name] = f.default()
    path = config_path(env)
    sources["_config_file"] = str(path)
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}",
                              hint="fix the file or point RAIN_CONFIG elsewhere") from e
        for key, value in data.items():
            if key not in _BY_NAME:
                raise ConfigError(f"unknown setting {key!r} in {path}",
                                  hint="valid settings: " + ", ".join(_BY_NAME))
            values[key] = _convert(_BY_NAME[key], value, str(path))
            sources[key] = f"file {path}"
    for f in FIELDS:
        if f.env in env:
            values[f.name] = _convert(f, env[f.env], f.env)
            sources[f.name] = f"env {f.env}"
    return Settings(values, sources).with_overrides(**flags)
