"""The time box: live sessions on this node, warned before and ended at their grant's end.

Every relayed session registers here. One watcher task re-reads the state of all
live sessions' grants in a single query every ``poll_interval`` seconds, so a
revocation made by any process (the CLI, another node) ends the session within
that interval, or at once when another node's NOTIFY wakes the pass (``wake``). It
also warns before a grant's end, ends sessions at the end, and closes idle ones and
ones whose client stopped reading (``stalled_reader_timeout``).
Sessions under an access profile are also checked against the labels and profile
as they are now: one no longer reached ends (``label-removed``).
While the state database cannot be read, revocations cannot be seen: sessions go
on for ``outage_grace`` seconds after the first failed pass, then end
(``state-unavailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bastion.errors import StoreUnavailable
from bastion.grants import format_time
from bastion.session.reasons import EndReason
from bastion.store.models import GrantState

log = logging.getLogger(__name__)


class Terminable(Protocol):
    """What the time box needs from a relayed session."""

    def notify(self, message: str) -> None:
        """Show ``message`` to the contractor without ending the session."""

    def terminate(self, reason: str, message: str) -> None:
        """End the session, telling the contractor ``message``; ``reason`` is audited."""


@dataclass(eq=False)
class LiveSession:
    """Book-keeping for one live session."""

    session_id: str
    user: str
    target: str
    grant_id: int
    not_after: float
    handle: Terminable
    started_at: float
    last_input: float
    warned: set[float] = field(default_factory=set)
    ending: bool = False
    under_profile: bool = False
    """The grant is a profile grant: its reach is re-read at every pass."""
    stall_limit: float = 0.0
    """Seconds the client may leave the session paused by not reading (0: no limit)."""
    stalled_since: float | None = None
    """When the relay paused because the client stopped reading (None: flowing)."""

    def touch(self, now: float) -> None:
        """Note contractor input (for the idle timeout)."""
        self.last_input = now


GrantStateReader = Callable[[Sequence[int]], Awaitable[dict[int, tuple[GrantState, float]]]]
TerminationReader = Callable[[Sequence[str]], Awaitable[dict[str, tuple[str, str]]]]
ReachReader = Callable[[Sequence[tuple[int, str]]], Awaitable[set[tuple[int, str]]]]
"""(grant id, target name) pairs of profile sessions -> those no longer reached."""


class LiveSessions:
    """The registry of this node's live sessions plus their time box."""

    def __init__(
        self,
        warn_before: Sequence[float] = (300.0, 60.0),
        idle_timeout: float = 0.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions: dict[str, LiveSession] = {}
        self._anchors: dict[str, tuple[float, float]] = {}
        """Session id -> (wall clock, monotonic clock) when it was added."""
        self.warn_before = tuple(sorted(warn_before, reverse=True))
        self.idle_timeout = idle_timeout
        self.poll_interval = 0.5
        """Seconds between passes of ``watch`` (read at every pass: a reload may change it)."""
        self.clock = clock
        self.outage_grace = 60.0
        """Seconds sessions go on while the state cannot be read (``[state] outage_grace``)."""
        self.unreadable_since: float | None = None
        """When the passes began to fail for an unreachable state database (None: they work)."""
        self.monotonic = monotonic
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """Run the next pass now instead of at the poll (another node's signal: NOTIFY)."""
        self._woken.set()

    def serves(self, *, session: str | None = None, grant: int | None = None) -> bool:
        """True if a live session here is ``session`` or runs under grant ``grant``."""
        if session is not None and session in self._sessions:
            return True
        return grant is not None and any(s.grant_id == grant for s in self._sessions.values())

    def add(self, session: LiveSession) -> None:
        """Start watching a session."""
        self._sessions[session.session_id] = session
        self._anchors[session.session_id] = (self.clock(), self.monotonic())

    def remove(self, session_id: str) -> None:
        """Stop watching a session (it ended)."""
        self._sessions.pop(session_id, None)
        self._anchors.pop(session_id, None)

    def now_for(self, s: LiveSession) -> float:
        """The time a grant's end is judged by: the wall clock, never behind the time
        really elapsed since the session was added (the monotonic clock).

        A clock stepped forward ends sessions early (fail closed); one stepped back
        cannot keep a session past the real end of its grant.
        """
        wall = self.clock()
        anchor = self._anchors.get(s.session_id)
        if anchor is None:
            return wall
        return max(wall, anchor[0] + (self.monotonic() - anchor[1]))

    def get(self, session_id: str) -> LiveSession | None:
        """The live session with that id, if it is on this node."""
        return self._sessions.get(session_id)

    def list(self) -> list[LiveSession]:
        """All live sessions on this node."""
        return list(self._sessions.values())

    def apply(
        self,
        states: dict[int, tuple[GrantState, float]],
        sessions: Sequence[LiveSession] | None = None,
    ) -> None:
        """One time-box pass, given the stored states of ``sessions``' grants.

        ``sessions`` must be the ones whose grants were read (default: all): a
        session that started while the states were being read is not judged by an
        answer that could not include its grant.
        """
        for s in self.list() if sessions is None else sessions:
            if s.grant_id not in states:
                self._end(s, EndReason.GRANT_REMOVED, f"grant #{s.grant_id} no longer exists")
                continue
            stored, not_after = states[s.grant_id]
            if not_after > s.not_after:
                s.warned.clear()  # extended: warn again before the new end
            s.not_after = not_after
            if stored is GrantState.REVOKED:
                self._end(s, EndReason.GRANT_REVOKED, f"grant #{s.grant_id} was revoked")
                continue
            self.apply_one(s)

    def apply_terminations(self, requests: dict[str, tuple[str, str]]) -> None:
        """End the sessions an admin asked to end (requests: id -> (by, reason))."""
        for session_id, (by, reason) in requests.items():
            s = self._sessions.get(session_id)
            if s is not None:
                self._end(s, EndReason.ADMIN_TERMINATED, f"terminated by {by}: {reason}")

    def apply_unreached(
        self, gone: set[tuple[int, str]], sessions: Sequence[LiveSession] | None = None
    ) -> None:
        """End the profile sessions whose (grant, target) the profile no longer reaches."""
        for s in self.list() if sessions is None else sessions:
            if (s.grant_id, s.target) in gone:
                self._end(
                    s,
                    EndReason.LABEL_REMOVED,
                    f"{s.target} is no longer covered by the access profile of grant "
                    f"#{s.grant_id} (its labels or the profile changed)",
                )

    def end_user(self, user: str, reason: str, message: str) -> tuple[str, ...]:
        """End every live session of ``user`` on this node (an engagement's end); their ids."""
        ended = [s for s in self.list() if s.user == user and not s.ending]
        for s in ended:
            self._end(s, reason, message)
        return tuple(s.session_id for s in ended)

    def apply_one(self, s: LiveSession) -> None:
        """Warn or end one session by the clock alone (also run when a session starts)."""
        if s.ending:
            return
        now = self.now_for(s)
        if now >= s.not_after:
            ended = f"grant #{s.grant_id} ended at {format_time(s.not_after)}"
            self._end(s, EndReason.GRANT_ENDED, ended)
            return
        # idle time is measured on the wall clock, like the input times it is noted with
        if self.idle_timeout and self.clock() - s.last_input >= self.idle_timeout:
            self._end(s, EndReason.IDLE_TIMEOUT, f"no input for {int(self.idle_timeout)} seconds")
            return
        stalled = s.stalled_since
        if stalled is not None and s.stall_limit and now - stalled >= s.stall_limit:
            self._end(
                s,
                EndReason.RESOURCE_LIMIT,
                f"the client read none of the session's output for {s.stall_limit:g} seconds "
                "(stalled_reader_timeout)",
            )
            return
        left = s.not_after - now
        # The nearest threshold already passed; warn once for it and for all larger ones.
        passed = [t for t in self.warn_before if left <= t]
        if passed and min(passed) not in s.warned:
            s.warned.update(passed)
            minutes = max(1, round(left / 60))
            s.handle.notify(
                f"grant #{s.grant_id} ends in {minutes} minute(s), at "
                f"{format_time(s.not_after)}; this session will be closed then"
            )

    def state_unreadable(self, error: StoreUnavailable) -> None:
        """A pass could not read the state: end every session once ``outage_grace`` is over."""
        now = self.clock()
        if self.unreadable_since is None:
            self.unreadable_since = now
            log.warning(
                "live sessions cannot be checked against revocations (%s); they end in %gs"
                " unless the state database returns",
                error,
                self.outage_grace,
            )
        down = now - self.unreadable_since
        if down < self.outage_grace:
            return
        message = f"{EndReason.STATE_UNAVAILABLE.words} (unreachable for {down:.0f}s)"
        for s in self.list():
            self._end(s, EndReason.STATE_UNAVAILABLE, message)

    def state_readable(self) -> None:
        """A pass read the state again: the grace starts afresh at the next outage."""
        if self.unreadable_since is not None:
            log.warning("live sessions are checked against the state database again")
            self.unreadable_since = None

    def _end(self, s: LiveSession, reason: str, message: str) -> None:
        if s.ending:
            return
        s.ending = True
        log.info("ending session %s: %s", s.session_id, message)
        s.handle.terminate(reason, message)

    async def watch(
        self,
        read_states: GrantStateReader,
        poll_interval: float | None = None,
        read_terminations: TerminationReader | None = None,
        read_unreached: ReachReader | None = None,
    ) -> None:
        """Run the time box until cancelled."""
        if poll_interval is not None:
            self.poll_interval = poll_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.poll_interval)
            self._woken.clear()
            sessions = self.list()
            if not sessions:
                continue
            try:
                states = await read_states(sorted({s.grant_id for s in sessions}))
                requests = (
                    await read_terminations([s.session_id for s in sessions])
                    if read_terminations is not None
                    else {}
                )
                profiled = sorted({(s.grant_id, s.target) for s in sessions if s.under_profile})
                gone = (
                    await read_unreached(profiled)
                    if read_unreached is not None and profiled
                    else set()
                )
            except StoreUnavailable as e:  # one log line, not a traceback per pass
                self.state_unreadable(e)
                continue
            except Exception:  # keep the watcher alive through a store hiccup
                log.exception("cannot read grant states; retrying")
                continue
            self.state_readable()
            self.apply_terminations(requests)
            self.apply_unreached(gone, sessions)
            self.apply(states, sessions)
