"""The ``[ssh]`` algorithm defaults as names only, without importing asyncssh.

``bastion.config`` reads these so that a command which never speaks SSH (``sessions
search``, ``audit``, ...) does not load asyncssh (~0.1-0.3 s) just to read the config.
Whether this node's asyncssh implements a name is checked in ``bastion.ssh.algorithms``
(``check_ssh_algorithms``) where the node starts, on reload and by ``bastion doctor``;
which names are on offer depends on optional libraries (liboqs, nettle, gssapi), so
it cannot be a table kept here.
"""

from __future__ import annotations

ALGORITHM_KEYS: tuple[str, ...] = ("ciphers", "kex_algorithms", "macs", "host_key_algorithms")
"""The ``[ssh]`` settings that are lists of algorithm names."""

PREFERRED_KEX_ALGORITHMS: tuple[str, ...] = (
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512@openssh.com",
    "sntrup761x25519-sha512",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    # For clients without X25519 (OpenSSH in FIPS mode): large fixed groups only.
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
"""The key-exchange default before it is cut to what the installed asyncssh implements
(``bastion.ssh.algorithms.DEFAULT_KEX_ALGORITHMS``: no sntrup761 without liboqs)."""

DEFAULT_MACS: tuple[str, ...] = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
)
"""Encrypt-then-MAC only; unused with the AES-GCM ciphers, which carry their own tag."""

DEFAULT_HOST_KEY_ALGORITHMS: tuple[str, ...] = (
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
)
"""What the host key may sign with: never ``ssh-rsa`` (SHA-1) or a NIST curve."""

DEFAULT_CIPHERS: tuple[str, ...] = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
"""chacha20-poly1305 is left out by default: in asyncssh it costs about 40 % of
relay throughput (new cipher objects per packet)."""


def default_kex_algorithms() -> tuple[str, ...]:
    """The key-exchange default for this node (imports asyncssh to cut the preferred list)."""
    from bastion.ssh.algorithms import DEFAULT_KEX_ALGORITHMS

    return DEFAULT_KEX_ALGORITHMS
