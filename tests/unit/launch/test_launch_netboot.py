"""The hpc site's netboot pieces: what Rain serves to the nodes (and nothing else), and each node's seed."""

from __future__ import annotations

import http.client
import io
import socket
import tarfile
from pathlib import Path

import pytest
import requests
from support.cli import free_port

from rain.errors import InvalidInput, TargetError
from rain.host.ssh import KeyPair
from rain.launch.netboot import Netboot, seed


def test_only_an_http_url_on_qemus_host_address_and_a_free_port_can_be_served_to_local_nodes(tmp_path: Path) -> None:
    for url in ("http://head.cluster:8080/rain", "https://10.0.2.2:8080/rain", "http://10.0.2.2/rain",
                "http://10.0.2.2:99999/rain", "http://10.0.2.2:x/rain"):
        with pytest.raises(InvalidInput, match="http_url"):
            Netboot(tmp_path, url).check("lab")
    port = free_port()
    Netboot(tmp_path, f"http://10.0.2.2:{port}/rain").check("lab")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(TargetError, match=f"port {port} of http_url is taken"):
            Netboot(tmp_path, f"http://10.0.2.2:{port}/rain").check("lab")


def test_a_registration_published_before_launches_could_netboot_it_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rain-old").mkdir()
    (tmp_path / "rain-old" / "boot.ipxe").write_text("#!ipxe\nkernel http://h/rain-old/vmlinuz rain.root=x\nboot\n")
    with pytest.raises(InvalidInput, match="published before launches could netboot it"):
        Netboot(tmp_path, "http://10.0.2.2:8080/rain", "rain-old").check_published("lab")
    with pytest.raises(TargetError, match="no boot.ipxe"):
        Netboot(tmp_path, "http://10.0.2.2:8080/rain", "rain-gone").check_published("lab")


def test_the_server_gives_the_published_files_and_the_seeds_and_nothing_else(tmp_path: Path) -> None:
    provision, seeds = tmp_path / "provision", tmp_path / "seeds"
    (provision / "rain-deb").mkdir(parents=True)
    (provision / "rain-deb" / "boot.ipxe").write_text("#!ipxe\n")
    seeds.mkdir()
    (seeds / "node1.tar").write_bytes(b"seed")
    (tmp_path / "secret").write_text("not served")
    (provision / "rain-deb" / "link").symlink_to(tmp_path / "secret")
    port = free_port()
    site = Netboot(provision, f"http://10.0.2.2:{port}/rain", "rain-deb")
    with site.serve(seeds) as seeds_url:
        assert seeds_url.startswith(f"http://10.0.2.2:{port}/.rain-seed-") and len(seeds_url.split("/")[3]) > 32
        local = f"http://127.0.0.1:{port}"
        path = seeds_url.split(str(port), 1)[1]

        def get(p: str) -> requests.Response:
            return requests.get(local + p, timeout=10)

        def raw(p: str) -> int:
            """The path as sent, not normalized by a client library."""
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.putrequest("GET", p, skip_accept_encoding=True)
                connection.endheaders()
                return connection.getresponse().status
            finally:
                connection.close()

        assert get("/rain/rain-deb/boot.ipxe").text == "#!ipxe\n"
        assert get(f"{path}node1.tar").content == b"seed"
        for refused in ("/rain/", "/rain/rain-deb/", "/secret", "/.rain-seed-0/node1.tar", "/",
                        "/rain/rain-deb/link"):
            assert get(refused).status_code == 404, refused
        for refused in ("/rain/../secret", "/rain/%2e%2e/secret", f"{path}../secret", f"{path}%2e%2e/secret",
                        "/rain/rain-deb/../../secret"):
            assert raw(refused) == 404, refused
    assert site.script(f"{seeds_url}node1.tar") == (
        f"#!ipxe\nset rain-args rain.seed={seeds_url}node1.tar net.ifnames=0\n"
        f"chain http://10.0.2.2:{port}/rain/rain-deb/boot.ipxe\n")


def test_a_seed_holds_the_node_s_host_key_root_s_key_and_names_private_where_secret() -> None:
    host, key = KeyPair.generate("host"), KeyPair.generate("client")
    with tarfile.open(fileobj=io.BytesIO(seed(host, key, "node1", "10.99.0.11 node1\n", "10.99.0.11"))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["etc/ssh/ssh_host_ed25519_key"].mode == 0o600
        assert members["root/.ssh/authorized_keys"].mode == 0o600
        assert members["root/.ssh"].mode == 0o700 and members["root/.ssh"].isdir()
        assert all(m.uid == 0 and m.gid == 0 and (m.isfile() or m.isdir()) for m in members.values())
        read = {name: tar.extractfile(m).read().decode() for name, m in members.items() if m.isfile()}  # type: ignore[union-attr]
    assert read["etc/ssh/ssh_host_ed25519_key"] == host.private_openssh
    assert read["root/.ssh/authorized_keys"].strip() == key.public_line
    assert "10.99.0.11 node1" in read["etc/hosts"] and read["etc/hostname"] == "node1\n"
    assert "address 10.99.0.11/24" in read["etc/network/interfaces.d/rain-launch"]
