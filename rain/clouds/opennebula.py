"""OpenNebula through pyone (OpenNebula's own Python bindings) and its template syntax, as the register
target and the builder both use them.

    one = OneClient(endpoint, username, password, failure=TargetError, settings_file="targets file")
    image_id = one("one.image.allocate", template, datastore_id)
    image = one("one.image.info", image_id, False)       # pyone's typed IMAGE: image.STATE, image.TEMPLATE
    one("one.image.delete", image_id, missing_ok=True)

A call is pyone's XML-RPC call of that name (pyone adds the session and parses an XML reply into its
generated bindings: IMAGE, VM, VMTEMPLATE, each TEMPLATE a dict); the reply comes back as pyone gives
it, the one `Any` of this seam. pyone raises by oned's error code, and each becomes a one-line Rain
error: no answer (refused, dropped, timed out, an HTTP error) → Unreachable; authentication or
authorization refused (0x0100, 0x0200) → Unauthorized; anything else, no-exists (0x0400) and action
(0x0800) included, → `failure`, the caller's kind (TargetError, BuildError); `missing_ok` makes
no-exists a None (a delete of something already gone).

Every call makes its own pyone.OneServer. pyone's XML-RPC server holds no connection (each call is one
requests.post) and parses each reply with a fresh parser, but it does not promise thread safety, and
its `timeout=` argument calls socket.setdefaulttimeout, which would change every socket of the
process. So Rain gives it a transport with the timeout on its own requests instead, and the builder's
pool threads share nothing. That transport also trusts the system's CAs for https (as the stdlib
client before it did), not the bundle requests ships.

Templates (one.image.allocate, one.vm.allocate) are written by render_template only: every value is
double-quoted with `\\` and `"` escaped, so no value (a label's name, a key, a description) can end
its attribute and add another. pyone could take a dict, but it writes a dict's values unescaped, so
Rain passes its rendered string. template_from_pyone reads back a TEMPLATE as pyone parsed it.
"""

from __future__ import annotations

import functools
import http.client
import ssl
import xmlrpc.client
from collections.abc import Callable, Mapping
from typing import Any
from xml.parsers.expat import ExpatError

from rain.clouds.tls import system_cas
from rain.errors import RainError, Unauthorized, Unreachable, one_line
from rain.waiting import Deadline, Pending, wait_for

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


def template_from_pyone(template: Mapping[str, object] | None) -> Template:
    """A TEMPLATE as pyone parses it (a dict: a vector is a dict, a repeated attribute a list) as pairs."""
    def text(value: object) -> str:
        return "" if value is None else str(value)

    pairs: Template = []
    for name, value in (template or {}).items():
        for one in value if isinstance(value, list) else [value]:
            if isinstance(one, Mapping):
                pairs.append((name, [(str(k), text(v)) for k, v in one.items()]))
            else:
                pairs.append((name, text(one)))
    return pairs


ACTIVE, DONE, RUNNING = 3, 6, 3
STATES = {0: "INIT", 1: "PENDING", 2: "HOLD", 3: "ACTIVE", 4: "STOPPED", 5: "SUSPENDED", 6: "DONE",
          7: "FAILED", 8: "POWEROFF", 9: "UNDEPLOYED", 10: "CLONING", 11: "CLONING_FAILURE"}
LCM_STATES = {0: "LCM_INIT", 1: "PROLOG", 2: "BOOT", 3: "RUNNING", 16: "UNKNOWN", 36: "BOOT_FAILURE",
              37: "BOOT_MIGRATE_FAILURE", 38: "PROLOG_MIGRATE_FAILURE", 39: "PROLOG_FAILURE",
              40: "EPILOG_FAILURE", 41: "EPILOG_STOP_FAILURE", 42: "EPILOG_UNDEPLOY_FAILURE",
              44: "PROLOG_MIGRATE_POWEROFF_FAILURE", 46: "PROLOG_MIGRATE_SUSPEND_FAILURE",
              47: "BOOT_UNDEPLOY_FAILURE", 48: "BOOT_STOPPED_FAILURE", 49: "PROLOG_RESUME_FAILURE",
              50: "PROLOG_UNDEPLOY_FAILURE"}
FAILED_STATES = {4, 5, 6, 7, 8, 9, 11}
"""States a VM being launched can only reach by failing (or being stopped by someone else)."""


class OneClient:
    def __init__(self, endpoint: str, username: str, password: str, *, failure: type[RainError],
                 settings_file: str, timeout: float = 60) -> None:
        self.endpoint, self.timeout, self._session = endpoint, timeout, f"{username}:{password}"
        self.failure, self.settings_file = failure, settings_file

    def __call__(self, method: str, *args: object, missing_ok: bool = False) -> Any:
        import pyone  # here, not at the top: its generated bindings and lxml cost 0.2 s to import
        from pyone.bindings.supbind import GDSParseError

        server = pyone.OneServer(self.endpoint, session=self._session, protocol="xmlrpc")
        server._ServerProxy__transport = _timed_transport()(self.endpoint, self.timeout)
        try:
            return getattr(server, method.removeprefix("one."))(*args)
        except pyone.OneNoExistsException as e:
            if missing_ok:
                return None
            raise self.failure(f"OpenNebula {method} failed: {one_line(e)}") from e
        except pyone.OneAuthenticationException as e:
            raise Unauthorized(f"OpenNebula refused {method}: {one_line(e)}",
                               hint=f"check username and password_env/password_file in the {self.settings_file}") from e
        except pyone.OneAuthorizationException as e:
            raise Unauthorized(f"OpenNebula refused {method}: {one_line(e)}",
                               hint=f"the user in the {self.settings_file} logged in but may not do this: "
                                    "check its group and ACLs on the front-end") from e
        except pyone.OneException as e:  # action, API, internal; or an XML-RPC fault (pyone wraps it)
            fault = e.__context__
            if isinstance(fault, xmlrpc.client.Fault):
                raise self.failure(f"OpenNebula {method} fault {fault.faultCode}: {one_line(fault.faultString)}") from e
            raise self.failure(f"OpenNebula {method} failed: {one_line(e)}") from e
        except xmlrpc.client.ProtocolError as e:
            raise Unreachable(f"OpenNebula {method}: HTTP {e.errcode} {e.errmsg} from {self.endpoint}",
                              hint=f"check that endpoint in the {self.settings_file} is oned's XML-RPC URL, "
                                   "usually ending in /RPC2") from e
        except (OSError, http.client.HTTPException) as e:  # requests' errors are OSErrors
            root = _root(e)
            hint = (f"check endpoint in the {self.settings_file} and that oned is running"
                    if not isinstance(root, ssl.SSLCertVerificationError) else
                    "add the CA of the front-end's certificate to the system's trusted CAs, or set REQUESTS_CA_BUNDLE")
            raise Unreachable(f"cannot reach OpenNebula at {self.endpoint} for {method}: {self._reason(root)}",
                              hint=hint) from e
        except (xmlrpc.client.ResponseError, ExpatError, SyntaxError, IndexError, GDSParseError) as e:
            raise self.failure(f"OpenNebula {method} returned a reply Rain cannot read: {one_line(e)}",
                               hint=f"check that endpoint in the {self.settings_file} is oned's XML-RPC URL") from e

    def _reason(self, error: BaseException) -> str:
        """What went wrong on the wire, in a few words: 'Connection refused'."""
        if isinstance(error, TimeoutError):  # under requests' ReadTimeout and ConnectTimeout
            return f"no answer within {self.timeout:g}s"
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {error.verify_message}"
        if isinstance(error, http.client.RemoteDisconnected):
            return "the connection closed before a reply"
        if isinstance(error, http.client.IncompleteRead):
            return "the connection closed in the middle of the reply"
        return error.strerror if isinstance(error, OSError) and error.strerror else one_line(error)


def _root(error: BaseException) -> BaseException:
    """The error under requests' and urllib3's wrappers: ConnectionRefusedError, TimeoutError, ..."""
    seen = {id(error)}
    while not isinstance(error, TimeoutError):
        inner = (error.__cause__ or next((a for a in error.args if isinstance(a, BaseException)), None)
                 or getattr(error, "reason", None))
        if not isinstance(inner, BaseException) or id(inner) in seen:
            break
        error = inner
        seen.add(id(error))
    return error


@functools.cache
def _timed_transport() -> Callable[[str, float], xmlrpc.client.Transport]:
    """pyone's requests transport with a timeout on each request (pyone's own `timeout=` is process-wide)
    and the system's CAs for https."""
    import requests
    from pyone.server_xrpc import RequestsTransport

    class TimedTransport(RequestsTransport):
        def __init__(self, endpoint: str, timeout: float) -> None:
            super().__init__()
            self.set_https(endpoint.startswith("https"))
            self.set_https_verify(system_cas())
            self.timeout = timeout

        def request(self, host: str, handler: str, request_body: bytes, verbose: bool = False) -> object:
            url = self._build_url(host, handler)
            resp = requests.post(url, data=request_body, headers=self.headers, verify=self.https_verify,
                                 timeout=self.timeout)
            if resp.status_code >= 400:
                raise xmlrpc.client.ProtocolError(url, resp.status_code, resp.reason, dict(resp.headers))
            return self.parse_response(resp)

    return TimedTransport


def wait_running(one: OneClient, vm_id: int, deadline: Deadline, interval: float, timeout_hint: str) -> str:
    """The RUNNING VM's first NIC address; a VM that fails (or is stopped) is one.failure at once."""
    def running() -> str | Pending:
        vm = one("one.vm.info", vm_id, False)
        state, lcm = int(vm.STATE or 0), int(vm.LCM_STATE or 0)
        name = STATES.get(state, str(state)) if state != ACTIVE else LCM_STATES.get(lcm, f"LCM_STATE {lcm}")
        if state in FAILED_STATES or name.endswith("_FAILURE"):
            why = (vm.USER_TEMPLATE or {}).get("ERROR") or (vm.TEMPLATE or {}).get("ERROR") or "no reason given"
            raise one.failure(f"OpenNebula VM {vm_id} went to {name}: {one_line(why)}",
                              hint=f"check the image it boots and 'onevm show {vm_id}' on the front-end")
        if state != ACTIVE or lcm != RUNNING:
            return Pending(name)
        nics = [dict(v) for k, v in template_from_pyone(vm.TEMPLATE) if k == "NIC" and not isinstance(v, str)]
        ips = [ip for nic in nics if (ip := nic.get("IP") or nic.get("IP6"))]
        if not ips:
            raise one.failure(f"OpenNebula VM {vm_id} is RUNNING without a NIC IP",
                              hint="give it a NIC on a network this host can reach")
        return ips[0]

    return wait_for(running, deadline, interval, lambda state: one.failure(
        f"OpenNebula VM {vm_id} still {state} after {deadline.seconds:.0f}s",
        hint=f"the cloud may lack capacity; {timeout_hint}"))


def terminate(one: OneClient, vm_id: int) -> None:
    """End the VM at once (terminate-hard); one already DONE or gone counts as ended."""
    try:
        one("one.vm.action", "terminate-hard", vm_id, missing_ok=True)
    except one.failure:  # e.g. already DONE: the wrong state for the action
        vm = one("one.vm.info", vm_id, False, missing_ok=True)
        if vm is not None and int(vm.STATE or 0) != DONE:
            raise
