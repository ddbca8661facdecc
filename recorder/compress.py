"""Chunk compression with contexts shared per thread, not held per session.

A zstd compression context at level 3 costs on the order of a megabyte; holding one
per recorded session would dominate the memory of an idle node. Writers instead
buffer their (small) raw chunk and compress it in one shot with the calling thread's
shared context. Each chunk becomes one standard, independent zstd frame carrying its
content size and a content checksum, so stock ``zstd -dc`` can decompress and check
it on its own.
"""

from __future__ import annotations

import threading

import zstandard

from recorder.errors import RecordingFormatError
from recorder.frames import zstd_frame_length

__all__ = ["MAX_CHUNK_RAW", "compress_chunk", "decompress_chunk"]

MAX_CHUNK_RAW = 8 << 20
"""Largest uncompressed chunk a reader accepts (a decompression-bomb guard)."""

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True, write_dict_id=False
        )
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstandard.ZstdDecompressor()
    return dec


def compress_chunk(raw: bytes | bytearray, level: int = 3) -> bytes:
    """Compress one chunk's raw content into a single zstd frame."""
    result: bytes = _compressor(level).compress(raw)
    return result


def decompress_chunk(data: bytes, raw_len: int) -> bytes:
    """Decompress one chunk frame, checking it is exactly one frame of ``raw_len`` bytes.

    Raises RecordingFormatError if the frame is malformed, damaged (checksum) or its
    size disagrees with the chunk record.
    """
    if raw_len > MAX_CHUNK_RAW:
        raise RecordingFormatError(f"chunk claims {raw_len} raw bytes (limit {MAX_CHUNK_RAW})")
    if zstd_frame_length(data) != len(data):
        raise RecordingFormatError("chunk data is not exactly one complete zstd frame")
    try:
        content_size = zstandard.frame_content_size(data)
        if content_size != raw_len:
            raise RecordingFormatError(
                f"zstd frame holds {content_size} bytes, chunk record says {raw_len}"
            )
        raw: bytes = _decompressor().decompress(data, max_output_size=raw_len)
    except zstandard.ZstdError as e:
        raise RecordingFormatError(f"chunk does not decompress: {e}") from e
    if len(raw) != raw_len:
        raise RecordingFormatError(f"chunk decompressed to {len(raw)} bytes, expected {raw_len}")
    return raw
