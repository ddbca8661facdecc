"""Hooks: where other parts of the bastion observe sessions and decide about them.

A hook is a small object registered on the node at start (mitmproxy's addons are
the model); it never edits an adapter. Each method sees typed values and returns
a decision; the defaults allow everything and observe nothing, so a hook
implements only what it cares about.

- ``admit(request)`` runs before a session exists (access requests, engagements,
  hours). Any non-allow verdict refuses.
- ``command`` / ``statement`` / ``file`` run once per exec command, typed line,
  SQL statement or transferred path (guardrails), never per byte.
- ``observe(session, event)`` sees what happens (alerts, counters); it must not
  block, and it cannot stop anything.
- ``ended(session)`` runs after the final row (notifications, clean-up).

A hook that raises fails closed where it decides (admit and policy refuse) and
is only logged where it observes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from bastion.store.models import Grant, Target, User

if TYPE_CHECKING:
    from bastion.session.core import Session

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    """What a hook decides, from mildest to strictest."""

    ALLOW = "allow"
    WARN = "warn"
    HOLD = "hold"
    DENY = "deny"
    TERMINATE = "terminate"
    LOCK = "lock"

    @property
    def severity(self) -> int:
        """Order used to combine several hooks' answers: the strictest wins."""
        return _SEVERITY[self]

    @property
    def lets_through(self) -> bool:
        """The command or statement may run (``hold`` still pending counts as no)."""
        return self in (Verdict.ALLOW, Verdict.WARN)


_SEVERITY = {v: i for i, v in enumerate(Verdict)}


@dataclass(frozen=True)
class Flag:
    """Something a judging hook reports without changing its verdict (an alert)."""

    name: str
    """``shadow`` (a rule being tried matched), ``unanalysable`` (could not be judged)."""
    words: str
    rule: str | None = None


@dataclass(frozen=True)
class Decision:
    """A hook's answer: the verdict, the words for the contractor and the rule behind it."""

    verdict: Verdict
    reason: str = ""
    rule: str | None = None
    hook: str | None = None
    flags: tuple[Flag, ...] = ()
    """Reported, not enforced: the core writes a marker and a ``policy.<name>`` row each."""


ALLOW = Decision(Verdict.ALLOW)


@dataclass(frozen=True)
class AdmissionRequest:
    """A session about to be admitted: who, to what, under which grant, asking for what."""

    user: User
    target: Target
    grant: Grant
    protocol: str
    kind: str
    """shell, exec, subsystem, forward, postgres."""
    login: str | None
    client_addr: str
    command: str | None = None


@dataclass(frozen=True)
class SessionEvent:
    """Base of what ``observe`` sees."""


@dataclass(frozen=True)
class SessionStarted(SessionEvent):
    """The session is live: bytes flow."""


@dataclass(frozen=True)
class CommandSeen(SessionEvent):
    """A command line was judged: ``exact`` for exec requests, best effort for typed lines."""

    text: str
    exact: bool
    decision: Decision


@dataclass(frozen=True)
class StatementSeen(SessionEvent):
    """A SQL statement was judged."""

    text: str
    decision: Decision


@dataclass(frozen=True)
class FileSeen(SessionEvent):
    """A file path of scp/sftp was judged."""

    path: str
    operation: str
    decision: Decision


@dataclass(frozen=True)
class VolumeCrossed(SessionEvent):
    """The bytes sent to the contractor passed another power-of-two MiB mark."""

    bytes_out: int
    bytes_in: int


@dataclass(frozen=True)
class RowsReturned(SessionEvent):
    """A SQL request finished; ``rows``: the most one of its statements sent to the client."""

    sql: str | None
    rows: int


@dataclass(frozen=True)
class FileDownloaded(SessionEvent):
    """scp/sftp finished sending a file to the contractor; ``total``: the session's sum."""

    path: str
    bytes: int
    total: int


@dataclass(frozen=True)
class SessionEnded(SessionEvent):
    """The session's end was decided (the final row follows)."""

    reason: str


class SessionHook:
    """Base class: every method allows or ignores; override what the hook is for."""

    name = "hook"

    async def admit(self, request: AdmissionRequest) -> Decision:
        """Allow or refuse a session before it starts."""
        return ALLOW

    async def command(self, session: Session, text: str, exact: bool) -> Decision:
        """Judge one command line (exec: exact; typed line: best effort)."""
        return ALLOW

    async def statement(self, session: Session, sql: str) -> Decision:
        """Judge one SQL statement text."""
        return ALLOW

    async def file(self, session: Session, path: str, operation: str) -> Decision:
        """Judge one transferred path (``operation``: read, write, remove, ...)."""
        return ALLOW

    def cached(self, session: Session, kind: str, text: str) -> Decision | None:
        """The decision this hook would give now, if it knows it without waiting; else None.

        Lets a relay forward a statement it has judged before without a task switch.
        None (the default) always sends the caller through ``judge``.
        """
        return None

    async def watches(self, session: Session, kind: str) -> bool:
        """Whether this hook could judge ``kind`` other than allow in ``session``.

        Adapters ask once before doing per-line work (rebuilding typed terminal
        lines, holding SFTP requests); the default is "yes" for a hook that
        implements ``kind``.
        """
        return getattr(type(self), kind, None) is not getattr(SessionHook, kind, None)

    def observe(self, session: Session, event: SessionEvent) -> None:
        """See what happens; must return quickly and never raise on purpose."""

    async def ended(self, session: Session) -> None:
        """The session's final row is written."""


def _strictest(decisions: Sequence[Decision]) -> Decision:
    return max(decisions, key=lambda d: d.verdict.severity, default=ALLOW)


class Hooks:
    """The hooks registered on one node, called in registration order."""

    def __init__(self, hooks: Sequence[SessionHook] = ()) -> None:
        self._hooks: list[SessionHook] = list(hooks)
        self._judges: list[SessionHook] = []
        self._observers: list[SessionHook] = []
        self._refresh()

    def register(self, hook: SessionHook) -> None:
        """Add a hook (at start, before sessions run)."""
        self._hooks.append(hook)
        self._refresh()

    def _refresh(self) -> None:
        base = SessionHook
        judging = ("command", "statement", "file")
        self._judges = [
            h
            for h in self._hooks
            if any(getattr(type(h), m) is not getattr(base, m) for m in judging)
        ]
        self._observers = [h for h in self._hooks if type(h).observe is not base.observe]

    @property
    def judging(self) -> bool:
        """Some hook judges commands, statements or files (adapters skip the work otherwise)."""
        return bool(self._judges)

    @property
    def observing(self) -> bool:
        """Some hook observes events."""
        return bool(self._observers)

    async def admit(self, request: AdmissionRequest) -> Decision:
        """The strictest answer of every hook; a hook that raises refuses (fail closed)."""
        answers: list[Decision] = []
        for hook in self._hooks:
            try:
                answers.append(await hook.admit(request))
            except Exception:
                log.exception("admission hook %s failed; refusing", hook.name)
                return Decision(Verdict.DENY, "a bastion check failed", hook=hook.name)
        return _strictest(answers)

    async def judge(self, session: Session, kind: str, text: str, extra: str = "") -> Decision:
        """Ask every judging hook about a command, statement or file (``kind``).

        The strictest answer wins; a hook that raises denies (fail closed).
        """
        answers: list[Decision] = []
        for hook in self._judges:
            try:
                if kind == "command":
                    answers.append(await hook.command(session, text, extra == "exact"))
                elif kind == "statement":
                    answers.append(await hook.statement(session, text))
                else:
                    answers.append(await hook.file(session, text, extra))
            except Exception:
                log.exception("policy hook %s failed; denying", hook.name)
                return Decision(Verdict.DENY, "a bastion check failed", hook=hook.name)
        best = _strictest(answers)
        flags = tuple(f for a in answers for f in a.flags)
        return replace(best, flags=flags) if flags != best.flags else best

    def cached(self, session: Session, kind: str, text: str) -> Decision | None:
        """Every judging hook's known answer, strictest first; None if one does not know."""
        judges = self._judges
        if len(judges) == 1:  # the node's policy hook alone: once per statement, ~1 µs less
            return judges[0].cached(session, kind, text)
        answers: list[Decision] = []
        for hook in judges:
            found = hook.cached(session, kind, text)
            if found is None:
                return None
            answers.append(found)
        return _strictest(answers)

    async def watches(self, session: Session, kind: str) -> bool:
        """Some judging hook could refuse ``kind`` here (one that fails to say: yes)."""
        for hook in self._judges:
            try:
                if await hook.watches(session, kind):
                    return True
            except Exception:
                log.exception("policy hook %s failed to say what it watches", hook.name)
                return True
        return False

    def observe(self, session: Session, event: SessionEvent) -> None:
        """Tell every observer; a failing observer is logged and skipped."""
        for hook in self._observers:
            try:
                hook.observe(session, event)
            except Exception:
                log.exception("observer hook %s failed on %s", hook.name, type(event).__name__)

    async def ended(self, session: Session) -> None:
        """Tell every hook the session ended; failures are logged."""
        for hook in self._hooks:
            try:
                await hook.ended(session)
            except Exception:
                log.exception("end hook %s failed for session %s", hook.name, session.id)
