"""OpenNebula's XML-RPC API and its template syntax, as the register target and the builder both use them.

    one = OneClient(endpoint, username, password, failure=TargetError, settings_file="targets file")
    image_id = one("one.image.allocate", template, datastore_id)
    one("one.image.delete", image_id, missing_ok=True)

Replies have OpenNebula's documented shape [success, result-or-error, error
code, ...]; a failure reply, a fault or a transport error becomes a one-line
Rain error: Unreachable (no answer), Unauthorized (authentication or
authorization refused), else `failure` (the caller's kind: TargetError,
BuildError). A call makes its own connection, so one client serves several
threads (the builder pool).

Templates (one.image.allocate, one.vm.allocate) are written by
render_template only: every value is double-quoted with `\\` and `"`
escaped, so no value (a label's name, a key, a description) can end its
attribute and add another; template_from_xml reads one back.
"""

from __future__ import annotations

import http.client
import xml.etree.ElementTree as ET
import xmlrpc.client
from typing import Any

from rain.errors import RainError, Unauthorized, Unreachable, one_line

AUTH_ERRORS = (0x0100, 0x0200)  # AUTHENTICATION, AUTHORIZATION
NO_EXISTS = 0x0400

Vector = list[tuple[str, str]]
Template = list[tuple[str, "str | Vector"]]
"""(name, value) pairs in order; a value is a string or a vector of (name, string) pairs."""


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_template(template: Template) -> str:
    """OpenNebula template syntax: NAME = "v" and NAME = [ K = "v", ... ] lines, every value quoted."""
    lines = []
    for name, value in template:
        if isinstance(value, str):
            lines.append(f"{name} = {_quote(value)}")
        else:
            lines.append(f"{name} = [ " + ", ".join(f"{k} = {_quote(v)}" for k, v in value) + " ]")
    return "\n".join(lines) + "\n"


def template_from_xml(node: ET.Element) -> Template:
    """A TEMPLATE element (one.template.info's, one.vm.info's) as (name, value | vector) pairs."""
    return [(child.tag, [(sub.tag, sub.text or "") for sub in child] if len(child) else child.text or "")
            for child in node]


class OneClient:
    def __init__(self, endpoint: str, username: str, password: str, *, failure: type[RainError],
                 settings_file: str, timeout: float = 60) -> None:
        self.endpoint, self.timeout, self._session = endpoint, timeout, f"{username}:{password}"
        self.failure, self.settings_file = failure, settings_file

    def __call__(self, method: str, *args: Any, missing_ok: bool = False) -> Any:
        # a proxy per call: a Transport keeps one connection and is not safe across threads
        proxy = xmlrpc.client.ServerProxy(self.endpoint, allow_none=True,
                                          transport=_transport(self.endpoint, self.timeout))
        try:
            reply = getattr(proxy, method)(self._session, *args)
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"cannot reach OpenNebula at {self.endpoint}: {one_line(e)}",
                              hint=f"check endpoint in the {self.settings_file} and that oned is running") from e
        except xmlrpc.client.Fault as e:
            raise self.failure(f"OpenNebula {method} fault {e.faultCode}: {one_line(e.faultString)}") from e
        except xmlrpc.client.ProtocolError as e:
            raise Unreachable(f"OpenNebula {method}: HTTP {e.errcode} {e.errmsg} from {self.endpoint}",
                              hint="check that endpoint is the XML-RPC URL (usually ends in /RPC2)") from e
        if not isinstance(reply, list) or len(reply) < 2:
            raise self.failure(f"OpenNebula {method} returned an unexpected reply: {str(reply)[:100]}")
        if not reply[0]:
            code = reply[2] if len(reply) > 2 else 0
            if missing_ok and code == NO_EXISTS:
                return None
            if code in AUTH_ERRORS:
                raise Unauthorized(f"OpenNebula refused {method}: {one_line(reply[1])}",
                                   hint=f"check username and password_env/password_file in the {self.settings_file}")
            raise self.failure(f"OpenNebula {method} failed: {one_line(reply[1])}")
        return reply[1]


def _transport(endpoint: str, timeout: float) -> xmlrpc.client.Transport:
    base = xmlrpc.client.SafeTransport if endpoint.startswith("https") else xmlrpc.client.Transport

    class Timed(base):  # type: ignore[valid-type,misc]
        def make_connection(self, host: Any) -> http.client.HTTPConnection:
            conn = super().make_connection(host)
            conn.timeout = timeout
            return conn  # type: ignore[no-any-return]

    return Timed()
