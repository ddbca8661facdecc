"""The node's guardrail hook: stored rules applied to exec commands, SQL and file paths.

Registered on every node at start. The rules are read from the state store and
kept; ``policy_version`` is checked at most once per ``[timebox] poll_interval``
(or at once after ``invalidate``, which SIGHUP may call) and the rules are
re-read only when it moved, so a change reaches every node within a poll.

Decisions come from ``bastion.policy.stored.decide``, the same code as
``bastion policy test``. Shadow matches and unanalysable texts are allowed (or
whatever the rules say) but reported as ``Flag``s: the core writes a marker and a
``policy.shadow`` / ``policy.unanalysable`` audit row. A ``hold`` decision goes to
the session core, which waits for approval (``bastion.session.hold``).

Rules naming ``KEY=VALUE`` match the labels the session's target had when the
session started (a relabel reaches the next session, as profile access does).
Statements are judged once per distinct text per session: a plain allow (no
flag) is kept in a per-session memo tied to the rules in force (by exact text, by
shape, and by a cheaper literal key checked against the shape), and ``cached``
answers from it (or at once when there are no SQL rules and the default is
allow) so the PostgreSQL relay forwards a repeated statement without a task
switch. A change of rules, the default or the poll interval passing sends the
next statement through ``statement`` again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bastion.errors import StoreUnavailable
from bastion.policy.rules import Policy, PolicyDecision, RuleKind
from bastion.policy.sql import literal_key, parse_statements, shape_of, trusts_key
from bastion.policy.stored import decide, policy_of
from bastion.session.hooks import Decision, Flag, SessionHook, Verdict

if TYPE_CHECKING:
    from bastion.service import BastionNode
    from bastion.session.core import Session

_MEMO_ENTRIES = 2048  # distinct statement texts remembered per session
_ALLOW = Decision(Verdict.ALLOW, hook="policy")
_SHAPE = "\x00shape:"  # no SQL text starts with NUL: shapes and texts never collide
_UNKEYED = Decision(Verdict.DENY, "literal key not trusted", hook="policy")
"""Kept for a literal key that ``trusts_key`` refused: its texts go by shape (never
returned by ``find``; were it, a deny only sends the text to a full judgment)."""


@dataclass
class _Memo:
    """One session's groups and plainly allowed statements under one ``Policy``."""

    policy: Policy
    groups: tuple[str, ...]
    idle: bool
    """No SQL rule applies to this user on this target and the default allows."""
    allowed: OrderedDict[str, Decision] = field(default_factory=OrderedDict)
    """Exact texts, and ``shape:``-prefixed shapes (see ``bastion.policy.sql.shape_of``)."""
    shapes: bool = False
    """Some shape is kept: a text not found is worth normalising."""
    keys: OrderedDict[str, Decision] = field(default_factory=OrderedDict)
    """Literal keys (``bastion.policy.sql.literal_key``) of kept shapes, or ``_UNKEYED``.
    Apart from ``allowed``: the digit counts of a statement's numbers make a few keys
    per shape (many for many numbers), and they must not push shapes out."""

    def keep(self, text: str, decision: Decision) -> None:
        self.allowed[text] = decision
        if len(self.allowed) > _MEMO_ENTRIES:
            self.allowed.popitem(last=False)

    def keep_shape(self, text: str, shape: str, decision: Decision) -> None:
        """Remember ``decision`` for every text of ``text``'s shape (and literal key)."""
        self.keep(_SHAPE + shape, decision)
        key = literal_key(text)
        if key is not None:
            self._keep_key(key, shape, decision)
        self.shapes = True

    def _keep_key(self, key: str, shape: str, decision: Decision) -> None:
        keys = self.keys
        keys[key] = decision if trusts_key(key, shape) else _UNKEYED
        if len(keys) > _MEMO_ENTRIES:
            keys.popitem(last=False)

    def find(self, text: str) -> Decision | None:
        found = self.allowed.get(text)
        if found is not None or not self.shapes or "\\" in text:
            return found  # a backslash: its exact text only (``rules.decide_sql``)
        key = literal_key(text)  # ~0.3 µs against ~3 µs for normalize
        if key is not None:
            found = self.keys.get(key)
            if found is not None and found is not _UNKEYED:
                return found
        shape = shape_of(text)
        if shape is None:
            return None
        by_shape = self.allowed.get(_SHAPE + shape)
        if by_shape is not None and key is not None and found is None:  # a new key
            self._keep_key(key, shape, by_shape)
        return by_shape


_RULE_KINDS = {"command": RuleKind.COMMAND, "statement": RuleKind.SQL, "file": RuleKind.FILE}


class PolicyHook(SessionHook):
    """Judges commands, statements and files against the stored rules."""

    name = "policy"

    def __init__(self, node: BastionNode, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self._clock = clock
        self._policy: Policy | None = None
        self._version: int | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        self._sql_idle = False  # the rules in force have no SQL rule and the default allows
        self._memos: dict[str, _Memo] = {}

    def invalidate(self) -> None:
        """Check the stored version at the next decision (SIGHUP, tests)."""
        self._checked_at = float("-inf")

    async def current(self) -> Policy:
        """The rules in force: re-read only when the stored version changed.

        Raises (and the hook call then denies) when the store cannot be read and
        no rules were ever loaded, or when a stored rule cannot apply.
        """
        node = self.node
        async with self._lock:
            now = self._clock()
            fresh = now - self._checked_at < node.config.timebox.poll_interval
            default = node.config.policy.default
            if self._policy is not None and fresh and self._policy.default.value == default:
                return self._policy
            try:
                version = await node.call(node.store.policy_version)
            except StoreUnavailable:
                if self._policy is None:
                    raise
                return self._policy  # the rules last read, for the outage grace
            if (
                self._policy is None
                or version != self._version
                or (self._policy.default.value != default)
            ):
                version, stored = await node.call(node.store.policy_snapshot)
                self._policy = policy_of(stored, default)
                self._version = version
                self._sql_idle = self._policy.default is Verdict.ALLOW and not any(
                    r.kind is RuleKind.SQL for r in self._policy.rules
                )
            self._checked_at = now
            return self._policy

    async def _decide(self, session: Session, kind: str, text: str, exact: bool) -> Decision:
        policy = await self.current()
        if not policy.rules and policy.default is Verdict.ALLOW:
            return Decision(Verdict.ALLOW, hook=self.name)  # nothing to parse for
        node = self.node
        memo: _Memo | None = None
        if kind == "statement":
            memo = self._memos.get(session.id)
            if memo is None or memo.policy is not policy:
                groups = tuple(await node.call(node.store.user_groups, session.user.id))
                idle = policy.default is Verdict.ALLOW and not any(
                    r.kind is RuleKind.SQL
                    and r.applies_to(
                        session.user.name, groups, session.target.name, session.target.labels
                    )
                    for r in policy.rules
                )
                memo = self._memos[session.id] = _Memo(policy, groups, idle)
            groups = memo.groups
        else:
            groups = tuple(await node.call(node.store.user_groups, session.user.id))
        d = decide(
            policy,
            kind,
            user=session.user.name,
            groups=groups,
            target=session.target.name,
            labels=session.target.labels,
            text=text,
            exact=exact,
        )
        decision = _hook_decision(d, self.name)
        if memo is not None and decision.verdict is Verdict.ALLOW and not decision.flags:
            memo.keep(text, decision)
            shape = None
            if "\\" not in text and parse_statements(text).shape_decides:
                shape = shape_of(text)  # a backslash: read two ways, no shape stands for it
            if shape is not None:
                memo.keep_shape(text, shape, decision)
        return decision

    def cached(self, session: Session, kind: str, text: str) -> Decision | None:
        """A statement's plain allow, known without the store; None: call ``statement``."""
        policy = self._policy
        if kind != "statement" or policy is None:
            return None
        config = self.node.config
        if self._clock() - self._checked_at >= config.timebox.poll_interval:
            return None  # the rules may have changed: ``current`` checks
        if policy.default != config.policy.default:  # a StrEnum: no ``.value`` (~0.15 µs)
            return None
        if self._sql_idle:
            return _ALLOW
        memo = self._memos.get(session.id)
        if memo is None or memo.policy is not policy:
            return None
        if memo.idle:
            return _ALLOW
        return memo.find(text)

    async def ended(self, session: Session) -> None:
        """Forget the session's memo."""
        self._memos.pop(session.id, None)

    async def watches(self, session: Session, kind: str) -> bool:
        """A rule of ``kind`` covers this user on this target, or the default denies."""
        policy = await self.current()
        if policy.default is Verdict.DENY:
            return True
        rule_kind = _RULE_KINDS.get(kind)
        rules = [r for r in policy.rules if r.kind is rule_kind]
        if not rules:
            return False
        node = self.node
        groups = await node.call(node.store.user_groups, session.user.id)
        user, target = session.user.name, session.target
        return any(r.applies_to(user, groups, target.name, target.labels) for r in rules)

    async def command(self, session: Session, text: str, exact: bool) -> Decision:
        """An exec command (exact) or a typed line (best effort)."""
        return await self._decide(session, "command", text, exact)

    async def statement(self, session: Session, sql: str) -> Decision:
        """One SQL text (Query or Parse)."""
        return await self._decide(session, "statement", sql, True)

    async def file(self, session: Session, path: str, operation: str) -> Decision:
        """One scp/sftp path."""
        return await self._decide(session, "file", path, True)


def _hook_decision(d: PolicyDecision, hook: str) -> Decision:
    """The core's ``Decision``, with shadow matches and unanalysable parts as flags."""
    flags = [
        Flag("shadow", f"rule {name!r} matched (shadow, not enforced)", rule=name)
        for name in d.shadow
    ]
    if d.unanalysable:
        flags.append(
            Flag("unanalysable", f"cannot be analysed ({d.unanalysable}); {d.action.value}")
        )
    base = d.hook_decision(hook)
    return Decision(base.verdict, base.reason, base.rule, base.hook, tuple(flags))
