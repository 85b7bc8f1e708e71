"""Rain talks to OpenNebula through pyone, OpenNebula's own bindings, against the OpenNebula SIMULATOR
(oned cannot run here): oned's error codes arrive as pyone's exceptions and leave as Rain's kinds and
exit codes, each one line; replies are pyone's typed objects; a connection that drops part-way
(support/simulators/tcp_cut.py, a relay that closes) or never answers is Unreachable.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pyone
import pytest
from support.builders import ONE_PASSWORD_ENV, BuildersFile
from support.simulators.opennebula import OpenNebulaSimulator
from support.simulators.tcp_cut import CuttingRelay

from rain.clouds.opennebula import OneClient, render_template
from rain.errors import BuildError, ExitCode, RainError, TargetError, Unauthorized, Unreachable

pytestmark = pytest.mark.integration


def client(endpoint: str, password: str = "one-secret", failure: type[RainError] = TargetError,
           timeout: float = 60) -> OneClient:
    return OneClient(endpoint, "rain", password, failure=failure, settings_file="targets file", timeout=timeout)


@pytest.mark.parametrize("code, call, pyone_error, kind, exit_code, words", [
    ("AUTHENTICATION 0x0100", ("one.image.info", 0, False), pyone.OneAuthenticationException, Unauthorized,
     ExitCode.UNAUTHORIZED, ("refused one.image.info", "couldn't be authenticated", "password_env")),
    ("AUTHORIZATION 0x0200", ("one.image.allocate", render_template([("NAME", "x"), ("PATH", "/x")]), 1),
     pyone.OneAuthorizationException, Unauthorized, ExitCode.UNAUTHORIZED,
     ("refused one.image.allocate", "Not authorized to perform CREATE IMAGE", "ACLs")),
    ("NO_EXISTS 0x0400", ("one.image.info", 99, False), pyone.OneNoExistsException, TargetError,
     ExitCode.TARGET, ("one.image.info failed", "Error getting image [99]")),
    ("ACTION 0x0800", ("one.image.allocate", render_template([("NAME", "no-path")]), 1), pyone.OneActionException,
     TargetError, ExitCode.TARGET, ("one.image.allocate failed", "No NAME or PATH")),
])
def test_each_oned_error_code_becomes_its_rain_kind_and_exit_code_through_pyone(
        opennebula_sim: Any, code: str, call: tuple[Any, ...], pyone_error: type[Exception],
        kind: type[RainError], exit_code: ExitCode, words: tuple[str, ...]) -> None:
    password = "wrong" if code.startswith("AUTHENTICATION") else "one-secret"
    if code.startswith("AUTHORIZATION"):
        opennebula_sim.not_authorized.add("rain")
    with pytest.raises(kind) as err:
        client(opennebula_sim.endpoint, password)(*call)
    assert type(err.value.__cause__) is pyone_error, "raised by pyone from oned's error code"
    assert err.value.exit_code == exit_code
    text = err.value.one_line()
    assert "\n" not in text and all(w in text for w in words), text


def test_the_failure_kind_is_the_callers_and_missing_ok_forgives_only_no_exists(opennebula_sim: Any) -> None:
    one = client(opennebula_sim.endpoint, failure=BuildError)
    with pytest.raises(BuildError) as err:
        one("one.vm.info", 4242, False)
    assert err.value.exit_code == ExitCode.BUILD
    assert one("one.vm.action", "terminate-hard", 4242, missing_ok=True) is None
    with pytest.raises(Unauthorized):
        client(opennebula_sim.endpoint, "wrong", BuildError)("one.vm.action", "terminate-hard", 4242, missing_ok=True)


def test_an_xml_rpc_fault_is_the_callers_kind_with_its_code(opennebula_sim: Any) -> None:
    with pytest.raises(TargetError) as err:
        client(opennebula_sim.endpoint)("one.image.chmod", 0, 1, 1, 0)
    assert err.value.one_line() == "OpenNebula one.image.chmod fault -506: Method 'one.image.chmod' not defined"


def test_replies_are_pyones_typed_objects(opennebula_sim: Any, tmp_path: Any) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"\0" * 4096)
    one = client(opennebula_sim.endpoint)
    image_id = one("one.image.allocate", render_template([("NAME", 'a "quoted" name'), ("PATH", str(disk))]), 1)
    assert isinstance(image_id, int)
    deadline = time.monotonic() + 10
    while (image := one("one.image.info", image_id, False)).STATE != pyone.IMAGE_STATES.READY:
        assert time.monotonic() < deadline, image.STATE
        time.sleep(0.05)
    assert (image.ID, image.UNAME, image.NAME) == (image_id, "rain", 'a "quoted" name')
    assert image.TEMPLATE["PATH"] == str(disk), "TEMPLATE as a dict, values unescaped by oned"
    assert one("one.image.delete", image_id) == image_id


@pytest.mark.parametrize("where", ["before a reply", "in the middle of the reply"])
def test_a_dropped_connection_is_unreachable_in_one_line(opennebula_sim: Any, where: str) -> None:
    relay = None
    if where == "before a reply":  # a relay that closes as soon as oned starts answering
        relay = CuttingRelay("127.0.0.1", opennebula_sim.server.server_address[1], 0)
        endpoint = f"http://127.0.0.1:{relay.port}/RPC2"
    else:  # the headers arrive, then 40 bytes of the body, then the connection closes
        opennebula_sim.drop_reply_after = 40
        endpoint = opennebula_sim.endpoint
    with pytest.raises(Unreachable) as err:
        client(endpoint)("one.image.info", 5, False, missing_ok=True)
    if relay:
        relay.stop()
    assert err.value.exit_code == ExitCode.UNREACHABLE
    assert err.value.one_line() == (f"cannot reach OpenNebula at {endpoint} for one.image.info: the connection "
                                    f"closed {where} (check endpoint in the targets file and that oned is running)")


def test_no_answer_is_unreachable_after_the_timeout_and_no_socket_default_changes(opennebula_sim: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the kernel does), never answers
        started = time.monotonic()
        with pytest.raises(Unreachable) as err:
            client(f"http://127.0.0.1:{silent.getsockname()[1]}/RPC2", timeout=0.5)("one.vm.info", 1, False)
    assert time.monotonic() - started < 5
    assert "no answer within 0.5s" in err.value.message
    assert socket.getdefaulttimeout() is None, "pyone's timeout= would set it for the whole process"


def test_https_trusts_the_systems_cas_not_the_bundle_requests_ships(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    sim = OpenNebulaSimulator(users={"rain": "one-secret"})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sim.server.socket = context.wrap_socket(sim.server.socket, server_side=True)
    sim.start()
    endpoint = sim.endpoint.replace("http://", "https://")
    try:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system's CAs, as OpenSSL finds them
        assert client(endpoint)("one.image.delete", 7, missing_ok=True) is None
        monkeypatch.delenv("SSL_CERT_FILE")  # OpenSSL's default CAs: not this certificate
        with pytest.raises(Unreachable) as err:
            client(endpoint)("one.image.delete", 7, missing_ok=True)
    finally:
        sim.stop()
    assert "certificate verify failed: self-signed certificate" in err.value.message
    assert "trusted CAs" in (err.value.hint or "")


def test_builder_check_exits_with_the_code_of_each_refusal_in_one_line(
        fg: Any, opennebula_builders_file: BuildersFile, opennebula_sim: Any) -> None:
    env = {"RAIN_BUILDERS_FILE": str(opennebula_builders_file.path), ONE_PASSWORD_ENV: "one-secret"}
    opennebula_sim.not_authorized.add("rain")
    r = fg("builder", "check", "opennebula", env=env)
    assert r.returncode == ExitCode.UNAUTHORIZED, r.stderr
    assert r.stderr.count("\n") == 1 and "Not authorized to perform CREATE VM" in r.stderr

    relay = CuttingRelay("127.0.0.1", opennebula_sim.server.server_address[1], 0)
    opennebula_builders_file.update(endpoint=f"http://127.0.0.1:{relay.port}/RPC2")
    r = fg("builder", "check", "opennebula", env=env)
    relay.stop()
    assert r.returncode == ExitCode.UNREACHABLE, r.stderr
    assert r.stderr.count("\n") == 1 and "cannot reach OpenNebula" in r.stderr and "builders file" in r.stderr
    assert not opennebula_sim.vms
