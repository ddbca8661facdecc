"""Session history: ``bastion sessions list|show|search|terminate``.

``sessions`` reads the state store (who connected where, when, what was typed);
``show`` adds the recording's verdict through ``bastion.cli_recordings``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from bastion.admin_actions import Origin, terminate_session

#: ``bastion verify`` exit codes (1 = error such as an unknown session, 2 = usage).
from bastion.cli_recordings import (
    Verdict,
    check_session_recording,
    node_public_key,
    recording_path,
)
from bastion.cli_shared import emit, opened
from bastion.cli_text import format_bytes, parse_since, printable
from bastion.config import Config
from bastion.errors import BastionError, NotFound, UsageError
from bastion.grants import format_time
from bastion.ids import is_session_id, session_id_time
from bastion.recording_files import RecordingFile
from bastion.store import Store
from bastion.store.models import AuditEvent, CertificateRecord, SessionRecord
from bastion.timeparse import format_duration

#: How far before a session's start its audit rows may be (login, upstream connect).
_AUDIT_LEAD = 300.0
_AUDIT_SCAN_LIMIT = 100_000


def _session_line(s: SessionRecord, now: float) -> str:
    if s.ended_at is None:
        length, end = "live", "-"
    else:
        length, end = format_duration(s.ended_at - s.started_at), s.end_reason or "-"
    traffic = f"{format_bytes(s.bytes_in)}/{format_bytes(s.bytes_out)}"
    return (
        f"{s.id:<26} {s.user_name:<14} {s.target_name:<14} {s.protocol:<8} "
        f"{s.login or '-':<10} {printable(s.node):<16} {format_time(s.started_at):<23} "
        f"{length:>8} {traffic:>15} {s.events:>7} {printable(end)}"
    )


_SESSION_HEADER = (
    f"{'ID':<26} {'USER':<14} {'TARGET':<14} {'PROTOCOL':<8} {'LOGIN':<10} {'NODE':<16} "
    f"{'START':<23} {'DURATION':>8} {'IN/OUT':>15} {'EVENTS':>7} END"
)


def cmd_sessions_list(args: argparse.Namespace) -> int:
    """List sessions, newest first, live or ended."""
    now = time.time()
    since = parse_since(args.since, now)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with opened(args) as (_c, store):
        sessions = store.list_sessions(
            live=True if args.live else None,
            user=args.user,
            target=args.target,
            since=since,
            limit=args.limit,
            node=args.node,
        )
    if not args.json:
        if not sessions:
            print("no sessions match", file=sys.stderr)
            return 0
        print(_SESSION_HEADER)
    emit(args, sessions, lambda s: _session_line(s, now))
    return 0


def session_audit(store: Store, session: SessionRecord) -> list[AuditEvent]:
    """The audit rows that name ``session`` (``details["session"]``), oldest first."""
    start = session.started_at
    if is_session_id(session.id):
        start = min(start, session_id_time(session.id))
    rows = store.list_audit(since=start - _AUDIT_LEAD, limit=_AUDIT_SCAN_LIMIT)
    return [e for e in rows if e.details.get("session") == session.id]


def cmd_sessions_show(args: argparse.Namespace) -> int:
    """Show one session: its row, certificates, audit rows and recording verdict."""
    with opened(args) as (config, store):
        session = store.get_session(args.id)
        if session is None:
            raise NotFound(f"no session {args.id}; see 'bastion sessions list'")
        certs = store.list_certificates(session_id=session.id)
        audit = session_audit(store, session)
    path = recording_path(config, session)
    verdict = _show_verdict(config, session, path)
    if args.json:
        out = {
            "session": asdict(session),
            "certificates": [asdict(c) for c in certs],
            "audit": [asdict(e) for e in audit],
            "recording": {
                "location": session.recording,
                "path": None if path is None else str(path),
                "verify": verdict.to_json(),
            },
        }
        print(json.dumps(out, indent=2, default=str))
        return 0
    _print_session(session, certs, audit, path, verdict)
    return 0


def _show_verdict(config: Config, session: SessionRecord, path: RecordingFile | None) -> Verdict:
    """The recording verdict for ``sessions show``; a problem checking is shown, not raised."""
    try:
        if path is None or not path.exists():
            return check_session_recording(session, path, None)
        return check_session_recording(session, path, node_public_key(config))
    except (BastionError, OSError) as e:
        return Verdict("unchecked", f"not checked: {e}", str(path))


def _print_session(
    s: SessionRecord,
    certs: list[CertificateRecord],
    audit: list[AuditEvent],
    path: RecordingFile | None,
    verdict: Verdict,
) -> None:
    ended = (
        f"{format_time(s.ended_at)} ({format_duration(s.ended_at - s.started_at)}, "
        f"{printable(s.end_reason or '-')})"
        if s.ended_at is not None
        else "live"
    )
    fields = [
        ("session", s.id),
        ("user", s.user_name),
        ("target", s.target_name),
        ("login", s.login or "-"),
        ("protocol", s.protocol),
        ("grant", f"#{s.grant_id}" if s.grant_id is not None else "-"),
        ("node", s.node),
        ("client", printable(s.client_addr)),
        ("started", format_time(s.started_at)),
        ("ended", ended),
        ("bytes in/out", f"{s.bytes_in} / {s.bytes_out}"),
        ("events", str(s.events)),
        ("final hash", s.final_hash or "-"),
    ]
    for name, value in fields:
        print(f"{name + ':':<14} {value}")
    print()
    print(f"certificates ({len(certs)}):")
    for c in certs:
        print(
            f"  serial {c.serial}  key id {printable(c.key_id)}  "
            f"valid {format_time(c.valid_after)} -> {format_time(c.valid_before)}  "
            f"principals {','.join(c.principals)}"
        )
    print()
    print(f"audit ({len(audit)}):")
    for e in audit:
        details = " ".join(
            f"{k}={printable(str(v))}"
            for k, v in e.details.items()
            if v is not None and k != "session"
        )
        print(
            f"  {format_time(e.at)} {e.actor:<16} {e.action:<22} {printable(e.subject or '-')} "
            f"{details}".rstrip()
        )
    print()
    print(f"recording:    {s.recording or '-'}")
    if path is not None:
        print(f"file:         {path}")
    print(f"verify:       {verdict.line}")
    for note in verdict.notes:
        print(f"              {note}")


# --- locating recordings and keys -----------------------------------------------------


def cmd_sessions_terminate(args: argparse.Namespace) -> int:
    """Ask whichever node runs a live session to end it (within half a second)."""
    now = time.time()
    with opened(args) as (_config, store):
        terminate_session(store, Origin.cli(), args.id, args.reason, now)
    print(f"session {args.id}: termination requested ({args.reason})")
    return 0
