"""A ``PolicyHook`` with fixed rules and no node around it, for tests and benchmarks.

The memo and the judgment are what the relay asks per statement; this builds just
enough of a node (a store with no groups, a clock that never makes the hook poll
again) to ask them in one process, as ``bench/pg_hotpath.py --rules`` and the
literal-key tests do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from bastion.policy.hook import PolicyHook
from bastion.policy.rules import Policy, Rule
from bastion.session.hooks import Verdict


def standalone_policy_hook(rules: Sequence[Rule]) -> tuple[PolicyHook, Any]:
    """(the hook with ``rules`` in force and the default allowing, one session of it)."""

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    node = SimpleNamespace(
        config=SimpleNamespace(
            timebox=SimpleNamespace(poll_interval=1e9), policy=SimpleNamespace(default="allow")
        ),
        store=SimpleNamespace(user_groups=lambda _uid: []),
        call=call,
    )
    hook = PolicyHook(node)  # type: ignore[arg-type]
    hook._policy = Policy(tuple(rules), Verdict.ALLOW)
    hook._sql_idle = not rules
    hook._checked_at = time.monotonic()
    target = SimpleNamespace(name="db", labels={})
    session = SimpleNamespace(id="s1", user=SimpleNamespace(id=1, name="u"), target=target)
    return hook, session
