"""CancelRequest routing: the client knows our key, only we know the target's.

Each client connection gets a fresh random (pid, secret) from the bastion in
its BackendKeyData; the target's real key never leaves the node (a client that
knew it could cancel other users' queries on the target directly, and it would
reveal the target's backend pid). A CancelRequest arriving on a new connection
is looked up here and replayed to the right target with the real key.

In a fleet a load balancer may send the CancelRequest to another node than the
one holding the connection. Each node therefore records in the state store which
node handed out each client-facing pid (never the secret, which stays in the
owner's memory). A node that does not know a key asks the store; if another
registered node owns it, the 16-byte request goes unchanged to that node's
PostgreSQL listener, which checks the secret like any cancel. Loops are bounded:
a node forwards only a key the store assigns to another node, and the owner drops
what it does not hold instead of forwarding. A key nobody issued does nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from dataclasses import dataclass

from bastion.pg.encoding import encode
from bastion.pg.messages import BackendKeyData, CancelRequest

log = logging.getLogger(__name__)

__all__ = ["CancelRoute", "CancelRoutes", "forward_cancel", "send_cancel"]


@dataclass(frozen=True)
class CancelRoute:
    """Where a cancel for one client connection must go."""

    session_id: str
    user: str
    target: str
    host: str
    port: int
    upstream_key: BackendKeyData
    secret: bytes


class CancelRoutes:
    """This node's map from the keys it handed out to the targets' keys."""

    def __init__(self) -> None:
        self._routes: dict[int, CancelRoute] = {}

    def issue(
        self, *, session_id: str, user: str, target: str, host: str, port: int,
        upstream_key: BackendKeyData,
    ) -> BackendKeyData:  # fmt: skip
        """A fresh client-facing key for a new connection, registered until ``forget``."""
        while True:
            pid = secrets.randbelow(2**31 - 2) + 1
            if pid not in self._routes:
                break
        secret = secrets.token_bytes(4)
        self._routes[pid] = CancelRoute(session_id, user, target, host, port, upstream_key, secret)
        return BackendKeyData(pid, secret)

    def reissue(self, pid: int) -> BackendKeyData:
        """A new key for the connection that had ``pid`` (another node holds that pid)."""
        route = self._routes.pop(pid)
        return self.issue(
            session_id=route.session_id, user=route.user, target=route.target,
            host=route.host, port=route.port, upstream_key=route.upstream_key,
        )  # fmt: skip

    def forget(self, pid: int) -> None:
        """The connection ended; its key no longer cancels anything."""
        self._routes.pop(pid, None)

    def find(self, pid: int, secret: bytes) -> CancelRoute | None:
        """The route for a CancelRequest, if the key is one we issued (constant-time secret)."""
        route = self._routes.get(pid)
        if route is None or not hmac.compare_digest(route.secret, secret):
            return None
        return route

    def __len__(self) -> int:
        return len(self._routes)


async def send_cancel(route: CancelRoute, timeout: float) -> None:  # noqa: ASYNC109  caller in pg/connection.py
    """Replay a cancel to the target with its real key (PostgreSQL answers by closing)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(route.host, route.port), timeout
    )
    try:
        key = route.upstream_key
        writer.write(encode(CancelRequest(key.pid, key.secret)))
        await writer.drain()
        await asyncio.wait_for(reader.read(1), timeout)  # the server closes when done
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError as e:
            log.debug("closing cancel connection: %s", e)


async def forward_cancel(host: str, port: int, request: CancelRequest, timeout: float) -> None:  # noqa: ASYNC109  caller in pg/connection.py
    """Hand a CancelRequest as it came to the node that issued its key (it answers by closing)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(encode(request))
        await writer.drain()
        await asyncio.wait_for(reader.read(1), timeout)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError as e:
            log.debug("closing forwarded cancel connection: %s", e)
