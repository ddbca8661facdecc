"""``bastion lockouts``: who is refused for failed logins, and lifting it.

One place for an admin under a guessing attack: users locked by the per-user
TOTP lockout (lifted with ``bastion user unlock``) and sources blocked by the
per-address limit (``[login_limits]``, lifted with ``bastion lockouts unblock``).
Both live in the state DB, so any node's CLI sees and clears them for the fleet.
Per-source penalties are in each node's memory and short (``max`` seconds); they
show as the ``penalised_sources`` gauge on ``/metrics``.
"""

from __future__ import annotations

import argparse
import json
import time

from bastion import audit_actions as actions
from bastion.cli_shared import actor, opened
from bastion.errors import NotFound
from bastion.grants import format_time
from bastion.login_limits import LoginLimitsConfig
from bastion.startups import source_of


def cmd_lockouts(args: argparse.Namespace) -> int:
    """Locked users and blocked sources, now."""
    now = time.time()
    with opened(args) as (config, store):
        users = [
            u for u in store.list_users() if u.locked_until is not None and u.locked_until > now
        ]
        blocks = store.address_blocks(now)
    limits: LoginLimitsConfig = config.login_limits
    if args.json:
        print(
            json.dumps(
                {
                    "users": [{"name": u.name, "locked_until": u.locked_until} for u in users],
                    "sources": [
                        {
                            "source": b.source,
                            "until": b.until,
                            "strikes": b.strikes,
                            "failures": b.failures,
                            "blocked_at": b.blocked_at,
                        }
                        for b in blocks
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(f"locked users ({len(users)}; lift with 'bastion user unlock NAME'):")
    for u in users:
        print(f"  {u.name:<20} until {format_time(u.locked_until or now)}")
    print(
        f"blocked sources ({len(blocks)}; after {limits.address_max_failures} failed logins "
        f"in {limits.address_window:g} s; lift with 'bastion lockouts unblock ADDRESS'):"
    )
    for b in blocks:
        print(
            f"  {b.source:<24} until {format_time(b.until)}  block #{b.strikes} "
            f"after {b.failures} failures"
        )
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    """Lift a source's block (and forget its failures, so the next block starts short)."""
    source = source_of(args.address)
    with opened(args) as (_config, store):
        if not store.unblock_address(source):
            raise NotFound(f"{source} is not blocked; see 'bastion lockouts'")
        store.append_audit(actor(), actions.ADDRESS_UNBLOCKED, source, {}, time.time())
    print(f"{source}: unblocked")
    return 0
