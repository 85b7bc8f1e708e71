"""Netbooting the hpc site's local QEMU nodes: the HTTP server, each node's iPXE script and its seed.

A node has no disk. Its NIC's iPXE ROM asks QEMU's DHCP for a boot file and fetches the node's own
`boot.ipxe` by TFTP; that script sets `rain-args` (the node's seed, `net.ifnames=0`) and chains the
image's published boot.ipxe over HTTP from the site's http_url, which loads the published kernel and
initrd; Rain's initrd fetches the published rootfs.squashfs, lays a tmpfs over it and unpacks the seed
into it: the node's host key (pinned), root's authorized key (the launch's), its name, every node's
name in /etc/hosts and its address on the launch's private network.

Rain serves the site's provision_dir at http_url's path, on 127.0.0.1 and http_url's port (a guest
reaches it as 10.0.2.2), and the seeds under a random path of their own, removed once the nodes answer
(a seed holds a private host key: nothing but this host's loopback ever sees it, and only while the
nodes boot). Nothing else is served: no listings, no path outside those two directories, no link that
leads out of them. The port is the site's: one launch per hpc site at a time.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import secrets
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from rain.errors import InvalidInput, TargetError, one_line
from rain.host.ssh import KeyPair

GUEST_HOST = "10.0.2.2"
"""This host as QEMU's user network shows it to a guest."""


@dataclass(frozen=True)
class Netboot:
    provision_dir: Path
    http_url: str
    slug: str = ""
    """The image's registration on the site: its directory under provision_dir."""

    def check(self, site_name: str) -> None:
        """http_url is one Rain can serve to local nodes, on a port free now (one launch per site at a time)."""
        hint = f"with nodes: qemu, set http_url to http://{GUEST_HOST}:PORT/PATH (PORT: a free port of this host)"
        url = urlsplit(self.http_url)
        try:
            port = url.port
        except ValueError:
            port = None
        if url.scheme != "http" or url.hostname != GUEST_HOST or not port:
            raise InvalidInput(f"hpc site {site_name!r}: http_url {self.http_url[:80]!r} is not served by Rain to "
                               "local nodes", hint=hint)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as e:
                raise TargetError(f"hpc site {site_name!r}: port {port} of http_url is taken ({one_line(e)})",
                                  hint="another launch on this site may be running (one at a time), or " + hint) from e

    def check_published(self, site_name: str) -> None:
        """The registration's boot.ipxe takes a launch's arguments (one published before Rain could does not)."""
        try:
            script = (self.provision_dir / self.slug / "boot.ipxe").read_text(errors="replace")
        except OSError as e:
            raise TargetError(f"hpc site {site_name!r} has no boot.ipxe for {self.slug} ({one_line(e)})",
                              hint="deregister the image from the site and launch again: it registers anew") from e
        if "${rain-args}" not in script:
            raise InvalidInput(f"{self.slug} on hpc site {site_name!r} was published before launches could "
                               "netboot it", hint="deregister it (fg-image deregister ID --target hpc) and launch "
                                                  "again: it registers anew")

    @property
    def port(self) -> int:
        return int(urlsplit(self.http_url).port or 0)

    @property
    def prefix(self) -> str:
        return urlsplit(self.http_url).path.rstrip("/") + "/"

    @contextlib.contextmanager
    def serve(self, seeds: Path) -> Iterator[str]:
        """Serve provision_dir and `seeds`; yields the seeds' URL (ending in /)."""
        token = f"/.rain-seed-{secrets.token_hex(16)}/"
        roots = [(token, seeds), (self.prefix, self.provision_dir)]
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), functools.partial(_Handler, roots))
        except OSError as e:
            raise TargetError(f"cannot serve the hpc site's files on 127.0.0.1:{self.port}: {one_line(e)}",
                              hint="choose a free port in the site's http_url") from e
        thread = threading.Thread(target=server.serve_forever, name="rain-netboot-http", daemon=True)
        thread.start()
        try:
            yield f"http://{GUEST_HOST}:{self.port}{token}"
        finally:
            server.shutdown()
            server.server_close()

    def script(self, seed_url: str) -> str:
        """A node's TFTP boot file: its seed as kernel arguments, then the image's published boot.ipxe."""
        return (f"#!ipxe\nset rain-args rain.seed={seed_url} net.ifnames=0\n"
                f"chain {self.http_url.rstrip('/')}/{self.slug}/boot.ipxe\n")


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, roots: list[tuple[str, Path]], *args: object, **kwargs: object) -> None:
        self.roots = roots
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def translate_path(self, path: str) -> str:
        clean = unquote(urlsplit(path).path)
        for prefix, directory in self.roots:
            if clean.startswith(prefix):
                self.directory = str(directory)
                found = Path(super().translate_path("/" + clean[len(prefix):])).resolve()
                if found.is_relative_to(directory.resolve()):  # no link out of the served directory
                    return str(found)
        return "/nonexistent/"

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404)
        return None

    def log_message(self, format: str, *args: object) -> None:
        pass


def seed(host_key: KeyPair, key: KeyPair, name: str, hosts: str, address: str) -> bytes:
    """The tar the initrd unpacks over the node's root (all root's, 0600 where secret)."""
    files = [
        ("etc/ssh/ssh_host_ed25519_key", host_key.private_openssh.encode(), 0o600),
        ("etc/ssh/ssh_host_ed25519_key.pub", host_key.public_line.encode() + b"\n", 0o644),
        ("root/.ssh/authorized_keys", key.public_line.encode() + b"\n", 0o600),
        ("etc/hostname", f"{name}\n".encode(), 0o644),
        ("etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {name}\n{hosts}".encode(), 0o644),
        ("etc/network/interfaces.d/rain-launch",
         f"# the launch's private network\nauto eth1\niface eth1 inet static\n    address {address}/24\n".encode(),
         0o644),
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for directory, mode in (("root", 0o700), ("root/.ssh", 0o700)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, int(time.time())
            tar.addfile(info)
        for path, data, mode in files:
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
