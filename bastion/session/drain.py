"""A routine stop: tell every contractor, give them a grace period, end and seal everything.

What ``systemctl stop`` (SIGTERM) or Ctrl-C (SIGINT) does to a node. New sessions
are refused from the first moment; live ones are warned at once and ended with
reason ``node-stop`` after ``stop_grace`` seconds (or at once when the admin
asks again: ``hurry``); then the node waits until every recording is sealed with
its trailer and every row is final, so a routine restart never looks like a
crash to an auditor.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bastion.session.reasons import EndReason

if TYPE_CHECKING:
    from bastion.service import BastionNode

log = logging.getLogger(__name__)

SEAL_TIMEOUT = 60.0
"""How long the node waits for recordings to be sealed and rows written after the end."""


def _seconds(n: float) -> str:
    return f"{n:g} second" + ("" if n == 1 else "s")


async def drain_sessions(node: BastionNode, grace: float, hurry: asyncio.Event) -> int:
    """End every session on the node; returns how many were still unfinished at the end.

    Called once the listeners stopped accepting. ``hurry`` set (a second signal)
    cuts the grace period short; sealing still completes.
    """
    node.stopping = True
    sessions = node.sessions.all()
    if sessions:
        log.warning(
            "stopping: %d session(s) end in %s unless they end first",
            len(sessions),
            _seconds(grace),
        )
    for s in sessions:
        if not s.ending:
            s.warn(
                f"this node is stopping for maintenance; this session ends in {_seconds(grace)}; "
                "reconnect to continue"
            )
    if sessions and grace > 0 and not hurry.is_set():
        waiters = [
            asyncio.ensure_future(node.sessions.wait_empty(grace)),
            asyncio.ensure_future(hurry.wait()),
        ]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
    for s in node.sessions.all():
        s.terminate(EndReason.NODE_STOP, EndReason.NODE_STOP.words)
    if not await node.sessions.wait_empty(SEAL_TIMEOUT):
        left = node.sessions.all()
        log.error(
            "stopping: %d session(s) not sealed after %s: %s",
            len(left),
            _seconds(SEAL_TIMEOUT),
            ", ".join(s.id for s in left),
        )
        return len(left)
    return 0
