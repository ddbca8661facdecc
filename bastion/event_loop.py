"""Which asyncio event loop runs the node.

uvloop (libuv, with transports and TLS written in Cython) halves the cost of
the event loop itself on the relays' hot paths: a byte-forwarding PostgreSQL
relay with TLS measured 29 µs of CPU per pgbench transaction on uvloop against
39 µs on the standard loop. The standard loop stays available for platforms
without uvloop and for debugging (``[node] event_loop = "asyncio"``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from bastion.errors import ConfigError

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]
LOOP_CHOICES: tuple[LoopChoice, ...] = ("auto", "uvloop", "asyncio")


class EventLoopUnavailable(ConfigError):
    """``event_loop = "uvloop"`` was asked for but uvloop is not installed."""


def resolve(choice: LoopChoice) -> Literal["uvloop", "asyncio"]:
    """The loop ``choice`` means on this machine ("auto": uvloop when installed)."""
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    if choice == "asyncio":
        return "asyncio"
    if choice == "uvloop" and not have_uvloop:
        raise EventLoopUnavailable(
            '[node] event_loop = "uvloop" but uvloop is not installed; '
            'install it (pip install uvloop) or set event_loop = "auto"'
        )
    return "uvloop" if have_uvloop else "asyncio"


def run(main: Coroutine[Any, Any, T], choice: LoopChoice = "auto") -> T:
    """Run ``main`` to completion on the chosen loop, like ``asyncio.run``."""
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.run(main)
    import asyncio  # here, not at the top: the config names LOOP_CHOICES for every command

    return asyncio.run(main)
