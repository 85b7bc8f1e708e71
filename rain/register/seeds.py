"""Metadata seeds as each cloud hands them to a VM: ISO 9660 images made with xorriso.

A boot test must give the image its SSH key the way the target cloud would,
so that what passes here also logs in there:

- OpenStack config drive: volume label `config-2`, openstack/latest/meta_data.json
  (cloud-init's ConfigDrive datasource; ds-identify looks for the label).
- NoCloud: volume label `cidata`, meta-data + user-data (#cloud-config).
- OpenNebula context CD: volume label `CONTEXT`, context.sh, which cloud-init's
  OpenNebula datasource *runs with bash*: every value is single-quoted the way
  OpenNebula writes it, an embedded ' as '\\''.

Every value that lands in a seed is validated first (one OpenSSH public key
line, RFC 1123 host names, IPv4 addresses), so nothing a user typed can add a
line, a variable or a command to what the guest reads.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rain.errors import BuildError, InvalidInput
from rain.host.ssh import SSH_KEY_RE
from rain.host.tools import run

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
GUEST_MAC = "02:00:0a:00:02:0f"
"""The boot-test NIC's MAC: OpenNebula's convention (02:00 + the IPv4 address) for 10.0.2.15, QEMU
user networking's guest address, so every datasource that matches NICs by MAC finds this one."""


@dataclass(frozen=True)
class GuestNet:
    """The guest's IPv4 settings under QEMU user networking (its built-in DHCP gives the same)."""

    ip: str = "10.0.2.15"
    mask: str = "255.255.255.0"
    gateway: str = "10.0.2.2"
    dns: str = "10.0.2.3"
    mac: str = GUEST_MAC


def public_key(line: str) -> str:
    """`line` if it is one OpenSSH public key line (type, base64 blob of that type, optional comment)."""
    hint = "give one OpenSSH public key line, e.g. the contents of ~/.ssh/id_ed25519.pub"
    text = line.strip()
    if not SSH_KEY_RE.match(text) or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidInput(f"not an OpenSSH public key line: {text[:40]!r}", hint=hint)
    kind, blob = text.split(" ")[:2]
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise InvalidInput(f"the {kind} public key's base64 part does not decode", hint=hint) from None
    if raw[4:4 + len(kind)] != kind.encode() or int.from_bytes(raw[:4], "big") != len(kind):
        raise InvalidInput(f"the public key's blob is not a {kind} key", hint=hint)
    return text


def hostname(name: str) -> str:
    """`name` if it is an RFC 1123 host name (lower case labels of letters, digits, inner hyphens)."""
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise InvalidInput(f"not a valid host name: {name[:64]!r}",
                           hint="use lower-case letters, digits and inner hyphens, labels of 1-63 characters")
    return name


def username(name: str) -> str:
    if not _USER_RE.match(name):
        raise InvalidInput(f"not a valid user name: {name[:40]!r}",
                           hint="use a lower-case letter or _ then up to 31 letters, digits, _ or -")
    return name


def _ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise InvalidInput(f"{what} is not an IPv4 address: {value[:40]!r}", hint="e.g. 10.0.2.15") from None


def _mac(value: str) -> str:
    if not _MAC_RE.match(value):
        raise InvalidInput(f"not a MAC address: {value[:40]!r}",
                           hint="six lower-case hex pairs, e.g. 02:00:0a:00:02:0f")
    return value


def nocloud(dest: Path, *, instance_id: str, host: str, key: str, user_data: str | None = None,
            network_config: dict[str, Any] | None = None) -> Path:
    """A NoCloud seed (label cidata): the key goes to the default user through #cloud-config.

    `user_data`, if given, replaces the generated #cloud-config (it must carry the key itself);
    `network_config`, cloud-init's network config (version 2), replaces its DHCP on the first NIC."""
    meta = {"instance-id": hostname(instance_id), "local-hostname": hostname(host)}
    config = user_data if user_data is not None else _cloud_config(key)
    files = {"meta-data": json.dumps(meta) + "\n", "user-data": config}
    if network_config is not None:
        files["network-config"] = json.dumps(network_config) + "\n"  # JSON is YAML
    return _iso(dest, "cidata", files)


def config_drive(dest: Path, *, uuid: str, name: str, host: str, key: str, user_data: str | None = None,
                 net: GuestNet | None = None) -> Path:
    """An OpenStack config drive (label config-2), as Nova writes it with a keypair named `rain`.

    With `net`, network_data.json describes one DHCP link with that MAC, as Neutron's would."""
    meta = {"uuid": hostname(uuid), "name": hostname(name), "hostname": hostname(host),
            "public_keys": {"rain": public_key(key)}, "launch_index": 0, "availability_zone": "nova",
            "files": [], "meta": {}}
    files = {"openstack/latest/meta_data.json": json.dumps(meta, indent=1) + "\n"}
    if user_data is not None:
        files["openstack/latest/user_data"] = user_data
    if net is not None:
        link = {"id": "tap0", "type": "phy", "ethernet_mac_address": _mac(net.mac), "mtu": 1500}
        network = {"id": "network0", "type": "ipv4_dhcp", "link": "tap0", "network_id": "rain"}
        files["openstack/latest/network_data.json"] = json.dumps(
            {"links": [link], "networks": [network], "services": [{"type": "dns", "address": _ipv4(net.dns, "DNS")}]})
    return _iso(dest, "config-2", files)


def opennebula(dest: Path, *, host: str, key: str, user: str = "root", net: GuestNet | None = None) -> Path:
    """An OpenNebula context CD (label CONTEXT) with context.sh as OpenNebula writes it."""
    net = net or GuestNet()
    context = {
        "DISK_ID": "1",
        "ETH0_MAC": _mac(net.mac),
        "ETH0_IP": _ipv4(net.ip, "ETH0_IP"),
        "ETH0_MASK": _ipv4(net.mask, "ETH0_MASK"),
        "ETH0_GATEWAY": _ipv4(net.gateway, "ETH0_GATEWAY"),
        "ETH0_DNS": _ipv4(net.dns, "ETH0_DNS"),
        "NETWORK": "YES",
        "SET_HOSTNAME": hostname(host),
        "SSH_PUBLIC_KEY": public_key(key),
        "TARGET": "hda",
        "USERNAME": username(user),
    }
    lines = ["# Context variables generated by OpenNebula"]
    lines += [f"{name}={shell_quote(value)}" for name, value in context.items()]
    return _iso(dest, "CONTEXT", {"context.sh": "\n".join(lines) + "\n"})


def shell_quote(value: str) -> str:
    """OpenNebula's quoting for context.sh: single quotes, an embedded ' written as '\\''."""
    return "'" + value.replace("'", "'\\''") + "'"


def _cloud_config(key: str) -> str:
    """#cloud-config giving the default user `key` (JSON is YAML: no quoting of our own)."""
    return "#cloud-config\n" + json.dumps({"ssh_authorized_keys": [public_key(key)]}) + "\n"


def _iso(dest: Path, label: str, files: dict[str, str]) -> Path:
    """Write an ISO 9660 image with Rock Ridge and Joliet names (cloud-init needs the exact file names).

    Built beside `dest` and renamed into place, so a failure leaves neither a partial ISO nor the staging tree."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rain-seed-", dir=dest.parent) as tmp:
        tree = Path(tmp) / "tree"
        for rel, text in files.items():
            path = tree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        out = Path(tmp) / "seed.iso"
        run(["xorriso", "-as", "mkisofs", "-quiet", "-output", str(out), "-volid", label, "-joliet", "-rock",
             str(tree)], f"writing the {label} seed", error=BuildError)
        os.replace(out, dest)
    return dest
