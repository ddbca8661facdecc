"""What both listeners do about guessing: the per-address block and penalties.

The listeners key everything on the one peer-address string they already pass to
``StartupLimits.admit`` (the socket's peer, or the PROXY-protocol client address
where that is in use), through ``source_of``: an IPv4 address or an IPv6 /64.

* ``address_refusal``: asked once per login attempt (SSH ``begin_auth``, the
  PostgreSQL password), reads the state DB so a block made by any node holds.
* ``address_failed``: counts one failed login against the source in the state
  DB; the failure that reaches ``[login_limits] address_max_failures`` blocks the
  source (audited ``address.blocked``, once, by the node that counted it).
* ``ended_unauthenticated``: a connection left without logging in; its source
  accrues per-source penalty seconds (in memory, ``bastion.penalties``).
"""

from __future__ import annotations

import logging
import math

from bastion import audit_actions
from bastion.errors import StoreError
from bastion.login_limits import STRIKES_FORGOTTEN
from bastion.service import BastionNode
from bastion.startups import source_of

log = logging.getLogger(__name__)


def blocked_message(source: str, until: float, now: float) -> str:
    """What a blocked source is told: why, for how long, and who can lift it."""
    minutes = max(1, math.ceil((until - now) / 60))
    return (
        f"too many failed logins from {source}; logins from there are refused for "
        f"{minutes} more minute(s) (ask an admin: 'bastion lockouts unblock {source}')"
    )


async def address_refusal(node: BastionNode, host: str) -> str | None:
    """Why logins from ``host`` are refused now (a block in the state DB), or None."""
    if node.config.login_limits.address_max_failures <= 0:
        return None
    source = source_of(host)
    now = node.clock()
    try:
        block = await node.call(node.store.address_block, source, now)
    except StoreError as e:
        # Without the state DB the login fails at the user lookup anyway, with the
        # reason the contractor is meant to read; this check adds nothing then.
        log.warning("cannot read the block of %s: %s", source, e)
        return None
    if block is None:
        return None
    return blocked_message(source, block.until, now)


async def address_failed(node: BastionNode, host: str, user: str, reason: str) -> None:
    """Count one failed login from ``host`` (any user); block the source at the limit."""
    limits = node.config.login_limits
    if limits.address_max_failures <= 0:
        return
    source = source_of(host)
    try:
        block = await node.call(
            node.store.record_address_failure,
            source,
            user,
            reason,
            node.clock(),
            max_failures=limits.address_max_failures,
            window=limits.address_window,
            block_seconds=(limits.address_block, limits.address_block_max),
            strikes_forgotten=STRIKES_FORGOTTEN,
        )
    except StoreError as e:  # the login is refused anyway; the count misses one
        log.warning("cannot count a failed login from %s: %s", source, e)
        return
    if block is not None:
        log.warning(
            "blocking %s until %.0f: %d failed logins (block %d)",
            source,
            block.until,
            block.failures,
            block.strikes,
        )
        await node.audit(
            "bastion",
            audit_actions.ADDRESS_BLOCKED,
            source,
            until=block.until,
            failures=block.failures,
            strikes=block.strikes,
            last_user=user,
        )


def ended_unauthenticated(node: BastionNode, host: str, kind: str) -> None:
    """A connection from ``host`` ended without a login (authfail, noauth, grace-exceeded)."""
    node.penalties.penalise(host, kind, node.clock())


def penalty_refusal(node: BastionNode, host: str) -> str | None:
    """Why a new connection from ``host`` is refused at accept now, or None."""
    return node.penalties.refusal(host, node.clock())
