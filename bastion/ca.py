"""The user certificate authority that signs short-lived upstream certificates.

Each upstream connection gets a fresh key pair and a certificate that names only
the target's own principal, lives at most a couple of minutes (never past the
grant's end), is bound to the bastion's source address, and carries only the
extensions the session needs. A stolen certificate is useless on another host,
from another address, or a few minutes later.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from bastion.errors import ConfigError

CA_KEY_ALGORITHM = "ssh-ed25519"


@dataclass(frozen=True)
class IssuedCertificate:
    """A fresh key pair with its certificate, ready for ``client_keys``."""

    private_key: asyncssh.SSHKey
    certificate: asyncssh.SSHCertificate
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int

    def openssh_files(self) -> tuple[bytes, bytes]:
        """(private key, certificate) in OpenSSH file formats, e.g. for ``ssh -i``."""
        return (
            self.private_key.export_private_key("openssh"),
            self.certificate.export_certificate("openssh"),
        )


class CertificateAuthority:
    """Signs user certificates with the CA key; its public key is what targets trust."""

    def __init__(self, key: asyncssh.SSHKey) -> None:
        self._key = key

    @classmethod
    def generate(cls, path: Path, comment: str = "bastion user CA") -> CertificateAuthority:
        """Create the CA key pair at ``path`` (+ ``.pub``), private file mode 0600."""
        key = asyncssh.generate_private_key(CA_KEY_ALGORITHM, comment=comment)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key("openssh"))
        path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> CertificateAuthority:
        """Load the CA private key (raises ConfigError naming the file)."""
        try:
            return cls(asyncssh.read_private_key(str(path)))
        except FileNotFoundError as e:
            raise ConfigError(f"CA key {path} is missing; run 'bastion init'") from e
        except (asyncssh.KeyImportError, ValueError) as e:
            raise ConfigError(f"CA key {path} cannot be read: {e}") from e

    def public_key_line(self) -> str:
        """The line targets put in their TrustedUserCAKeys file."""
        return self._key.export_public_key("openssh").decode().strip()

    def issue(
        self,
        *,
        principal: str,
        key_id: str,
        now: float,
        lifetime: float,
        backdate: float,
        not_after: float,
        source_addresses: tuple[str, ...],
        permit_pty: bool,
        permit_port_forwarding: bool = False,
        permit_agent_forwarding: bool = False,
    ) -> IssuedCertificate:
        """A fresh Ed25519 key and a certificate valid for ``principal`` only.

        Validity is [now - backdate, min(now - backdate + lifetime, not_after)]: at most
        ``lifetime`` seconds in all and never past the grant's end. X11 forwarding and
        user rc are never permitted.

        Raises ValueError if the window is already empty (the grant has ended).
        """
        valid_after = int(now - backdate)
        valid_before = int(min(valid_after + lifetime, not_after))
        if valid_before <= now:
            raise ValueError("the grant ends before a certificate could be used")
        user_key = asyncssh.generate_private_key("ssh-ed25519")
        serial = secrets.randbits(63)
        cert = self._key.generate_user_certificate(
            user_key,
            key_id,
            serial=serial,
            principals=[principal],
            valid_after=valid_after,
            valid_before=valid_before,
            source_address=list(source_addresses) or None,
            permit_x11_forwarding=False,
            permit_agent_forwarding=permit_agent_forwarding,
            permit_port_forwarding=permit_port_forwarding,
            permit_pty=permit_pty,
            permit_user_rc=False,
        )
        return IssuedCertificate(
            private_key=user_key,
            certificate=cert,
            serial=serial,
            key_id=key_id,
            principals=(principal,),
            valid_after=valid_after,
            valid_before=valid_before,
        )
