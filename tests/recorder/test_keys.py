"""Signing key helpers: generate, save 0600, load, refuse unsafe files, key ids."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from recorder import KeyFileError
from recorder.keys import (
    generate_signing_key,
    key_id,
    load_public_key,
    load_signing_key,
    save_public_key,
    save_signing_key,
)


def test_save_and_load(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "recording.key"
    save_signing_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_signing_key(path)
    assert key_id(loaded) == key_id(key) == key_id(key.public_key())
    assert key_id(key).startswith("ed25519:") and len(key_id(key)) == 8 + 32
    save_public_key(key, tmp_path / "recording.pub")
    assert key_id(load_public_key(tmp_path / "recording.pub")) == key_id(key)
    assert key_id(load_public_key(path)) == key_id(key)
    assert key_id(generate_signing_key()) != key_id(key)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    save_signing_key(generate_signing_key(), path)
    with pytest.raises(KeyFileError, match="already exists"):
        save_signing_key(generate_signing_key(), path)


def test_refuses_group_readable_private_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    save_signing_key(generate_signing_key(), path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(path)


def test_clear_errors_for_missing_and_wrong_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_signing_key(tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.write_text("not a key")
    junk.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_signing_key(junk)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(junk)
