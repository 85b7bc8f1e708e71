"""SSH keys Rain makes and checks: fresh Ed25519 pairs for each VM it reaches, and the public-key line pattern.

Every VM Rain logs into (a builder machine, a boot-test VM) gets two fresh pairs
(`MachineKeys`): the client key Rain logs in with and the VM's own host key, whose
public half is pinned. `SSH_KEY_RE` is what a recipe's user keys and a cloud seed's
keys must match.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # paramiko and cryptography load when keys are made or used, not when a recipe is read
    import paramiko

SSH_KEY_RE = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( [^\n\r]*)?$")


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str
    """OpenSSH-format private key (PEM-like text)."""
    public_line: str
    """'ssh-ed25519 AAAA... comment'."""

    @classmethod
    def generate(cls, comment: str) -> KeyPair:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        return cls(private, f"{public} {comment}")

    @property
    def public_blob(self) -> bytes:
        """The key's wire-format blob (what paramiko's PKey.asbytes() gives)."""
        return base64.b64decode(self.public_line.split()[1])


@dataclass(frozen=True)
class MachineKeys:
    client: KeyPair
    host: KeyPair

    @classmethod
    def generate(cls, name: str) -> MachineKeys:
        return cls(KeyPair.generate(f"rain-client@{name}"), KeyPair.generate(f"rain-host@{name}"))


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def client_pkey(pair: KeyPair) -> paramiko.PKey:
    """Rain's client key as paramiko takes it."""
    import paramiko

    return paramiko.Ed25519Key.from_private_key(io.StringIO(pair.private_openssh))
