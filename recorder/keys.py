"""Ed25519 signing keys for recordings: generate, save (PEM, 0600), load, identify.

The node signs checkpoints with its private key; auditors verify with the public
key. A key id (``ed25519:`` + the first 128 bits of SHA-256 of the raw public key,
hex) names the key in each recording's header so the verifier can pick the right
public key after rotation.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from recorder.errors import KeyFileError

__all__ = [
    "generate_signing_key",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "public_key_pem",
    "save_public_key",
    "save_signing_key",
]


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Stable identifier of a key pair: ``ed25519:<32 hex digits>``."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The public key as SubjectPublicKeyInfo PEM (what auditors are given)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError as e:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from e
    except OSError as e:
        raise KeyFileError(f"cannot create {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except OSError as e:
        raise KeyFileError(f"cannot write {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def save_signing_key(key: Ed25519PrivateKey, path: str | os.PathLike[str]) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM to a new file with mode 0600.

    Raises KeyFileError if the file exists or cannot be written.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(Path(path), pem, 0o600)


def save_public_key(
    key: Ed25519PublicKey | Ed25519PrivateKey, path: str | os.PathLike[str]
) -> None:
    """Write the public key as PEM to a new file with mode 0644."""
    _write_new(Path(path), public_key_pem(key), 0o644)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from e


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from PEM.

    Raises KeyFileError if the file is missing, readable by group/others (fix with
    ``chmod 600``), not PEM, or not an Ed25519 key.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise KeyFileError(f"cannot read key file {p}: {e.strerror}") from e
    if stat.S_IMODE(mode) & 0o077:
        raise KeyFileError(
            f"signing key {p} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {p}"
        )
    try:
        key = serialization.load_pem_private_key(_read(p), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{p} is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{p} holds a {type(key).__name__}, expected an Ed25519 key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM (or derive it from a private key PEM)."""
    p = Path(path)
    data = _read(p)
    try:
        if b"PRIVATE KEY" in data:
            return load_signing_key(p).public_key()
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{p} is not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{p} holds a {type(key).__name__}, expected an Ed25519 key")
    return key
