"""Starting and ending a session, the same way for SSH and PostgreSQL.

Starting: the recording is created before anything reaches the target; if it
cannot be, the attempt is audited and (unless the admin chose to fail open) the
session is refused with ``RecordingUnavailable``. Then ``begin_session`` writes
the live session row and audits ``session.start``.

The order matters and is the product's promise: close the recording (signed
trailer), close the session row with the final hash, fill the command search
(derived data: a failure there is logged, never fatal), repack the file into
large chunks (the row follows the new hash), and only then audit
``session.end`` — once that row exists, the session row and the file are final.

Every row here goes through ``BastionNode.write``: while the state database is
unreachable the rows wait in the outbox, in this same order, and reach the
database when it returns.

``session.end`` — once that row exists, the session row and the file are final,
and the session is queued to the search index's thread (``bastion.search_indexer``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bastion import audit_actions as actions
from bastion.recording import LiveRecording
from bastion.service import BastionNode
from bastion.store.models import Grant, SessionRecord, Target, User
from bastion.store.outbox import session_row
from recorder import RecordingWriteError

log = logging.getLogger(__name__)

UNRECORDABLE = (
    "this session cannot be recorded right now, and sessions never run "
    "unrecorded; ask an admin to check the bastion's recording storage"
)


class RecordingUnavailable(Exception):
    """No recording could be created and the node fails closed: refuse the session."""


async def open_session_recording(
    node: BastionNode,
    session_id: str,
    meta: dict[str, object],
    on_failure: Callable[[str], None],
    *,
    user: str,
    target: str,
) -> LiveRecording | None:
    """The new session's recording (None only when the admin chose to fail open).

    Raises RecordingUnavailable (message: ``UNRECORDABLE``) after auditing why.
    """
    try:
        return await node.call(node.recordings.start, session_id, meta, on_failure)
    except (RecordingWriteError, OSError) as e:
        await node.audit(
            user,
            actions.RECORDING_FAILED,
            target,
            session=session_id,
            error=str(e),
            at_start=True,
            fail_closed=node.recordings.fail_closed,
        )
        if node.recordings.fail_closed:
            raise RecordingUnavailable(UNRECORDABLE) from e
        return None


async def begin_session(
    node: BastionNode,
    session_id: str,
    *,
    user: User,
    target: Target,
    grant: Grant,
    protocol: str,
    login: str | None,
    client_addr: str,
    started_at: float,
    recording: str | None,
    **audit: object,
) -> None:
    """Write the live session row and audit ``session.start`` (``audit``: the
    protocol's own details, added to the row's who, what and where)."""
    record = SessionRecord(
        id=session_id,
        user_id=user.id,
        user_name=user.name,
        target_id=target.id,
        target_name=target.name,
        grant_id=grant.id,
        node=node.node,
        protocol=protocol,
        login=login,
        client_addr=client_addr,
        started_at=started_at,
        recording=recording,
    )
    await node.write("start_session", rec=session_row(record))
    await node.audit(
        user.name,
        actions.SESSION_START,
        target.name,
        session=session_id,
        grant=grant.id,
        protocol=protocol,
        login=login,
        client=client_addr,
        **audit,
    )


CommandSource = Callable[[str], Awaitable[list[tuple[float, str]]]]
"""Given the closed recording's path, the ``(time, text)`` pairs to index."""


@dataclass(frozen=True)
class SessionEnd:
    """Who and what a finished session was, for the store and the audit row."""

    session_id: str
    user: str
    target: str | None
    reason: str
    bytes_in: int
    bytes_out: int


async def finish_session(
    node: BastionNode,
    end: SessionEnd,
    recording: LiveRecording | None,
    commands: CommandSource | None = None,
    **audit_details: object,
) -> None:
    """Close the recording and the session row, index, repack, audit the end, then hand
    the recording to the uploader (with S3 storage)."""
    summary = None
    if recording is not None:
        summary = await node.call(recording.close, end.reason)
    await node.write(
        "end_session",
        session_id=end.session_id,
        ended_at=node.clock(),
        reason=end.reason,
        bytes_in=end.bytes_in,
        bytes_out=end.bytes_out,
        events=summary.events if summary else 0,
        final_hash=summary.final_hash if summary else None,
        final_signature=summary.signature if summary else None,
    )
    final_hash = summary.final_hash if summary else None
    if summary is not None:
        path = node.recordings.path_of(summary.location)
        if commands is not None:
            try:
                found = await commands(path)
                await node.write("add_session_commands", session_id=end.session_id, commands=found)
            except Exception:  # the index is derived data; the recording is the evidence
                log.exception("command extraction failed for session %s", end.session_id)
        final_hash = await repack_recording(node, end, summary.location, summary.final_hash)
    await node.audit(
        end.user,
        actions.SESSION_END,
        end.target,
        session=end.session_id,
        reason=end.reason,
        bytes_in=end.bytes_in,
        bytes_out=end.bytes_out,
        recording=summary.location if summary else None,
        final_hash=final_hash,
        **audit_details,
    )
    if recording is not None and node.uploads is not None:
        # Sealed (or failed, unsealable): off to S3 in the background, never on this path.
        node.uploads.submit(end.session_id, recording.writer.location)

    node.indexer.submit(end.session_id)  # sealed: its thread indexes it, off the relay


def recording_broke(
    node: BastionNode,
    *,
    user: str,
    target: str | None,
    session_id: str | None,
    message: str,
    terminate: Callable[[str, str], None],
) -> None:
    """A live recording failed: audit it and, failing closed, end the session."""
    node.spawn(
        node.audit(
            user,
            actions.RECORDING_FAILED,
            target,
            session=session_id,
            error=message,
            at_start=False,
            fail_closed=node.recordings.fail_closed,
        )
    )
    if node.recordings.fail_closed:
        terminate(
            "recording-failed",
            "the recording of this session could not be written, and sessions never run unrecorded",
        )


async def repack_recording(
    node: BastionNode, end: SessionEnd, location: str, final_hash: str
) -> str:
    """Shrink the closed recording; the session row follows the new final hash.

    Returns the final hash the row now holds (the old one if repacking failed:
    the closed file stays valid and is the evidence).
    """
    try:
        result = await node.call(node.recordings.repack_closed, location, final_hash)
    except Exception as e:
        log.exception("repacking session %s failed", end.session_id)
        await node.audit(
            end.user,
            actions.RECORDING_REPACK_FAILED,
            end.target,
            session=end.session_id,
            error=str(e),
        )
        return final_hash
    if result is None or result.action != "repacked" or result.signature is None:
        return final_hash
    await node.write(
        "update_recording_hash",
        session_id=end.session_id,
        final_hash=result.final_hash,
        final_signature=result.signature,
    )
    await node.audit(
        end.user,
        actions.RECORDING_REPACKED,
        end.target,
        session=end.session_id,
        old_final_hash=result.old_final_hash,
        final_hash=result.final_hash,
        bytes_before=result.bytes_before,
        bytes_after=result.bytes_after,
    )
    return result.final_hash
