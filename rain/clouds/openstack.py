"""OpenStack as the register target and the builder both log in to it: Keystone v3 through keystoneauth1.

    login = log_in(site)                      # credentials read and checked now; no network yet
    session = login.session()                 # a keystoneauth1 session: adds the token, renews it
    glance = login.endpoint(session, "image", site, TargetError)
    with keystone_errors(site, "creating the Glance image", TargetError, "image", glance):
        resp = session.post(...)
    reason(resp)                              # Glance's / Keystone's own words for a refusal

One way to log in, three ways to say who Rain is (the settings of KeystoneAuth):

- `cloud: NAME`: an entry of the user's clouds.yaml, read by openstacksdk's
  config loader exactly as the `openstack` CLI reads it ($OS_CLIENT_CONFIG_FILE,
  ./clouds.yaml, ~/.config/openstack/, /etc/openstack/, with secure.yaml and
  any auth type it names); keys set beside it in Rain's file override it;
- `application_credential_id` + its secret (keystoneauth1's v3 plugin);
- `username` + password, scoped to `project_name` (keystoneauth1's generic
  password plugin: it discovers v3 from a bare auth_url, the form openrc files
  and clouds.yaml use).

The plugin holds the token and fetches a new one before it expires, so a long
upload does not outlive it. TLS is checked against `cacert` when set, else the
system's trusted CAs (not the bundle requests ships). keystoneauth1's exceptions
become Rain's kinds here: no answer → Unreachable, an untrusted certificate →
Unreachable with the cacert hint, credentials refused → Unauthorized, a service
missing from the catalog → ConfigError naming the regions that have it,
anything else → the caller's `failure` kind (TargetError, BuildError).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import base, generic, v3
from pydantic import model_validator

from rain.clouds.tls import system_cas
from rain.errors import ConfigError, RainError, Unauthorized, Unreachable, one_line
from rain.settings_file import Credentials, one_secret


class KeystoneAuth(Credentials):
    """How Rain logs in to an OpenStack cloud (Keystone v3): the register target and the builder."""

    cloud: str | None = None
    """An entry of your clouds.yaml (found as the `openstack` CLI finds it); the keys below override it."""
    auth_url: str | None = None
    """Keystone, e.g. https://keystone.example.org:5000 or .../v3 (v3 is found by version discovery)."""
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    application_credential_id: str | None = None
    """Log in with this application credential instead of a password (its secret by _env or _file)."""
    application_credential_secret_env: str | None = None
    application_credential_secret_file: str | None = None
    user_domain_name: str = "Default"
    project_name: str | None = None
    project_domain_name: str = "Default"
    region: str | None = None
    """The catalog region to use (unset: the only one, or the first that has the service)."""
    interface: str = "public"
    cacert: str | None = None
    """A CA bundle (PEM) to trust for Keystone and the services (unset: the system's trusted CAs)."""
    check_secrets = one_secret("password", "application_credential_secret")

    @model_validator(mode="after")
    def _who(self) -> KeystoneAuth:
        if self.cloud:
            return self
        if not self.auth_url:
            raise ValueError("give auth_url (or cloud: a name in your clouds.yaml)")
        if self.application_credential_id:
            return self
        if not (self.username and self.project_name):
            raise ValueError("give username and project_name (or application_credential_id, or cloud)")
        return self

    @property
    def where(self) -> str:
        return self.auth_url or f"cloud {self.cloud!r}"


@dataclass(frozen=True)
class Login:
    """Who Rain is on one cloud: keystoneauth1's auth plugin (it holds and renews the token; shared by the
    sessions made from it, one per thread) and how to reach the cloud."""

    plugin: base.BaseIdentityPlugin
    verify: bool | str
    region: str | None
    interface: str
    auth_url: str

    def session(self, timeout: float = 60) -> ks_session.Session:
        return ks_session.Session(auth=self.plugin, verify=self.verify, timeout=timeout)

    def endpoint(self, session: ks_session.Session, service: str, conf: KeystoneAuth,
                 failure: type[RainError]) -> str:
        """The service's URL in the catalog for this login's interface and region (logs in if needed);
        a region without it is a ConfigError naming the regions that have it."""
        with keystone_errors(conf, "authentication", failure, service):
            try:
                url = session.get_endpoint(service_type=service, interface=self.interface,
                                           region_name=self.region, skip_discovery=True)
            except (ks_exc.EndpointNotFound, ks_exc.EmptyCatalog):
                url = None
            if url:
                return str(url).rstrip("/")
            access = self.plugin.get_access(session)
            listed = access.service_catalog.get_endpoints(service_type=service, interface=self.interface) or {}
        regions = sorted({str(e.get("region_id") or e.get("region")) for es in listed.values() for e in es or []
                          if e})
        offered = f"regions with one: {', '.join(regions)}" if regions else "no region has one"
        raise ConfigError(f"OpenStack has no {self.interface} {service} endpoint in region "
                          f"{self.region or 'any'} ({offered})",
                          hint=f"set region (and interface) in the {conf.settings_file}")


def _verify(conf: KeystoneAuth) -> bool | str:
    if not conf.cacert:
        return system_cas()
    path = Path(conf.cacert).expanduser()
    if not path.is_file():
        raise ConfigError(f"cacert {conf.cacert} is not a file",
                          hint=f"set cacert in the {conf.settings_file} to the PEM bundle of your cloud's CA")
    return str(path)


def log_in(conf: KeystoneAuth) -> Login:
    """The login the settings describe; secrets are read (and missing ones refused) now, before any call."""
    if conf.cloud:
        return _from_clouds_yaml(conf)
    assert conf.auth_url is not None  # _who
    plugin: base.BaseIdentityPlugin
    if conf.application_credential_id:
        plugin = v3.ApplicationCredential(
            auth_url=_v3(conf.auth_url), application_credential_id=conf.application_credential_id,
            application_credential_secret=conf.secret("application_credential_secret"))
    else:
        plugin = generic.Password(auth_url=conf.auth_url, username=conf.username, password=conf.secret("password"),
                                  user_domain_name=conf.user_domain_name, project_name=conf.project_name,
                                  project_domain_name=conf.project_domain_name)
    return Login(plugin, _verify(conf), conf.region, conf.interface, conf.auth_url)


def _v3(auth_url: str) -> str:
    """Keystone's v3 root (the application-credential plugin takes no bare URL)."""
    url = auth_url.rstrip("/")
    return url if re.search(r"/v3(\.\d+)?$", url) else url + "/v3"


def _from_clouds_yaml(conf: KeystoneAuth) -> Login:
    """`cloud: NAME` as the openstack CLI reads it; the keys set beside it in Rain's file win."""
    from openstack import exceptions as sdk_exc  # openstacksdk: only its config loader, and only here
    from openstack.config import loader

    assert conf.cloud is not None
    given = conf.model_fields_set
    overrides: dict[str, Any] = {k: getattr(conf, k) for k in ("region", "interface", "cacert") if k in given}
    if "region" in overrides:
        overrides["region_name"] = overrides.pop("region")
    auth: dict[str, Any] = {k: getattr(conf, k) for k in ("auth_url", "username", "project_name", "user_domain_name",
                                          "project_domain_name", "application_credential_id") if k in given}
    if conf.password_env or conf.password_file:
        auth["password"] = conf.secret("password")
    if conf.application_credential_secret_env or conf.application_credential_secret_file:
        auth["application_credential_secret"] = conf.secret("application_credential_secret")
    if "cacert" in overrides:
        overrides["cacert"] = _verify(conf)
    config = loader.OpenStackConfig()
    try:
        if conf.cloud not in config.get_cloud_names():
            files = config.config_filename or "none found"
            raise ConfigError(f"no cloud {conf.cloud!r} in clouds.yaml (read: {files}; clouds there: "
                              f"{', '.join(sorted(config.get_cloud_names())) or 'none'})",
                              hint=f"fix cloud in the {conf.settings_file}, or set OS_CLIENT_CONFIG_FILE to "
                                   "the clouds.yaml that has it")
        if auth:
            overrides["auth"] = auth
        region = config.get_one(cloud=conf.cloud, **overrides)
        plugin = region.get_auth()
    except (sdk_exc.ConfigException, ks_exc.ClientException) as e:
        raise ConfigError(f"clouds.yaml cloud {conf.cloud!r}: {one_line(e)}",
                          hint="check that entry (auth_url, credentials) in your clouds.yaml") from e
    found = region.config.get("auth") or {}
    if "password" in str(region.config.get("auth_type") or "password") and not found.get("password"):
        # keystoneauth1 would say so only at the first call, as a bare Exception
        raise ConfigError(f"clouds.yaml cloud {conf.cloud!r} has no password",
                          hint=f"add password to that entry (or to secure.yaml), or set password_env or "
                               f"password_file beside cloud in the {conf.settings_file}")
    if not isinstance(plugin, base.BaseIdentityPlugin):
        raise ConfigError(f"clouds.yaml cloud {conf.cloud!r}: auth type {region.config.get('auth_type')!r} "
                          "does not log in to Keystone", hint="use a password or application credential there")
    verify: bool | str | None
    verify, _cert = region.get_requests_verify_args()
    if verify is True or verify is None:
        verify = system_cas()
    auth_url = str(found.get("auth_url") or f"cloud {conf.cloud!r}")
    interface = region.get_interface()
    return Login(plugin, verify, region.get_region_name() or None, str(interface or "public"), auth_url)


def reason(resp: requests.Response) -> str:
    """The service's own words for a refusal, on one line: Glance's and Keystone's JSON `message` (Rain asks
    for JSON; Glance answers HTML otherwise), else the body's text without markup."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    text = ""
    if isinstance(body, dict):
        error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else body  # Keystone nests it
        text = str(error.get("message") or error.get("title") or "")
    if not text:
        text = re.sub(r"<[^>]*>", "\n", resp.text)
    text = text.replace("<br />", "\n")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return one_line(first)[:300] or resp.reason or "no reason given"


def refused(auth: KeystoneAuth, what: str, error: object) -> Unauthorized:
    """OpenStack refusing Rain's credentials (Keystone's answer, or a service's 401)."""
    return Unauthorized(f"OpenStack refused {what}: {one_line(error)}",
                        hint=f"check the credentials (username and password, application credential, or "
                             f"cloud), project and domains in the {auth.settings_file}")


@contextmanager
def keystone_errors(auth: KeystoneAuth, what: str, failure: type[RainError], service: str = "compute",
                    url: str | None = None) -> Iterator[None]:
    """keystoneauth1's exceptions inside the block → Rain's kinds, naming `what` was being done and where
    (`url`: the service's, when the block calls the service; else Keystone's)."""
    where = url or auth.where
    try:
        yield
    except RainError:
        raise
    except ks_exc.SSLError as e:
        raise Unreachable(f"cannot reach OpenStack ({what}) at {where} over TLS: {_tls_reason(e)}",
                          hint=f"set cacert in the {auth.settings_file} to the CA bundle that signed the "
                               "cloud's certificate (the system's CAs are used by default)") from e
    except (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.UnknownConnectionError) as e:
        setting = "auth_url" if url is None else f"region and interface (the catalog's {service} endpoint)"
        raise Unreachable(f"cannot reach OpenStack ({what}) at {where}: {_connect_reason(e)}",
                          hint=f"check {setting} in the {auth.settings_file} and the network") from e
    except ks_exc.Unauthorized as e:
        raise refused(auth, what, e) from e
    except ks_exc.Forbidden as e:
        raise failure(f"OpenStack refused {what}: {one_line(e)}",
                      hint=f"the user needs a role that allows it in the project, in the {auth.settings_file}") from e
    except (ks_exc.EndpointNotFound, ks_exc.EmptyCatalog) as e:
        raise ConfigError(f"OpenStack has no {auth.interface} {service} endpoint "
                          f"(region {auth.region or 'any'}) for {what}",
                          hint=f"check region and interface in the {auth.settings_file}") from e
    except ks_exc.ClientException as e:
        raise failure(f"OpenStack {what} failed: {one_line(e)}") from e


def _tls_reason(e: Exception) -> str:
    found = re.search(r"certificate verify failed: ([^(')\]]+)", str(e))
    return f"certificate verify failed: {found.group(1).strip()}" if found else one_line(e)


def _connect_reason(e: Exception) -> str:
    text = str(e)
    for known in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                  "Network is unreachable", "Connection reset"):
        if known in text:
            return known
    return one_line(e)
