"""recorder: durable, compressed, tamper-evident session recordings.

Protocol-agnostic: the host feeds time-stamped events (terminal output and input,
resizes, markers, exit, structured events such as PostgreSQL queries) to a
``RecordingWriter``; readers play, seek, export and verify the file. The on-disk
format is documented byte by byte in ``recorder/FORMAT.md``. This package never
imports SSH, PostgreSQL, ``bastion`` or ``textual`` code.
"""

from __future__ import annotations

from recorder import export
from recorder.compat import FORMAT_VERSION
from recorder.errors import (
    KeyFileError,
    RecordingClosedError,
    RecordingError,
    RecordingFormatError,
    RecordingStorageLow,
    RecordingVersionError,
    RecordingWriteError,
)
from recorder.events import (
    Event,
    EventKind,
    Exit,
    Input,
    JSONValue,
    Marker,
    Output,
    Resize,
    Structured,
)
from recorder.frames import IndexEntry
from recorder.header import Header
from recorder.reader import RecordingReader
from recorder.recover import RecoverResult, recover
from recorder.repack import RepackNote, RepackPolicy, RepackResult, repack, repack_note
from recorder.search import extract_commands
from recorder.storage import LocalStorage, RecordingSink, Storage, StoredRecording
from recorder.verify import VerifyResult, verify
from recorder.writer import (
    LiveTail,
    RecordingSummary,
    RecordingWriter,
    WriterPolicy,
    run_ticker,
)

__all__ = [
    "FORMAT_VERSION",
    "Event",
    "EventKind",
    "Exit",
    "Header",
    "IndexEntry",
    "Input",
    "JSONValue",
    "KeyFileError",
    "LiveTail",
    "LocalStorage",
    "Marker",
    "Output",
    "RecordingClosedError",
    "RecordingError",
    "RecordingFormatError",
    "RecordingReader",
    "RecordingSink",
    "RecordingSummary",
    "RecordingStorageLow",
    "RecordingVersionError",
    "RecordingWriteError",
    "RecordingWriter",
    "RecoverResult",
    "RepackNote",
    "RepackPolicy",
    "RepackResult",
    "Resize",
    "Storage",
    "StoredRecording",
    "Structured",
    "VerifyResult",
    "WriterPolicy",
    "export",
    "extract_commands",
    "recover",
    "repack",
    "repack_note",
    "run_ticker",
    "verify",
]
