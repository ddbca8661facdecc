"""Keyframes of one recording, kept compressed and decoded only when a seek needs one.

Why not a plain ``list[Keyframe]``: a gigabyte recording has thousands of keyframes
and each decoded state is tens of KiB of Python objects, while a seek needs exactly
one. The store keeps the times in memory (a bisect finds the keyframe) and every state
as its own zstd-compressed JSON blob (a few KiB), decoded on demand.

The cache file (``encode``/``decode``) is this store on disk: a magic line, a JSON
table of contents (version, recording identity, times, skips, blob lengths) and the
blobs. It is derived data: anything wrong with it raises ``KeyframeError`` and the
caller rebuilds from the recording. Never pickle: cache files must be safe to load.
"""

from __future__ import annotations

import bisect
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import zstandard

from recorder import Event
from replay.keyframes import (
    KEYFRAME_VERSION,
    EventSource,
    KeyframeError,
    iter_keyframes,
    load_state,
    play_from,
)
from replay.terminal import TerminalEmulator

__all__ = ["SEEK_INTERVAL", "SEEK_MAX_BYTES", "KeyframeStore"]

SEEK_INTERVAL = 5.0
"""Seconds between keyframes when output trickles."""
SEEK_MAX_BYTES = 32 * 1024
"""Output bytes between keyframes: bounds the bytes a seek feeds to the emulator
(full-screen programs emulate at 1-2 MB/s: with one 32 KiB SSH packet more, ~40 ms)."""

_MAGIC = b"BASTION-KEYFRAMES\n"
_MAX_STATE = 16 * 1024 * 1024
_MAX_TOC = 64 * 1024 * 1024


@dataclass
class KeyframeStore:
    """Keyframe times in memory, states as compressed blobs; see the module docstring."""

    cols: int
    rows: int
    times: list[float]
    skips: list[int]
    blobs: list[bytes]
    identity: str = ""
    """What recording the keyframes belong to (checked when loading a cache file)."""

    @classmethod
    def build(
        cls,
        events: Iterable[Event],
        cols: int,
        rows: int,
        *,
        identity: str = "",
        interval: float = SEEK_INTERVAL,
        max_bytes: int = SEEK_MAX_BYTES,
    ) -> KeyframeStore:
        """Play ``events`` once, compressing each keyframe as it is taken."""
        compressor = zstandard.ZstdCompressor(level=3)
        store = cls(cols, rows, [], [], [], identity)
        frames = iter_keyframes(events, cols, rows, interval=interval, max_bytes=max_bytes)
        for keyframe in frames:
            raw = json.dumps(keyframe.state, separators=(",", ":"), ensure_ascii=False)
            store.times.append(keyframe.time)
            store.skips.append(keyframe.skip)
            store.blobs.append(compressor.compress(raw.encode()))
        return store

    def __len__(self) -> int:
        return len(self.times)

    @property
    def stored_bytes(self) -> int:
        """Compressed size of all states (what the cache file mostly holds)."""
        return sum(len(b) for b in self.blobs)

    def emulator_at(self, index: int) -> TerminalEmulator:
        """The emulator restored from keyframe ``index``; KeyframeError if it is corrupt."""
        try:
            raw = zstandard.ZstdDecompressor().decompress(
                self.blobs[index], max_output_size=_MAX_STATE
            )
            state = json.loads(raw)
        except (zstandard.ZstdError, ValueError) as e:
            raise KeyframeError(f"corrupt keyframe {index}: {e!r}") from e
        if not isinstance(state, dict):
            raise KeyframeError(f"corrupt keyframe {index}: not an object")
        return load_state(state)

    def seek(self, source: EventSource, time: float) -> TerminalEmulator:
        """The emulator after every event with ``event.time <= time``.

        Restores the last keyframe at or before ``time`` and feeds the events after it.
        Raises KeyframeError if that keyframe is corrupt.
        """
        index = bisect.bisect_right(self.times, time) - 1
        if index >= 0:
            emu, start, skip = self.emulator_at(index), self.times[index], self.skips[index]
        else:
            emu, start, skip = TerminalEmulator(self.cols, self.rows), 0.0, 0
        return play_from(emu, source, start, skip, time)

    # -- cache file ---------------------------------------------------------------------

    def encode(self) -> bytes:
        """The cache file's bytes."""
        toc = {
            "version": KEYFRAME_VERSION,
            "identity": self.identity,
            "size": [self.cols, self.rows],
            "times": self.times,
            "skips": self.skips,
            "lengths": [len(b) for b in self.blobs],
        }
        raw = json.dumps(toc, separators=(",", ":")).encode()
        return b"".join([_MAGIC, struct.pack("<I", len(raw)), raw, *self.blobs])

    @classmethod
    def decode(cls, data: bytes, identity: str | None = None) -> KeyframeStore:
        """A store from ``encode``'s bytes.

        Raises KeyframeError if the data is corrupt, of another version, or (when
        ``identity`` is given) belongs to another recording; rebuild in that case.
        """
        try:
            if not data.startswith(_MAGIC):
                raise KeyframeError("not a keyframe cache file")
            start = len(_MAGIC) + 4
            (toc_len,) = struct.unpack_from("<I", data, len(_MAGIC))
            if toc_len > _MAX_TOC:
                raise KeyframeError("keyframe table of contents too large")
            toc = json.loads(data[start : start + toc_len])
            if toc.get("version") != KEYFRAME_VERSION:
                raise KeyframeError(f"keyframes version {toc.get('version')!r} is not supported")
            if identity is not None and toc.get("identity") != identity:
                raise KeyframeError("keyframes belong to another version of the recording")
            cols, rows = (int(v) for v in toc["size"])
            times = [float(t) for t in toc["times"]]
            skips = [int(s) for s in toc["skips"]]
            lengths = [int(n) for n in toc["lengths"]]
        except KeyframeError:
            raise
        except (struct.error, ValueError, TypeError, KeyError, AttributeError) as e:
            raise KeyframeError(f"corrupt keyframe cache: {e!r}") from e
        if not len(times) == len(skips) == len(lengths) or times != sorted(times):
            raise KeyframeError("corrupt keyframe cache: inconsistent table of contents")
        blobs, offset = [], start + toc_len
        for length in lengths:
            if length < 0 or offset + length > len(data):
                raise KeyframeError("corrupt keyframe cache: cut short")
            blobs.append(data[offset : offset + length])
            offset += length
        if offset != len(data):
            raise KeyframeError("corrupt keyframe cache: trailing bytes")
        return cls(cols, rows, times, skips, blobs, str(toc.get("identity", "")))


def events_after(source: EventSource, time: float) -> Iterator[Event]:
    """The events with ``event.time > time`` (where a player continues after a seek)."""
    for event in source.events(time):
        if event.time > time:
            yield event
