"""Encryption of secrets at rest (TOTP seeds, database credentials).

The key never lives in the state store: it is a 32-byte key file written by
``bastion init`` (or the ``BASTION_SECRET_KEY`` environment variable, hex), so a
copy of the database alone does not reveal any secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.errors import ConfigError

_VERSION = b"\x01"
_NONCE_LEN = 12


class SecretBox:
    """AES-256-GCM sealing with a versioned envelope: version | nonce | ciphertext+tag."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError(f"secret key must be 32 bytes, got {len(key)}; run 'bastion init'")
        self._aead = AESGCM(key)

    @classmethod
    def generate_key(cls) -> bytes:
        """A fresh random 32-byte key."""
        return AESGCM.generate_key(bit_length=256)

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """Load the key from a file holding 64 hex characters (raises ConfigError)."""
        try:
            text = path.read_text().strip()
            return cls(bytes.fromhex(text))
        except FileNotFoundError as e:
            raise ConfigError(f"secret key file {path} is missing; run 'bastion init'") from e
        except ValueError as e:
            raise ConfigError(f"secret key file {path} is not 64 hex characters") from e

    @classmethod
    def from_env_or_file(cls, path: Path, env: str = "BASTION_SECRET_KEY") -> SecretBox:
        """Prefer the environment variable (hex) over the key file."""
        value = os.environ.get(env)
        if value:
            try:
                return cls(bytes.fromhex(value.strip()))
            except ValueError as e:
                raise ConfigError(f"{env} is not 64 hex characters") from e
        return cls.from_file(path)

    def seal(self, plaintext: bytes, context: bytes = b"") -> bytes:
        """Encrypt; ``context`` (e.g. the row's name) is authenticated, not stored."""
        nonce = os.urandom(_NONCE_LEN)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes = b"") -> bytes:
        """Decrypt; raises ConfigError if the key is wrong or the data was altered."""
        if len(sealed) < 1 + _NONCE_LEN + 16 or sealed[:1] != _VERSION:
            raise ConfigError("sealed secret has an unknown format")
        nonce = sealed[1 : 1 + _NONCE_LEN]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_LEN :], context)
        except InvalidTag as e:
            raise ConfigError(
                "cannot decrypt a stored secret: the secret key does not match this state store"
            ) from e
