"""The session core: one life for every session, whatever the protocol.

A ``Session`` is created once admission has found a grant. It owns every step
after that, each in one place: opening the recording (fail closed) and writing
the session row, going live under the time box, warnings, decisions of policy
hooks, termination for any cause, and the end (seal, final row, index, repack,
``session.end``). Protocol adapters (SSH channels, forwarding, PostgreSQL
connections) only move bytes, count them, and carry out what the core says
through the two methods of ``SessionAdapter``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bastion import audit_actions as actions
from bastion.ids import new_session_id
from bastion.notify import Notification
from bastion.recording import LiveRecording
from bastion.session.admission import Access, Refused
from bastion.session.hold import wait_for_approval
from bastion.session.hooks import (
    AdmissionRequest,
    CommandSeen,
    Decision,
    FileDownloaded,
    FileSeen,
    RowsReturned,
    SessionEnded,
    SessionEvent,
    SessionStarted,
    StatementSeen,
    Verdict,
    VolumeCrossed,
)
from bastion.session.lifecycle import Lifecycle, Phase
from bastion.session.reasons import EndReason, RefusalReason
from bastion.session.records import (
    CommandSource,
    RecordingUnavailable,
    SessionEnd,
    begin_session,
    finish_session,
    open_session_recording,
    recording_broke,
)
from bastion.session.timebox import LiveSession
from bastion.store.models import User

if TYPE_CHECKING:
    from bastion.service import BastionNode

log = logging.getLogger(__name__)

_FIRST_VOLUME_MARK = 1 << 20  # observers hear of volume at 1, 2, 4, 8... MiB


class SessionAdapter(Protocol):
    """What the core asks of a protocol adapter."""

    def tell(self, message: str) -> None:
        """Show ``message`` to the contractor without ending anything."""

    def close(self, reason: str, message: str) -> None:
        """End the session now: tell the contractor ``message``, close both legs.

        Called once, possibly before the session is live (the adapter then stops
        setting it up). The adapter calls ``Session.closed`` when both legs are
        down, as for any other end.
        """


@runtime_checkable
class Buffering(Protocol):
    """An adapter that can say how many relayed bytes it holds (read by ``/metrics``)."""

    def buffered(self) -> int:
        """Bytes held in this node for the session now (both directions' queues)."""


class Session:
    """One admitted session and its life."""

    def __init__(
        self,
        node: BastionNode,
        access: Access,
        *,
        user: User,
        protocol: str,
        kind: str,
        client_addr: str,
        adapter: SessionAdapter,
        description: str | None = None,
    ) -> None:
        if node.stopping:
            raise Refused(
                RefusalReason.NODE_STOPPING,
                "this node is stopping for maintenance; reconnect to continue",
            )
        self.node = node
        self.id = new_session_id()
        self.user = user
        self.target = access.target
        self.grant = access.grant
        self.login = access.login
        self.protocol = protocol
        self.kind = kind
        self.client_addr = client_addr
        self.description = description
        self.adapter = adapter
        self.life = Lifecycle()
        self.recording: LiveRecording | None = None
        self.last_decision: Decision | None = None
        """The answer of the last ``judge`` (an adapter names its rule in a refusal)."""
        self.started_at = node.clock()
        self.live: LiveSession | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.bytes_downloaded = 0
        self._volume_mark = _FIRST_VOLUME_MARK
        self._finishing = False
        self._starting: asyncio.Future[None] | None = None
        self.holding: asyncio.Event | None = None
        """Set while a command waits for approval: the end of the session wakes the wait."""
        node.sessions.add(self)

    # --- state ---------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """Where the session is in its life."""
        return self.life.phase

    @property
    def ending(self) -> bool:
        """An end was decided: the adapter must not start or continue relaying."""
        return self.life.ending

    @property
    def end_reason(self) -> str | None:
        """The reason decided for the end, if any yet."""
        return self.life.end_reason

    # --- start ---------------------------------------------------------------------------

    async def start_recording(
        self,
        meta: dict[str, object],
        on_failure: Callable[[str], None] | None = None,
        **audit: object,
    ) -> None:
        """Open the recording, write the live row, audit ``session.start``.

        Raises Refused (``recording-unavailable``) when nothing can be recorded:
        the session then never reaches the target.
        """
        self._starting = asyncio.get_running_loop().create_future()
        try:
            await self._start_recording(meta, on_failure, audit)
        finally:
            self._starting.set_result(None)

    async def _start_recording(
        self,
        meta: dict[str, object],
        on_failure: Callable[[str], None] | None,
        audit: dict[str, object],
    ) -> None:
        node = self.node
        full: dict[str, object] = {
            "user": self.user.name,
            "target": self.target.name,
            "login": self.login,
            "grant": self.grant.id,
            "node": node.node,
            "protocol": self.protocol,
            "client": self.client_addr,
            "started_at": self.started_at,
            **meta,
        }
        try:
            self.recording = await open_session_recording(
                node,
                self.id,
                full,
                on_failure or self.recording_failed,
                user=self.user.name,
                target=self.target.name,
            )
        except RecordingUnavailable as e:
            self.abandon()
            raise Refused(RefusalReason.RECORDING_UNAVAILABLE, str(e)) from e
        self.life.recorded = True  # from here on, finishing has a file (and a row) to close
        await begin_session(
            node,
            self.id,
            user=self.user,
            target=self.target,
            grant=self.grant,
            protocol=self.protocol,
            login=self.login,
            client_addr=self.client_addr,
            started_at=self.started_at,
            recording=self.recording.writer.location if self.recording else None,
            **audit,
        )
        self.life.recording_started()

    def go_live(self) -> bool:
        """Bytes may flow now; the time box starts watching. False: an end came first."""
        if not self.life.went_live():
            return False
        now = self.node.clock()
        self.live = LiveSession(
            session_id=self.id,
            user=self.user.name,
            target=self.target.name,
            grant_id=self.grant.id,
            not_after=self.grant.not_after,
            handle=self,
            started_at=now,
            last_input=now,
            under_profile=self.grant.profile_id is not None,
            stall_limit=(
                self.node.config.postgres.stalled_reader_timeout
                if self.protocol == "postgres"
                else self.node.config.ssh.stalled_reader_timeout
            ),
        )
        self.node.live.add(self.live)
        self.node.live.apply_one(self.live)
        if self.life.ending:  # the time box ended it at once (the grant ran out meanwhile)
            return False
        self.observe(SessionStarted())
        return True

    def abandon(self) -> None:
        """Admission passed but the session never started (nothing recorded): forget it."""
        self.life.end(EndReason.CLIENT_CLOSED)
        self._finishing = True
        self.node.sessions.discard(self)

    # --- while live ------------------------------------------------------------------------

    def input_seen(self, n: int) -> None:
        """Contractor bytes relayed (counts, idle timer)."""
        self.bytes_in += n
        live = self.live
        if live is not None:
            live.last_input = self.node.clock()

    def output_stalled(self, stalled: bool) -> None:
        """The relay paused (True) or resumed (False) because of the client's reading.

        Called per pause, never per byte; the time box ends a session stalled longer
        than its protocol's ``stalled_reader_timeout``.
        """
        live = self.live
        if live is not None:
            if not stalled:
                live.stalled_since = None
            elif live.stalled_since is None:
                live.stalled_since = self.node.clock()

    def output_seen(self, n: int) -> None:
        """Target bytes relayed to the contractor."""
        self.bytes_out += n
        if self.bytes_out >= self._volume_mark:
            while self._volume_mark <= self.bytes_out:  # one big chunk may pass several marks
                self._volume_mark *= 2
            self.observe(VolumeCrossed(self.bytes_out, self.bytes_in))

    def rows_returned(self, sql: str | None, rows: int) -> None:
        """A SQL request sent ``rows`` rows (its largest statement); once per request."""
        if rows and self.node.hooks.observing:
            self.observe(RowsReturned(sql, rows))

    def file_downloaded(self, path: str, n: int) -> None:
        """scp/sftp sent a whole file of ``n`` bytes to the contractor; once per file."""
        self.bytes_downloaded += n
        if n and self.node.hooks.observing:
            self.observe(FileDownloaded(path, n, self.bytes_downloaded))

    def observe(self, event: SessionEvent) -> None:
        """Tell the observer hooks (never blocks, never raises)."""
        hooks = self.node.hooks
        if hooks.observing:
            hooks.observe(self, event)

    def notify(self, message: str) -> None:
        """The time box's warning (``Terminable``)."""
        self.warn(message)

    def warn(self, message: str) -> None:
        """Warn the contractor; the warning is a marker in the recording."""
        self._mark(f"warning: {message}")
        self.adapter.tell(message)

    def mark(self, label: str) -> None:
        """A marker in the recording for others (alerts); nothing once sealing began."""
        self._mark(label)

    def _mark(self, label: str) -> None:
        """A marker in the recording, unless finishing began (the file is being sealed)."""
        if self.recording is not None and not self._finishing:
            self.recording.marker(label)

    async def watches(self, kind: str) -> bool:
        """Whether a policy hook could refuse ``kind`` in this session (cheap; skip work if not)."""
        hooks = self.node.hooks
        return hooks.judging and await hooks.watches(self, kind)

    def alert(self, name: str, words: str, **details: object) -> None:
        """Report something that needs a look (``alert.<name>``): a marker and an audit row."""
        self._mark(f"alert {name}: {words}")
        self.node.spawn(
            self.node.audit(
                self.user.name,
                actions.alert(name),
                self.target.name,
                session=self.id,
                reason=words,
                **details,
            )
        )

    async def judge(self, kind: str, text: str, extra: str = "") -> bool:
        """Ask the policy hooks about a command, statement or file; True if it may run.

        ``kind`` is "command" (``extra`` "exact" for exec requests), "statement"
        or "file" (``extra``: the operation). Paid once per command, never per
        byte; with no policy hook registered it costs one attribute read.
        """
        hooks = self.node.hooks
        if not hooks.judging:
            return True
        decision = await hooks.judge(self, kind, text, extra)
        self.last_decision = decision
        if kind == "command":
            self.observe(CommandSeen(text, extra == "exact", decision))
        elif kind == "statement":
            self.observe(StatementSeen(text, decision))
        else:
            self.observe(FileSeen(text, extra, decision))
        verdict = decision.verdict
        what = f"{kind} {text!r}"
        for flag in decision.flags:  # reported, never enforced
            self._mark(f"policy {flag.name}: {what}: {flag.words}")
            self._audit_policy(flag.name, kind, text, flag.rule, decision.hook, flag.words)
        if verdict is Verdict.ALLOW:
            return True
        self._mark(f"policy {verdict.value}: {what}: {decision.reason}")
        self._audit_policy(verdict.value, kind, text, decision.rule, decision.hook, decision.reason)
        rule = f" (rule {decision.rule})" if decision.rule else ""
        if verdict is Verdict.WARN:
            self.adapter.tell(f"warning{rule}: {decision.reason}")
            return True
        if verdict is Verdict.HOLD:  # waits for an approver; other sessions go on
            return await wait_for_approval(self, kind, text, decision)
        if verdict is Verdict.DENY:
            self.adapter.tell(f"denied{rule}: {decision.reason}")
            return False
        if verdict is Verdict.LOCK:
            await self.node.lock_user_for_policy(self.user, decision.reason)
            self.terminate(EndReason.USER_LOCKED, f"denied{rule}: {decision.reason}")
            return False
        self.terminate(EndReason.POLICY, f"denied{rule}: {decision.reason}")
        return False

    def allowed_at_once(self, kind: str, text: str) -> bool:
        """True when ``judge`` would allow ``text`` now with nothing to report.

        The hooks answer from what they already know (a statement judged before
        under the same rules, or no rules of that kind); False means: call
        ``judge``. Lets the PostgreSQL relay pay once per distinct statement text.
        """
        hooks = self.node.hooks
        if not hooks.judging:
            return True
        found = hooks.cached(self, kind, text)
        return found is not None and found.verdict is Verdict.ALLOW and not found.flags

    def _audit_policy(
        self, name: str, kind: str, text: str, rule: str | None, hook: str | None, reason: str
    ) -> None:
        """The ``policy.<name>`` row, and the same event to the notification sinks."""
        node, action = self.node, actions.policy_decision(name)
        details: dict[str, object] = {
            "session": self.id,
            "kind": kind,
            "text": text,
            "rule": rule,
            "hook": hook,
            "reason": reason,
        }
        node.spawn(node.audit(self.user.name, action, self.target.name, **details))
        node.notifier.send(
            Notification(action, node.clock(), self.user.name, self.target.name, details)
        )

    # --- the end ---------------------------------------------------------------------------

    def terminate(self, reason: str, message: str | None = None) -> None:
        """End the session for ``reason`` (admin, time box, policy, node stop, ...).

        The first cause wins; later ones do nothing. The adapter tells the
        contractor and closes both legs, then reports back through ``closed``.
        """
        if not self.life.end(reason, message):
            return
        self._wake_hold()
        words = message or _words(reason)
        if self.live is not None:
            self.live.ending = True
        if self.recording is not None and reason != EndReason.RECORDING_FAILED:
            self.recording.marker(f"terminated: {reason}")
        self.node.spawn(
            self.node.audit(
                self.user.name,
                actions.SESSION_TERMINATED,
                self.target.name,
                session=self.id,
                reason=reason,
                message=words,
            )
        )
        self.observe(SessionEnded(reason))
        self.adapter.close(reason, words)

    def recording_failed(self, message: str) -> None:
        """The recording broke mid-session: audit it and, failing closed, end the session."""
        recording_broke(
            self.node,
            user=self.user.name,
            target=self.target.name,
            session_id=self.id,
            message=message,
            terminate=self.terminate,
        )

    def closed(self, reason: str) -> str:
        """Both legs are down; ``reason`` is how, unless an end was decided before.

        Returns the reason the session ends with. The adapter then calls ``finish``.
        """
        if self.life.end(reason):
            self._wake_hold()
            self.observe(SessionEnded(reason))
        return self.life.end_reason or reason

    def _wake_hold(self) -> None:
        if self.holding is not None:
            self.holding.set()

    async def finish(self, commands: CommandSource | None = None, **audit: object) -> None:
        """Seal the recording, write the final row, index, repack, audit ``session.end``.

        Idempotent. The session leaves the node's registry even if a step fails
        (the failure is logged; recovery at the next start repairs the row).
        """
        if self._finishing:
            return
        self._finishing = True
        node = self.node
        if self._starting is not None:
            await self._starting  # a row being written now must be finished too
        self.life.end(EndReason.CLIENT_CLOSED)  # no-op when an end was decided
        reason = self.life.end_reason or EndReason.CLIENT_CLOSED
        node.live.remove(self.id)
        try:
            if self.life.recorded:
                end = SessionEnd(
                    session_id=self.id,
                    user=self.user.name,
                    target=self.target.name,
                    reason=reason,
                    bytes_in=self.bytes_in,
                    bytes_out=self.bytes_out,
                )
                await finish_session(node, end, self.recording, commands, **audit)
        finally:
            self.life.finished()
            node.sessions.discard(self)
        await node.hooks.ended(self)


def _words(reason: str) -> str:
    try:
        return EndReason(reason).words
    except ValueError:
        return reason


async def run_admission_hooks(
    node: BastionNode,
    access: Access,
    *,
    user: User,
    protocol: str,
    kind: str,
    client_addr: str,
    command: str | None = None,
) -> None:
    """Ask every admission hook (requests, engagements, hours) before a session exists.

    Raises Refused (``hook-refused``) with the hook's words; a hook that fails refuses.
    """
    request = AdmissionRequest(
        user=user,
        target=access.target,
        grant=access.grant,
        protocol=protocol,
        kind=kind,
        login=access.login,
        client_addr=client_addr,
        command=command,
    )
    decision = await node.hooks.admit(request)
    if not decision.verdict.lets_through:
        by = f" ({decision.hook})" if decision.hook else ""
        raise Refused(
            RefusalReason.HOOK_REFUSED, decision.reason or f"refused by a bastion check{by}"
        )
