"""Where keyframes and recording facts are cached, and the open-or-build logic.

Why a per-user cache directory rather than beside the recording: the node's recording
directory is 0700 and owned by the node, while auditors replay from their own
accounts (or from copied files). The cache key is the recording's real path, size and
modification time, so a repacked or replaced file never meets stale keyframes.
Recordings still being written (no trailer) are scanned but not cached: they grow.

Location: ``$BASTION_KEYFRAME_CACHE``, else ``$XDG_CACHE_HOME/bastion/keyframes``,
else ``~/.cache/bastion/keyframes``. Deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import zstandard

from recorder import RecordingReader
from replay.keyframe_store import KeyframeStore
from replay.keyframes import KeyframeError
from replay.recording_facts import RecordingFacts, scan_recording

__all__ = ["cache_dir", "open_indexed", "recording_identity"]

_MAX_FACTS = 256 * 1024 * 1024


def cache_dir() -> Path:
    """The keyframe cache directory (see the module docstring)."""
    explicit = os.environ.get("BASTION_KEYFRAME_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bastion" / "keyframes"


def recording_identity(path: str | os.PathLike[str]) -> str:
    """Real path, size and mtime of a recording: changes whenever the file does."""
    st = os.stat(path)
    return f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _paths(identity: str) -> tuple[Path, Path]:
    key = hashlib.sha256(identity.encode()).hexdigest()[:40]
    d = cache_dir()
    return d / f"{key}.keyframes", d / f"{key}.facts.zst"


def _load(identity: str) -> tuple[KeyframeStore, RecordingFacts] | None:
    kf_path, facts_path = _paths(identity)
    try:
        store = KeyframeStore.decode(kf_path.read_bytes(), identity)
        raw = zstandard.ZstdDecompressor().decompress(
            facts_path.read_bytes(), max_output_size=_MAX_FACTS
        )
        doc = json.loads(raw)
        if doc.get("identity") != identity:
            return None
        return store, RecordingFacts.from_json(doc["facts"])
    except (OSError, KeyframeError, zstandard.ZstdError, ValueError, KeyError, TypeError):
        return None  # absent or unusable: rebuild


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _save(identity: str, store: KeyframeStore, facts: RecordingFacts) -> None:
    kf_path, facts_path = _paths(identity)
    doc = {"identity": identity, "facts": facts.to_json()}
    packed = zstandard.ZstdCompressor(level=6).compress(json.dumps(doc).encode())
    try:
        _write_atomic(facts_path, packed)
        _write_atomic(kf_path, store.encode())
    except OSError:
        pass  # a read-only or full cache only costs a rebuild next time


def open_indexed(
    path: str | os.PathLike[str],
    reader: RecordingReader,
    stop: Callable[[], bool] | None = None,
    identity: str | None = None,
) -> tuple[KeyframeStore, RecordingFacts]:
    """Keyframes and facts of the recording at ``path``: from the cache, else built.

    ``identity``: the cache key when ``path`` is not a local file (an S3 object's).
    """
    identity = identity if identity is not None else recording_identity(path)
    cached = _load(identity) if reader.complete else None
    if cached is not None:
        return cached
    store, facts = scan_recording(reader, identity, stop)
    if reader.complete:
        _save(identity, store, facts)
    return store, facts
