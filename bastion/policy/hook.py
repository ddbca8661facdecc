"""The node's guardrail hook: stored rules applied to exec commands, SQL and file paths.

Registered on every node at start. The rules are read from the state store and
kept; ``policy_version`` is checked at most once per ``[timebox] poll_interval``
(or at once after ``invalidate``, which SIGHUP may call) and the rules are
re-read only when it moved, so a change reaches every node within a poll.

Decisions come from ``bastion.policy.stored.decide``, the same code as
``bastion policy test``. Shadow matches and unanalysable texts are allowed (or
whatever the rules say) but reported as ``Flag``s: the core writes a marker and a
``policy.shadow`` / ``policy.unanalysable`` audit row. ``hold`` is not wired to
approvals yet: it refuses, saying so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.policy.rules import Policy, PolicyDecision, RuleKind
from bastion.policy.stored import decide, policy_of
from bastion.session.hooks import Decision, Flag, SessionHook, Verdict

if TYPE_CHECKING:
    from bastion.service import BastionNode
    from bastion.session.core import Session

HOLD_NOT_AVAILABLE = "held for approval is not available yet"
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
            version = await node.call(node.store.policy_version)
            if (
                self._policy is None
                or version != self._version
                or (self._policy.default.value != default)
            ):
                version, stored = await node.call(node.store.policy_snapshot)
                self._policy = policy_of(stored, default)
                self._version = version
            self._checked_at = now
            return self._policy

    async def _decide(self, session: Session, kind: str, text: str, exact: bool) -> Decision:
        policy = await self.current()
        if not policy.rules and policy.default is Verdict.ALLOW:
            return Decision(Verdict.ALLOW, hook=self.name)  # nothing to parse for
        node = self.node
        groups = await node.call(node.store.user_groups, session.user.id)
        d = decide(
            policy,
            kind,
            user=session.user.name,
            groups=groups,
            target=session.target.name,
            labels={},  # targets have no labels yet
            text=text,
            exact=exact,
        )
        return _hook_decision(d, self.name)

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
        return any(r.applies_to(session.user.name, groups, session.target.name, {}) for r in rules)

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
    if d.action is Verdict.HOLD:
        base = Decision(Verdict.HOLD, f"{d.reason}; {HOLD_NOT_AVAILABLE}", d.rule, hook)
    return Decision(base.verdict, base.reason, base.rule, base.hook, tuple(flags))
