"""KeystoneAuth: how Rain logs in to an OpenStack cloud (the register target and the builder).

The credential-reference mechanism (`Credentials`, `one_secret`) lives with the
settings-file loader in rain/settings_file.py; it is re-exported here for the
modules that still import it from this one.
"""

from __future__ import annotations

from rain.settings_file import Credentials, one_secret

__all__ = ["Credentials", "KeystoneAuth", "one_secret"]


class KeystoneAuth(Credentials):
    """How Rain logs in to an OpenStack cloud (Keystone v3, password): the register target and the builder."""

    auth_url: str
    """Keystone v3, e.g. https://keystone.example.org:5000/v3."""
    username: str
    password_env: str | None = None
    password_file: str | None = None
    user_domain_name: str = "Default"
    project_name: str
    project_domain_name: str = "Default"
    region: str | None = None
    interface: str = "public"
    check_secrets = one_secret("password")
