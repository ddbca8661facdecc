"""Recording evidence on the command line: ``bastion verify`` and ``bastion export``.

A recording is named by session id (resolved through the config: the node's
``recordings_dir`` spool, or S3 storage once uploaded; checked against the final
hash the node stored) or by a file path. A file path needs no config or state
store, so an auditor can check a copied recording with only the node's public key.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bastion.cli_shared import opened
from bastion.cli_text import format_bytes, printable
from bastion.commands.recordings import EXIT_ALTERED, EXIT_INTACT, EXIT_MISSING, EXIT_TRUNCATED
from bastion.config import Config, load_config
from bastion.errors import BastionError, ConfigError, NotFound, UsageError
from bastion.grants import format_time
from bastion.ids import is_session_id
from bastion.pg.query_event import resolve_queries
from bastion.recording_files import RecordingFile, recording_file
from bastion.s3_config import S3Config
from bastion.s3store import S3Location, is_s3_location
from bastion.store.models import SessionRecord
from recorder import (
    Output,
    RecordingError,
    RecordingReader,
    RecordingVersionError,
    VerifyResult,
    export,
    repack_note,
    verify,
)
from recorder.keys import key_id, load_public_key

Status = Literal["intact", "truncated", "altered", "missing", "unchecked"]
_EXIT = {
    "unchecked": 1,
    "intact": EXIT_INTACT,
    "truncated": EXIT_TRUNCATED,
    "altered": EXIT_ALTERED,
    "missing": EXIT_MISSING,
}


# --- sessions list / show / search --------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one recording, ready to print or serialise."""

    status: Status
    line: str
    """``intact`` / ``truncated (...)`` / ``altered (...)`` / ``missing (...)``."""
    file: str | None
    result: VerifyResult | None = None
    notes: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """What ``bastion verify`` exits with for this verdict."""
        return _EXIT[self.status]

    def to_json(self) -> dict[str, Any]:
        """The verdict as a JSON-able dict (the VerifyResult fields under ``detail``)."""
        return {
            "status": self.status,
            "verdict": self.line,
            "exit_code": self.exit_code,
            "file": self.file,
            "notes": list(self.notes),
            "detail": None if self.result is None else asdict(self.result),
        }


def recording_path(config: Config, session: SessionRecord) -> RecordingFile | None:
    """Where the session's recording is: spool file or S3 object (None if never recorded)."""
    if not session.recording:
        return None
    try:
        return recording_file(config, session.recording)
    except ValueError as e:
        raise BastionError(f"session {session.id}: {e}") from e


VERIFY_BUFFER = 4 * 1024 * 1024
"""Read size for a whole-file pass over an S3 object (fewer, larger ranged GETs)."""


@contextmanager
def _opened_file(source: Path | RecordingFile, buffer_size: int = 0) -> Iterator[BinaryIO]:
    """The recording as a seekable binary file (raises OSError)."""
    if isinstance(source, Path):
        with open(source, "rb") as local:
            yield local
        return
    f = source.open(buffer_size) if buffer_size else source.open()
    try:
        yield f
    finally:
        f.close()


def load_key_file(path: str) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (a private key PEM also works)."""
    try:
        return load_public_key(path)
    except RecordingError as e:
        raise ConfigError(f"{e}; pass the node's recording_signing_key.pub") from e


def node_public_key(config: Config) -> Ed25519PublicKey:
    """The node's recording verification key: ``<signing_key>.pub``, else the private key."""
    private = config.recording_signing_key
    public = private.with_name(private.name + ".pub")
    if public.exists():
        return load_key_file(str(public))
    if private.exists():
        return load_key_file(str(private))
    raise ConfigError(
        f"neither {public} nor {private} exists; pass --key PUBKEY_PEM "
        "(the node's recording_signing_key.pub)"
    )


def _lookup_session(args: argparse.Namespace, session_id: str) -> tuple[Config, SessionRecord]:
    if Path(session_id).exists():
        raise UsageError(f"{session_id} is not a regular file")
    if not is_session_id(session_id) and (os.sep in session_id or session_id.endswith(".bastrec")):
        raise NotFound(f"no file {session_id}")
    try:
        with opened(args) as (config, store):
            session = store.get_session(session_id)
    except ConfigError as e:
        raise ConfigError(
            f"'{session_id}' is not a file here, so it was taken as a session id, "
            f"which needs the bastion's config: {e}"
        ) from e
    if session is None:
        raise NotFound(
            f"'{session_id}' is neither a recording file nor a known session; "
            "see 'bastion sessions list'"
        )
    return config, session


# --- verify ---------------------------------------------------------------------------


def _at(t: float, started_at: float | None) -> str:
    wall = f" ({format_time(started_at + t)})" if started_at is not None else ""
    return f"t={t:.3f}s{wall}"


def verdict_line(result: VerifyResult, started_at: float | None = None) -> str:
    """The one-line verdict: intact, truncated (complete up to ...), altered (first bad ...)."""
    if result.status == "intact":
        return "intact"
    if result.status == "truncated":
        if result.last_seq < 0:
            return "truncated (nothing readable: the header is incomplete)"
        return (
            f"truncated (complete up to {_at(result.last_time, started_at)}, seq {result.last_seq})"
        )
    where: list[str] = []
    if result.bad_seq is not None:
        where.append(
            "first bad chunk seq 0 (the header)"
            if result.bad_seq == 0
            else f"first bad chunk seq {result.bad_seq}"
        )
        if result.bad_time is not None and result.bad_seq != 0:
            where.append(f"at {_at(result.bad_time, started_at)}")
    elif result.bad_offset is not None:
        where.append(f"at file offset {result.bad_offset}")
    prefix = " ".join(where)
    reason = printable(result.reason)
    return f"altered ({prefix}: {reason})" if prefix else f"altered ({reason})"


def _header_facts(path: Path | RecordingFile) -> tuple[float | None, str | None]:
    """Start time and key id from the header (unauthenticated; for display only)."""
    try:
        with _opened_file(path) as f, RecordingReader.open(f) as reader:
            return reader.header.started_at, reader.header.key_id
    except (RecordingError, OSError):
        return None, None


def check_recording(
    path: Path | RecordingFile,
    key: Ed25519PublicKey,
    expected_final_hash: str | None = None,
    expected_session_id: str | None = None,
) -> Verdict:
    """Verify one file (or S3 object); raises BastionError if it cannot be read at all."""
    try:
        with _opened_file(path, VERIFY_BUFFER) as f:
            result = verify(f, key, expected_final_hash, expected_session_id)
    except RecordingVersionError as e:
        raise BastionError(f"{path}: {e}; verify it with a newer bastion") from e
    except OSError as e:
        raise BastionError(f"cannot read {path}: {e.strerror or e}") from e
    started_at, file_key_id = _header_facts(path) if result.last_seq >= 0 else (None, None)
    # An altered verdict line already carries the reason; the others get it as detail.
    detail = result.reason and result.status != "altered"
    notes = [f"detail: {printable(result.reason)}"] if detail else []
    notes += [printable(n) for n in result.notes]
    mine = key_id(key)
    if file_key_id is not None and file_key_id != mine:
        notes.append(
            f"the recording names signing key {printable(file_key_id)}, the key used is {mine}"
        )
    return Verdict(result.status, verdict_line(result, started_at), str(path), result, tuple(notes))


def check_session_recording(
    session: SessionRecord, path: RecordingFile | None, key: Ed25519PublicKey | None
) -> Verdict:
    """Verify a session's recording against what the state store kept at close."""
    if path is None:
        return Verdict("missing", "missing (the session has no recording)", None)
    try:
        there = path.exists()
    except OSError as e:
        raise BastionError(f"cannot read {path}: {e.strerror or e}") from e
    if not there:
        where = "no object" if path.s3 is not None else "no file"
        return Verdict("missing", f"missing ({where} at {path})", str(path))
    if key is None:
        raise ConfigError("no public key to verify with")
    verdict = check_recording(path, key, session.final_hash, session.id)
    extra: list[str] = []
    if verdict.status == "altered" and session.final_hash is not None:
        # A crash between a repack's atomic replace and the row update leaves the row
        # with the pre-repack hash; the repacked file names that hash in its signed header.
        try:
            with _opened_file(path) as f:
                note = repack_note(f)
        except (RecordingError, OSError):
            note = None
        if note is not None and note.from_final_hash == session.final_hash:
            again = check_recording(path, key, None, session.id)
            if again.status == "intact":
                verdict = again
                extra.append(
                    "repacked from the recording the state store points at "
                    "(the row was not updated yet)"
                )
    if session.ended_at is None:
        extra.append("the session is live: its recording is still being written")
    elif session.final_hash is None:
        extra.append("the state store kept no final hash for this session (ended by a failure?)")
    if extra:
        verdict = Verdict(
            verdict.status, verdict.line, verdict.file, verdict.result, verdict.notes + tuple(extra)
        )
    return verdict


def object_file(args: argparse.Namespace, url: str) -> RecordingFile:
    """``s3://bucket/key`` read with the config's ``[recording.s3]`` settings, or without a
    config with boto3's own (``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``, credentials)."""
    try:
        config = load_config(args.config)
    except ConfigError:
        config = None
    try:
        if config is not None:
            return recording_file(config, url)
        return RecordingFile(
            s3=S3Location.parse(url), s3_config=S3Config(S3Location.parse(url).bucket)
        )
    except ValueError as e:
        raise UsageError(str(e)) from e


def cmd_verify(args: argparse.Namespace) -> int:
    """Say whether a recording is intact, truncated or altered, and where."""
    target = args.recording
    if Path(target).is_file() or is_s3_location(target):
        if args.key:
            key = load_key_file(args.key)
        else:
            try:
                config = load_config(args.config)
            except ConfigError as e:
                raise ConfigError(
                    f"no --key given and no bastion config to find the node's key: {e}; "
                    f"run: bastion verify {target} --key recording_signing_key.pub"
                ) from e
            key = node_public_key(config)
        expected = args.expect_hash.strip().lower() if args.expect_hash else None
        if expected is not None and (
            len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)
        ):
            raise UsageError("--expect-hash must be 64 hex digits (a SHA-256 final hash)")
        source = object_file(args, target) if is_s3_location(target) else Path(target)
        verdict = check_recording(source, key, expected)
    else:
        if args.expect_hash:
            raise UsageError(
                "--expect-hash is for a FILE; for a session id the state store's hash is used"
            )
        config, session = _lookup_session(args, target)
        key = load_key_file(args.key) if args.key else node_public_key(config)
        verdict = check_session_recording(session, recording_path(config, session), key)
    if args.json:
        print(json.dumps({"recording": target} | verdict.to_json(), indent=2, default=str))
    else:
        print(verdict.line)
        if verdict.file is not None and verdict.file != target:
            print(f"  file: {verdict.file}")
        for note in verdict.notes:
            print(f"  {note}")
    return verdict.exit_code


# --- export ---------------------------------------------------------------------------


@contextmanager
def _output(dest: str | None) -> Iterator[BinaryIO]:
    """A binary stream to ``dest`` (a new file, removed again on failure) or stdout."""
    if dest is None or dest == "-":
        sys.stdout.flush()
        stdout: BinaryIO = sys.stdout.buffer
        try:
            yield stdout
        finally:
            stdout.flush()
        return
    try:
        f = open(dest, "wb")  # closed below
    except OSError as e:
        raise BastionError(f"cannot write {dest}: {e.strerror or e}") from e
    try:
        yield f
    except BaseException:
        f.close()
        Path(dest).unlink(missing_ok=True)
        raise
    f.close()


def _export_to(reader: RecordingReader, fmt: str, out: BinaryIO, include_input: bool) -> int:
    if fmt == "raw":
        count = 0
        for event in reader.events():
            if isinstance(event, Output):
                out.write(event.data)
                count += 1
        return count
    text = io.TextIOWrapper(out, encoding="utf-8", newline="\n", write_through=True)
    try:
        if fmt == "asciicast":
            return export.to_asciicast(reader, text, include_input=include_input)
        # Self-contained: a prepared statement's text on every execution, as before.
        return export.to_jsonl(reader, text, events=resolve_queries(reader.events()))
    finally:
        text.flush()
        text.detach()


def _open_reader(path: Path | RecordingFile) -> RecordingReader:
    """A reader that owns (and closes) its file or S3 object."""
    if isinstance(path, Path):
        return RecordingReader.open(path)
    f = path.open()
    try:
        return RecordingReader(f, owns_file=True)
    except BaseException:
        f.close()
        raise


def cmd_export(args: argparse.Namespace) -> int:
    """Write a recording as asciicast v2, JSON lines or the raw output bytes."""
    target = args.recording
    expected_id: str | None = None
    path: Path | RecordingFile
    if Path(target).is_file():
        path = Path(target)
    elif is_s3_location(target):
        path = object_file(args, target)
    else:
        config, session = _lookup_session(args, target)
        found = recording_path(config, session)
        if found is None:
            raise NotFound(f"session {session.id} has no recording")
        try:
            there = found.exists()
        except OSError as e:
            raise BastionError(f"cannot read {found}: {e.strerror or e}") from e
        if not there:
            raise NotFound(
                f"the recording of session {session.id} is missing ({found}); "
                f"'bastion verify {session.id}' for details"
            )
        path, expected_id = found, session.id
    try:
        reader = _open_reader(path)
    except RecordingError as e:
        raise BastionError(f"{path}: {e}") from e
    except OSError as e:
        raise BastionError(f"cannot read {path}: {e.strerror or e}") from e
    with reader:
        if expected_id is not None and reader.header.session_id != expected_id:
            print(
                f"bastion: warning: {path} says it is session "
                f"{printable(reader.header.session_id)}, not {expected_id}; "
                f"run 'bastion verify {expected_id}'",
                file=sys.stderr,
            )
        try:
            with _output(args.output) as out:
                _export_to(reader, args.format, out, include_input=not args.no_input)
        except BrokenPipeError:
            # The reader of a pipe (``| head``) went away: stop quietly, like cat does.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 1
        for damaged in reader.damage:
            print(
                f"bastion: warning: skipped damaged data at offset {damaged.offset}: "
                f"{printable(damaged.reason)}",
                file=sys.stderr,
            )
        if not reader.complete:
            print(
                "bastion: warning: the recording was not closed by the bastion "
                "(live, crashed or cut short); exported what it holds",
                file=sys.stderr,
            )
    return 0


# --- recordings pending -----------------------------------------------------------------


def pending_rows(config: Config, sessions: list[SessionRecord]) -> list[dict[str, Any]]:
    """What ``recordings pending`` prints: each ended session still in a spool, its node,
    and (for this node's own spool) the file's size."""
    spool = config.recordings_dir
    rows: list[dict[str, Any]] = []
    for s in sessions:
        size: int | None = None
        if s.node == config.node and s.recording:
            try:
                local = recording_file(config, s.recording).path
                size = local.stat().st_size if local is not None else None
            except (OSError, ValueError):  # gone, or a location outside the spool
                size = None
        rows.append(
            {
                "session": s.id,
                "node": s.node,
                "ended_at": s.ended_at,
                "location": s.recording,
                "spool": str(spool) if s.node == config.node else None,
                "size": size,
            }
        )
    return rows


def cmd_recordings_pending(args: argparse.Namespace) -> int:
    """List ended sessions whose recordings are still only in a node's spool."""
    with opened(args) as (config, store):
        if config.recording_s3 is None:
            print(
                f'bastion: [recording] storage is "local" in {config.path}: recordings are '
                'not uploaded, so none is pending (set storage = "s3://bucket/prefix")',
                file=sys.stderr,
            )
            sessions: list[SessionRecord] = []
        else:
            sessions = store.sessions_with_recordings_not_in("s3://", limit=args.limit)
    rows = pending_rows(config, sessions)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        ended = format_time(r["ended_at"]) if r["ended_at"] is not None else "-"
        size = format_bytes(r["size"]) if r["size"] is not None else "-"
        print(f"{r['session']}  node={r['node']}  ended={ended}  {size}  {r['location']}")
    if not rows and config.recording_s3 is not None:
        print(f"nothing pending: every ended session's recording is in {config.recording_s3.url}")
    return 0


# --- registration -----------------------------------------------------------------------
