"""Boot-test metadata as the guest reads it: seed ISOs read back with xorriso, the IMDS over real HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from rain.errors import InvalidInput
from rain.host.ssh import KeyPair
from rain.register import imds, seeds

KEY = KeyPair.generate("rain-test").public_line


def extract(iso: Path, dest: Path) -> Path:
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
                   check=True, capture_output=True)
    return dest


def label(iso: Path) -> str:
    return subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(iso)], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_nocloud_seed_carries_key_and_hostname(tmp_path: Path) -> None:
    iso = seeds.nocloud(tmp_path / "seed.iso", instance_id="i-rain-1", host="cloudy", key=KEY)
    tree = extract(iso, tmp_path / "x")
    assert label(iso) == "cidata"
    assert json.loads((tree / "meta-data").read_text()) == {"instance-id": "i-rain-1", "local-hostname": "cloudy"}
    user_data = (tree / "user-data").read_text()
    assert user_data.startswith("#cloud-config\n")
    assert json.loads(user_data.split("\n", 1)[1]) == {"ssh_authorized_keys": [KEY]}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rain-seed")] == []


def test_config_drive_is_what_nova_writes(tmp_path: Path) -> None:
    iso = seeds.config_drive(tmp_path / "cd.iso", uuid="0f8e4c2a-1111-4222-8333-444455556666", name="vm1",
                             host="vm1", key=KEY, user_data="#cloud-config\n{}\n", net=seeds.GuestNet())
    tree = extract(iso, tmp_path / "x")
    assert label(iso) == "config-2"
    meta = json.loads((tree / "openstack/latest/meta_data.json").read_text())
    assert meta["uuid"] == "0f8e4c2a-1111-4222-8333-444455556666"
    assert (meta["name"], meta["hostname"], meta["public_keys"]) == ("vm1", "vm1", {"rain": KEY})
    assert (tree / "openstack/latest/user_data").read_text() == "#cloud-config\n{}\n"
    network = json.loads((tree / "openstack/latest/network_data.json").read_text())
    assert network["links"][0]["ethernet_mac_address"] == seeds.GUEST_MAC
    assert network["networks"][0]["type"] == "ipv4_dhcp"


def test_opennebula_context_survives_bash_with_hostile_comment(tmp_path: Path) -> None:
    """cloud-init runs context.sh with bash: a quote or $(...) in the key comment stays data."""
    marker = tmp_path / "pwned"
    key = KEY.rsplit(" ", 1)[0] + f" it's $(touch {marker}) `touch {marker}` \\'"
    iso = seeds.opennebula(tmp_path / "ctx.iso", host="one-vm", key=key, user="root")
    tree = extract(iso, tmp_path / "x")
    assert label(iso) == "CONTEXT"
    script = 'set -a; . "$1"; printf "%s\\n" "$SSH_PUBLIC_KEY" "$ETH0_IP" "$ETH0_MASK" "$ETH0_GATEWAY" ' \
             '"$ETH0_DNS" "$SET_HOSTNAME" "$USERNAME" "$ETH0_MAC"'
    out = subprocess.run(["bash", "-c", script, "_", str(tree / "context.sh")], check=True, capture_output=True,
                         text=True).stdout.splitlines()
    assert out == [key, "10.0.2.15", "255.255.255.0", "10.0.2.2", "10.0.2.3", "one-vm", "root", seeds.GUEST_MAC]
    assert not marker.exists()


@pytest.mark.parametrize("key, what", [
    ("ssh-ed25519 AAAA", "blob"),
    ("ssh-rsa " + KEY.split()[1], "blob is not a ssh-rsa"),
    (KEY + "\nssh-ed25519 AAAA x", "not an OpenSSH public key line"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "not an OpenSSH public key line"),
    (KEY + "\x1b[2J", "not an OpenSSH public key line"),
])
def test_bad_keys_are_refused_and_nothing_is_written(tmp_path: Path, key: str, what: str) -> None:
    with pytest.raises(InvalidInput) as err:
        seeds.nocloud(tmp_path / "seed.iso", instance_id="i-1", host="h", key=key)
    assert err.value.hint and "public key" in err.value.hint
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("host", ["-bad", "a_b", "x" * 64, "UPPER", "a..b", "a b", "h\nSSH_PUBLIC_KEY=x"])
def test_bad_hostnames_are_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(InvalidInput, match="host name"):
        seeds.opennebula(tmp_path / "ctx.iso", host=host, key=KEY)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def service() -> imds.Imds:  # type: ignore[misc]
    with imds.serve(imds.Instance(key=KEY, user_data="#cloud-config\n{}\n")) as running:
        yield running


def token(base: str) -> str:
    reply = requests.put(f"{base}/latest/api/token", headers={imds.TOKEN_TTL_HEADER: "21600"}, timeout=10)
    assert reply.status_code == 200
    return reply.text


def crawl(base: str, path: str, headers: dict[str, str]) -> dict[str, object]:
    """What cloud-init's MetadataMaterializer does: list a directory, recurse on name/, fetch leaves."""
    listing = requests.get(f"{base}/{path}", headers=headers, timeout=10)
    assert listing.status_code == 200, path
    out: dict[str, object] = {}
    for entry in listing.text.splitlines():
        if entry.endswith("/"):
            out[entry[:-1]] = crawl(base, f"{path}{entry}", headers)
        else:
            name, _, keyname = entry.partition("=")
            resource = f"{name}/openssh-key" if keyname else name
            leaf = requests.get(f"{base}/{path}{resource}", headers=headers, timeout=10)
            assert leaf.status_code == 200, f"{path}{resource}"
            out[keyname or name] = leaf.text
    return out


def test_imds_answers_only_with_a_token_and_records_it_first(service: imds.Imds) -> None:
    base = f"http://127.0.0.1:{service.port}"
    assert requests.get(f"{base}/latest/meta-data/instance-id", timeout=10).status_code == 401
    bad = {imds.TOKEN_HEADER: "forged"}
    assert requests.get(f"{base}/latest/meta-data/instance-id", headers=bad, timeout=10).status_code == 401
    assert requests.put(f"{base}/latest/api/token", timeout=10).status_code == 400  # no TTL header
    headers = {imds.TOKEN_HEADER: token(base)}
    assert requests.get(f"{base}/2021-03-23/meta-data/instance-id", headers=headers, timeout=10).text \
        == "i-0123456789abcdef0"
    assert requests.get(f"{base}/latest/user-data", headers=headers, timeout=10).text == "#cloud-config\n{}\n"
    assert requests.get(f"{base}/latest/meta-data/nonesuch", headers=headers, timeout=10).status_code == 404
    served = [(r.method, r.status) for r in service.requests]
    assert served[:3] == [("GET", 401), ("GET", 401), ("PUT", 400)]
    assert served[3] == ("PUT", 200)
    assert all(status != 401 for _, status in served[4:])


def test_imds_tree_is_what_cloud_init_crawls(service: imds.Imds) -> None:
    base = f"http://127.0.0.1:{service.port}"
    headers = {imds.TOKEN_HEADER: token(base)}
    meta = crawl(base, "2021-03-23/meta-data/", headers)
    assert meta["public-keys"] == {"rain": KEY}
    assert meta["instance-id"] == "i-0123456789abcdef0"
    assert meta["placement"] == {"availability-zone": "us-east-1a", "region": "us-east-1"}
    iface = meta["network"]["interfaces"]["macs"][seeds.GUEST_MAC]  # type: ignore[index]
    assert iface["local-ipv4s"] == "169.254.2.15" and iface["device-number"] == "0"
    identity = crawl(base, "2021-03-23/dynamic/instance-identity/", headers)
    assert json.loads(str(identity["document"]))["instanceId"] == "i-0123456789abcdef0"


def test_imds_serves_many_requests_down_one_stream_as_guestfwd_sends_them(service: imds.Imds) -> None:
    """QEMU's guestfwd connects once and forwards every guest connection down that stream: the server
    must answer them all, even those that say `Connection: close`."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as stream:
        put = (f"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n{imds.TOKEN_TTL_HEADER}: 60\r\n"
               "Connection: close\r\nContent-Length: 0\r\n\r\n")
        reader = stream.makefile("rb")
        stream.sendall(put.encode())
        headers = read_response(reader)
        token = reader.read(int(headers["content-length"])).decode()
        for path in ("/latest/meta-data/instance-id", "/latest/meta-data/public-keys/0/openssh-key"):
            stream.sendall(f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{imds.TOKEN_HEADER}: {token}\r\n"
                           "Connection: close\r\n\r\n".encode())
            headers = read_response(reader)
            body = reader.read(int(headers["content-length"])).decode()
            assert body == {"/latest/meta-data/instance-id": "i-0123456789abcdef0"}.get(path, KEY)
    assert [r.status for r in service.requests] == [200, 200, 200]


def read_response(reader) -> dict[str, str]:  # type: ignore[no-untyped-def]
    status = reader.readline().decode()
    assert status.startswith("HTTP/1.1 200"), status
    headers = {}
    while (line := reader.readline().decode().strip()):
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return headers
