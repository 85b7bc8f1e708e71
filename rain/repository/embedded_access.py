"""Who may reach the embedded database: one generated credential, files only their owner reads.

SecantusDB listens on TCP only (no Unix socket), so every local user can connect
to its 127.0.0.1 port; what keeps them out is SCRAM-SHA-256 (`--auth`). It has
no localhost exception: the first user must be created on a run without
`--auth`, so Rain does that once, on a throwaway port, then restarts the server
with `--auth` and removes any user it did not create itself (someone who raced
into that window, or into an older Rain's server that never had auth).

The credential lives in `mongo/credential.json` (0600) under the 0700 `mongo/`
directory; the database files are 0600 too, so nobody else can read the data
behind the server's back either.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import pymongo
from pymongo.errors import OperationFailure

from rain.errors import ConfigError

USER = "rain"
CREDENTIAL = "credential.json"
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


@dataclass(frozen=True)
class Credential:
    user: str
    password: str

    def userinfo(self) -> str:
        return f"{quote_plus(self.user)}:{quote_plus(self.password)}@"


def tighten(home: Path) -> None:
    """Make `home` 0700 and nothing under it readable by group or others.

    Data directories made before Rain used auth were 0755/0644; this is their migration.
    """
    home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    for path in [home, *home.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        wanted = stat.S_IMODE(mode) & ~0o077
        if stat.S_ISDIR(mode):
            wanted |= PRIVATE_DIR
        if wanted != stat.S_IMODE(mode):
            path.chmod(wanted)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing it atomically (no window with looser modes)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_credential(home: Path) -> Credential | None:
    path = home / CREDENTIAL
    try:
        raw = json.loads(path.read_text())
        return Credential(str(raw["user"]), str(raw["password"]))
    except FileNotFoundError:
        return None
    except PermissionError as e:
        raise ConfigError(f"cannot read the embedded database's credential {path}",
                          hint="run Rain as the user who owns that data directory, or set RAIN_DATA_DIR "
                               "to a directory of your own") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"the embedded database's credential {path} is damaged",
                          hint=f"stop the server (fg-image repo stop), delete {path} and run any fg-image "
                               "command: Rain then sets a new one") from e


def new_credential() -> Credential:
    return Credential(USER, secrets.token_urlsafe(32))


def save_credential(home: Path, cred: Credential) -> None:
    write_private(home / CREDENTIAL, json.dumps({"user": cred.user, "password": cred.password}))


def _client(port: int, cred: Credential | None = None) -> pymongo.MongoClient:
    auth = cred.userinfo() if cred else ""
    return pymongo.MongoClient(f"mongodb://{auth}127.0.0.1:{port}/?directConnection=true&authSource=admin",
                               serverSelectionTimeoutMS=10_000, connectTimeoutMS=5000, socketTimeoutMS=60_000)


def create_admin(port: int, cred: Credential) -> None:
    """On a server running without --auth: (re)create Rain's admin user with this password.

    Dropped first, so a user left by an earlier attempt that died before saving its
    password does not block this one.
    """
    with _client(port) as client:
        try:
            client.admin.command("dropUser", cred.user)
        except OperationFailure:
            pass  # no such user: the usual case
        client.admin.command("createUser", cred.user, pwd=cred.password, roles=["root"])


def evict_strangers(port: int, cred: Credential, fresh: bool) -> None:
    """On the server now running with --auth: remove users Rain did not create.

    They can only come from the unauthenticated set-up window or an older,
    open server. For a fresh data directory any database is a stranger's too.
    """
    with _client(port, cred) as client:
        users = client.admin.command("usersInfo", forAllDBs=True)["users"]
        for user in users:
            if (user["db"], user["user"]) != ("admin", cred.user):
                client[user["db"]].command("dropUser", user["user"])
        if fresh:
            for name in client.list_database_names():
                if name not in ("admin", "local", "config"):
                    client.drop_database(name)
