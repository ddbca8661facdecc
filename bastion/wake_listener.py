"""This node's ear on the state store: LISTEN for other nodes' wake-ups (PostgreSQL only).

One dedicated psycopg connection in autocommit mode listens on ``WAKE_CHANNEL``;
each notification is handed to ``on_wake`` on the event loop. Losing the
connection is never fatal: it is logged, the time box's poll goes on covering
every change, and the connection is reopened with back-off. After every
(re)connection ``on_wake(None)`` asks for one full pass, since notifications sent
while nobody listened are lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from bastion.store.wakeups import WAKE_CHANNEL, Wakeup, parse_wakeup

__all__ = ["listens", "run_wake_listener"]

log = logging.getLogger(__name__)

FIRST_RETRY = 0.5
LAST_RETRY = 30.0
"""Back-off bounds (seconds) for reopening a lost listening connection."""


def listens(state_url: str) -> bool:
    """True if this state store can carry wake-ups (PostgreSQL; SQLite only polls)."""
    return state_url.startswith(("postgresql://", "postgres://"))


async def run_wake_listener(
    state_url: str, on_wake: Callable[[Wakeup | None], None], poll_interval: float
) -> None:
    """LISTEN until cancelled, calling ``on_wake`` for each wake-up (None: look at everything)."""
    delay = FIRST_RETRY
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                state_url,
                autocommit=True,
                application_name="bastion-listen",
                connect_timeout=10,
                # a half-open connection must not leave the node deaf for hours
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
            async with conn:
                await conn.execute(f"LISTEN {WAKE_CHANNEL}")
                log.info("listening for other nodes' wake-ups on %s", WAKE_CHANNEL)
                delay = FIRST_RETRY
                on_wake(None)
                async for note in conn.notifies():
                    wake = parse_wakeup(note.payload)
                    if wake is not None:
                        on_wake(wake)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an outage of the state store: the poll covers it
            log.warning(
                "not listening for other nodes' wake-ups (%s); terminations, locks and "
                "revocations from other nodes take up to the %gs poll; retrying in %.1fs",
                e,
                poll_interval,
                delay,
            )
        await asyncio.sleep(delay)
        delay = min(LAST_RETRY, delay * 2)
