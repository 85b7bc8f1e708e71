"""OpenStack as the register target and the builder both log in to it: Keystone v3 through keystoneauth1.

    login = password_login(site, site.secret("password"))   # one token, shared by the sessions made from it
    session = keystone_session(login)                        # a requests session that adds the token
    with keystone_errors(site, "creating the Glance image", TargetError):
        session.post(...)

There is one way to authenticate (keystoneauth1's generic password plugin,
scoped to the project: it discovers Keystone v3 from a bare auth_url, the form
openrc files and clouds.yaml use, then fetches and renews the token and reads
the service catalog) and one place where keystoneauth1's exceptions become Rain's kinds:
no answer → Unreachable, Keystone refusing the credentials → Unauthorized, a
service missing from the catalog → ConfigError, anything else → the
caller's `failure` kind (TargetError, BuildError). Messages name what Rain was
doing and hint at the setting in the caller's settings file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import generic

from rain.errors import ConfigError, RainError, Unauthorized, Unreachable, one_line
from rain.settings_file import Credentials, one_secret


class KeystoneAuth(Credentials):
    """How Rain logs in to an OpenStack cloud (Keystone v3, password): the register target and the builder."""

    auth_url: str
    """Keystone, e.g. https://keystone.example.org:5000 or .../v3 (v3 is found by version discovery)."""
    username: str
    password_env: str | None = None
    password_file: str | None = None
    user_domain_name: str = "Default"
    project_name: str
    project_domain_name: str = "Default"
    region: str | None = None
    interface: str = "public"
    check_secrets = one_secret("password")


def password_login(auth: KeystoneAuth, password: str) -> generic.Password:
    """keystoneauth1's password plugin, scoped to the project; it finds Keystone v3 (discovery) and holds
    (and renews) the token."""
    return generic.Password(auth_url=auth.auth_url, username=auth.username, password=password,
                       user_domain_name=auth.user_domain_name, project_name=auth.project_name,
                       project_domain_name=auth.project_domain_name)


def keystone_session(login: generic.Password, timeout: float = 60) -> ks_session.Session:
    """A session that authenticates every request with the login's token (one per thread: sessions are
    not shared between threads, the login is)."""
    return ks_session.Session(auth=login, timeout=timeout)


def refused(auth: KeystoneAuth, what: str, error: object) -> Unauthorized:
    """OpenStack refusing Rain's credentials (Keystone's answer, or a service's 401/403)."""
    return Unauthorized(f"OpenStack refused {what}: {one_line(error)}",
                        hint=f"check username, password_env/password_file, project and domains "
                             f"in the {auth.settings_file}")


@contextmanager
def keystone_errors(auth: KeystoneAuth, what: str, failure: type[RainError],
                    service: str = "compute") -> Iterator[None]:
    """keystoneauth1's exceptions inside the block → Rain's kinds, naming `what` was being done."""
    try:
        yield
    except RainError:
        raise
    except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.UnknownConnectionError) as e:
        raise Unreachable(f"cannot reach OpenStack ({what}) at {auth.auth_url}: {one_line(e)}",
                          hint=f"check auth_url in the {auth.settings_file} and the network") from e
    except (ks_exc.Unauthorized, ks_exc.Forbidden) as e:
        raise refused(auth, what, e) from e
    except (ks_exc.EndpointNotFound, ks_exc.EmptyCatalog) as e:
        raise ConfigError(f"OpenStack has no {auth.interface} {service} endpoint "
                          f"(region {auth.region or 'any'}) for {what}",
                          hint=f"check region and interface in the {auth.settings_file}") from e
    except ks_exc.ClientException as e:
        raise failure(f"OpenStack {what} failed: {one_line(e)}") from e
