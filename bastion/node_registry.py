"""This node's row in the fleet: register at start, heartbeat, notice a drain, sign off.

Every node sharing a state store registers where its SSH, PostgreSQL and control
listeners are, so a console or CLI on any node can find the others, and beats
every ``HEARTBEAT_SECONDS`` so one that died without a word shows as silent. The
heartbeat is also how a drain asked on another node (``bastion node drain``)
reaches this one: no node-to-node channel is needed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bastion import __version__
from bastion.store.models import HEARTBEAT_SECONDS, NodeRecord
from bastion.store.wakeups import WakeKind, Wakeup

if TYPE_CHECKING:
    from bastion.service import BastionNode

log = logging.getLogger(__name__)

WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104  compared against, never bound


def reachable(host: str, port: int) -> str:
    """``host:port`` peers can dial: a wildcard listen address becomes this host's name."""
    if host in WILDCARDS:
        host = socket.getfqdn()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_address(sockets: Sequence[object]) -> str | None:
    """Where peers reach a listener (its first socket), or None.

    A listener on every address (``0.0.0.0``) registers this host's name instead,
    because other nodes dial what is registered (cancel forwarding, watch relays).
    """
    for sock in sockets:
        name = sock.getsockname()  # type: ignore[attr-defined]
        if isinstance(name, tuple):
            return reachable(str(name[0]), int(name[1]))
    return None


def control_address(node: BastionNode) -> tuple[str | None, str | None]:
    """Where peers reach this node's control API, and the PEM they should trust for it.

    Only the TCP+TLS listener is reachable from another host; a node with just the
    Unix socket registers ``unix:PATH`` (usable by a CLI on the same machine).
    """
    cfg = node.config.control
    if cfg.listen is not None:
        from bastion.pg.tls_cert import ca_path

        anchor = ca_path(cfg.tls_cert)
        pem_file = anchor if anchor.exists() else cfg.tls_cert
        pem = pem_file.read_text() if pem_file.exists() else None
        return reachable(*cfg.listen), pem
    if cfg.socket is not None:
        return f"unix:{Path(cfg.socket).resolve()}", None
    return None, None


def this_node(
    node: BastionNode, ssh_sockets: Sequence[object], pg_sockets: Sequence[object]
) -> NodeRecord:
    """The row this node registers, as of now."""
    now = time.time()
    control, cert = control_address(node)
    return NodeRecord(
        name=node.node,
        pid=os.getpid(),
        version=__version__,
        ssh_addr=listen_address(ssh_sockets),
        pg_addr=listen_address(pg_sockets),
        control_addr=control,
        control_cert=cert,
        started_at=now,
        heartbeat_at=now,
        stopped_at=None,
        draining_until=None,
    )


async def run_heartbeat(
    node: BastionNode,
    on_drain: Callable[[float], None],
    interval: float = HEARTBEAT_SECONDS,
    woken: asyncio.Event | None = None,
) -> None:
    """Beat every ``interval`` until cancelled; call ``on_drain(deadline)`` once when asked.

    A failed beat is logged and retried on the next tick: a state store that is
    down is the outage handling's business, not a reason to stop the node.
    ``woken`` set (a drain's NOTIFY) makes the next beat at once.
    """
    woken = woken or asyncio.Event()
    drained = False
    while True:
        try:
            deadline = await node.call(node.store.node_heartbeat, node.node, node.clock())
        except Exception as exc:  # keep beating; the store's outage is reported elsewhere
            log.warning("node heartbeat not written: %s", exc)
        else:
            if deadline is not None and not drained:
                drained = True
                on_drain(deadline)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), interval)
        woken.clear()


async def drain_then_stop(node: BastionNode, deadline: float, stop: asyncio.Event) -> None:
    """Wait until this node has no live session or ``deadline`` passes, then stop it.

    The listeners are already closed when this runs; the stop that follows is the
    routine one, so sessions still running at the deadline end as ``node-stop``.
    """
    while len(node.sessions) and node.clock() < deadline:  # noqa: ASYNC110  sessions end in many places; a half-second look is plenty
        await asyncio.sleep(min(0.5, max(0.05, deadline - node.clock())))
    stop.set()


class Listener(Protocol):
    """What the registry needs of a listener (asyncio's server, asyncssh's acceptor)."""

    @property
    def sockets(self) -> Sequence[Any]: ...

    def close(self) -> None: ...


class FleetMembership:
    """This node's part in the fleet for one ``serve``: registered row, heartbeat, drain."""

    def __init__(
        self, node: BastionNode, listeners: Sequence[Listener], stop: asyncio.Event
    ) -> None:
        self._node = node
        self._listeners = listeners
        self._stop = stop
        self.draining_until: float | None = None
        """Set when an admin's drain reached this node."""
        self._beat_now = asyncio.Event()

    async def join(self) -> None:
        """Register this node and start beating; a drain closes the listeners, then stops.

        On a PostgreSQL state store it also listens for other nodes' wake-ups, so
        a terminate, lock, revocation or drain asked anywhere acts here at once.
        """
        node = self._node
        sockets = [list(server.sockets) for server in self._listeners]
        ssh, pg = sockets[0], (sockets[1] if len(sockets) > 1 else [])
        await node.call(node.store.register_node, this_node(node, ssh, pg))
        node.spawn(run_heartbeat(node, self._on_drain, woken=self._beat_now))
        from bastion.wake_listener import listens, run_wake_listener

        if listens(node.config.state_url):
            node.spawn(
                run_wake_listener(
                    node.config.state_url, self.on_wake, node.config.timebox.poll_interval
                )
            )

    def on_wake(self, wake: Wakeup | None) -> None:
        """Another node's signal: run the time-box pass or the heartbeat now if it concerns us."""
        live = self._node.live
        if wake is None:
            live.wake()
            self._beat_now.set()
        elif wake.kind is WakeKind.SESSION and live.serves(session=wake.value):
            live.wake()
        elif wake.kind is WakeKind.GRANT and wake.value.isdigit():
            if live.serves(grant=int(wake.value)):
                live.wake()
        elif wake.kind is WakeKind.NODE and wake.value == self._node.node:
            self._beat_now.set()

    def _on_drain(self, deadline: float) -> None:
        node = self._node
        log.warning(
            "drain asked: no new connections; stopping in at most %.0fs",
            max(0.0, deadline - node.clock()),
        )
        self.draining_until = deadline
        for server in self._listeners:
            server.close()
        node.spawn(drain_then_stop(node, deadline, self._stop))

    def problem(self) -> str | None:
        """Why ``/healthz`` should say unhealthy because of the fleet (a drain), or None."""
        if self.draining_until is not None:
            return f"node {self._node.node} is draining"
        return None

    async def leave(self) -> None:
        """Mark this node stopped (a routine stop; a crash leaves the row silent)."""
        try:
            await self._node.call(
                self._node.store.node_stopped, self._node.node, self._node.clock()
            )
        except Exception as exc:  # the stop goes on; the row then shows the node silent
            log.warning("could not mark the node stopped in the state store: %s", exc)
