"""Watching a session that runs on another node: this node relays from the owner.

The admin's console talks to one node. When the session it asks to watch runs on
another node of the fleet, this node opens a control connection to the owner's
TCP+TLS control listener as found in the node registry, and forwards the stream.

- **Trust**: the owner's control certificate (its node CA, whose key was thrown
  away after signing the one leaf) is pinned from the registry row; no system CA
  and no host-name check, since the registered address may be any IP the leaf
  does not name. Whoever can rewrite the registry can rewrite grants too.
- **Authentication**: this node mints a control token for the relaying admin in
  the shared store (valid ``RELAY_TOKEN_TTL`` seconds), says ``hello`` with it,
  asks for the watch and revokes it as soon as the owner has answered that one
  request (the owner re-checks the token before each request, so it must outlive
  the hello by one request, no more): the owner checks the admin's role, lock and token
  itself and audits ``control.watch`` under the admin's name, exactly as for a
  console connected to it. No node-wide credential exists that could be stolen
  and replayed.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import AsyncIterator

from bastion.control.auth import token_hash
from bastion.control.client import ControlClient
from bastion.control.messages import ControlError, LiveEvent
from bastion.service import BastionNode
from bastion.store.models import NodeRecord, TokenPurpose

__all__ = ["RELAY_TOKEN_TTL", "peer_address", "relay_watch"]

RELAY_TOKEN_TTL = 30.0
"""Seconds a relay token could be used; it is revoked after its one watch request anyway."""

RELAY_TOKEN_PREFIX = "bct_relay_"  # noqa: S105  a public prefix


def peer_address(peer: NodeRecord) -> tuple[str, int]:
    """``(host, port)`` of a node's TCP control listener; ControlError if it has none."""
    addr = peer.control_addr
    if not addr or addr.startswith("unix:") or not peer.control_cert:
        raise ControlError(
            f"node {peer.name} has no TCP control listener, so its sessions can be watched "
            f"only there; set [control] listen on {peer.name} (or watch through its console)"
        )
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def pinned_context(pem: str) -> ssl.SSLContext:
    """A TLS client context that trusts only ``pem`` (the peer's registered anchor)."""
    ctx = ssl.create_default_context(cadata=pem)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def open_peer(node: BastionNode, peer: NodeRecord, admin: str) -> tuple[ControlClient, int]:
    """A control connection to ``peer`` authenticated as ``admin``, and the id of the
    token minted for it, for the caller to revoke (raises ControlError)."""
    host, port = peer_address(peer)
    assert peer.control_cert is not None  # noqa: S101  checked by peer_address
    user = await node.call(node.store.get_user, admin)
    if user is None:
        raise ControlError(f"no bastion user named '{admin}'")
    token = RELAY_TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = node.clock()
    record = await node.call(
        lambda: node.store.add_token(
            purpose=TokenPurpose.CONTROL,
            user_id=user.id,
            token_hash=token_hash(token),
            expires_at=now + RELAY_TOKEN_TTL,
            now=now,
            created_from=f"relay:{node.node}",
        )
    )
    try:
        client = await ControlClient.connect_tcp(
            host, port, user=admin, token=token, context=pinned_context(peer.control_cert)
        )
    except BaseException:
        await _revoke(node, record.id)
        raise
    return client, record.id


async def _revoke(node: BastionNode, token_id: int) -> None:
    await node.call(node.store.revoke_token, token_id, f"relay:{node.node}", node.clock())


async def relay_watch(
    node: BastionNode, peer: NodeRecord, admin: str, session_id: str
) -> AsyncIterator[LiveEvent]:
    """The owner's watch stream of ``session_id``, event by event (ends with LiveEnd).

    The relay's token is revoked once the owner answered the watch request (its first
    event), or when the relay ends without one.
    """
    client, token_id = await open_peer(node, peer, admin)
    revoked = False
    try:
        async for event in client.watch(session_id):
            if not revoked:
                revoked = True
                await _revoke(node, token_id)
            yield event
    finally:
        if not revoked:
            await _revoke(node, token_id)
        await client.close()
