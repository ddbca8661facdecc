"""What the contractor-facing SSH listener offers: key exchange, MACs, host keys, ciphers.

asyncssh's own defaults still offer SHA-1 (``diffie-hellman-group14-sha1``,
``hmac-sha1``, ``ssh-rsa`` signatures) and group exchange, whose server side hands
out the 1024-bit group to any client that asks for it and cannot be bounded; a
stock client may negotiate them. The defaults here leave all of that out, and
also the NIST-curve ECDH exchanges that ssh-audit fails. Post-quantum hybrids are
offered only when the installed asyncssh implements them (sntrup761 needs liboqs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs
from asyncssh.packet import PacketDecodeError, SSHPacket
from asyncssh.public_key import (
    SSHKeyPair,
    get_certificate_algs,
    get_default_public_key_algs,
    get_public_key_algs,
)

from bastion.errors import ConfigError
from bastion.ssh.algorithm_names import (
    ALGORITHM_KEYS,
    DEFAULT_CIPHERS,
    DEFAULT_HOST_KEY_ALGORITHMS,
    DEFAULT_MACS,
    PREFERRED_KEX_ALGORITHMS,
)

if TYPE_CHECKING:
    from bastion.config import SshConfig

__all__ = [
    "DEFAULT_CIPHERS",
    "DEFAULT_HOST_KEY_ALGORITHMS",
    "DEFAULT_KEX_ALGORITHMS",
    "DEFAULT_MACS",
    "USER_SIGNATURE_ALGORITHMS",
    "sha1_signature",
    "check_algorithms",
    "check_ssh_algorithms",
    "offered_host_keys",
    "supported",
]


def _names(get: Callable[[], Sequence[bytes]]) -> tuple[str, ...]:
    return tuple(a.decode("ascii") for a in get())


def supported(key: str) -> tuple[str, ...]:
    """The names the installed asyncssh implements for ``[ssh] KEY``."""
    if key == "kex_algorithms":
        return _names(get_kex_algs)
    if key == "macs":
        return _names(get_mac_algs)
    if key == "host_key_algorithms":
        return _names(get_public_key_algs) + _names(get_certificate_algs)
    if key == "ciphers":
        return _names(get_encryption_algs)
    raise KeyError(key)


DEFAULT_KEX_ALGORITHMS: tuple[str, ...] = tuple(
    a for a in PREFERRED_KEX_ALGORITHMS if a in supported("kex_algorithms")
)
"""The preferred list cut to what this asyncssh implements (no sntrup761 without liboqs)."""


def check_algorithms(key: str, names: Sequence[str]) -> tuple[str, ...]:
    """``names`` unchanged, or ConfigError naming the key, the unknown name and the choices."""
    if not names:
        raise ConfigError(f"ssh.{key} must not be empty; remove the key to get the defaults")
    choices = supported(key)
    for name in names:
        if name not in choices:
            raise ConfigError(
                f"ssh.{key}: {name!r} is not supported by this node's asyncssh; "
                f"choose from: {', '.join(choices)}"
            )
    return tuple(names)


def check_ssh_algorithms(ssh: SshConfig) -> None:
    """Every ``[ssh]`` algorithm list of ``ssh`` against this node's asyncssh (ConfigError).

    ``load_config`` checks only that each list is a non-empty list of strings, so that
    commands which never speak SSH do not import asyncssh; this is the rest, run by
    ``bastion serve`` before anything starts, by the SSH listener, on a reload and by
    ``bastion doctor``.
    """
    for key in ALGORITHM_KEYS:
        check_algorithms(key, getattr(ssh, key))


def offered_host_keys(
    loaded: Mapping[bytes, SSHKeyPair], allowed: Sequence[str], key_file: Path
) -> OrderedDict[bytes, SSHKeyPair]:
    """The loaded host keys by signature algorithm, cut to ``allowed`` in its order.

    asyncssh offers every algorithm a host key can sign with (an RSA key also
    ``ssh-rsa``, SHA-1); the server has no option for it, so the map it built is cut.
    """
    offered = OrderedDict(
        (name.encode("ascii"), loaded[name.encode("ascii")])
        for name in allowed
        if name.encode("ascii") in loaded
    )
    if not offered:
        can = ", ".join(a.decode("ascii") for a in loaded)
        raise ConfigError(
            f"ssh.host_key_algorithms allows none of what the host key {key_file} can "
            f"sign with ({can}); add one of those or use an Ed25519 host key"
        )
    return offered


_SHA1_SIGNATURES = frozenset({b"ssh-rsa", b"ssh-dss"})

USER_SIGNATURE_ALGORITHMS: tuple[str, ...] = tuple(
    a.decode("ascii") for a in get_default_public_key_algs() if a not in _SHA1_SIGNATURES
)
"""Signatures accepted from contractors' keys (advertised in ``server-sig-algs``):
asyncssh's defaults without the SHA-1 ones. RSA keys still work through
rsa-sha2-256/512, which every OpenSSH since 7.2 and paramiko since 2.9 use."""


def sha1_signature(signature: bytes) -> bool:
    """Whether a user-auth signature blob is ``ssh-rsa`` or ``ssh-dss`` (SHA-1).

    asyncssh's server verifies any algorithm the key type allows, whatever
    ``server-sig-algs`` said, so the refusal is made here.
    """
    try:
        return SSHPacket(signature).get_string() in _SHA1_SIGNATURES
    except PacketDecodeError:
        return False  # malformed: asyncssh's own verification refuses it
