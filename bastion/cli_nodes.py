"""The fleet from the CLI: ``bastion nodes list`` and ``bastion node drain``.

Both read or write the ``nodes`` table of the shared state store, so they work
from any node (or any machine with the config) whatever node they are about.
"""

from __future__ import annotations

import argparse
import sys
import time

from bastion import audit_actions as actions
from bastion.admin_actions import Origin
from bastion.cli_shared import emit, opened
from bastion.grants import format_time
from bastion.store.models import HEARTBEAT_SECONDS, NodeRecord
from bastion.timeparse import format_duration, parse_duration

"""How long a drained node lets its sessions run before the routine stop."""


def _node_line(n: NodeRecord, now: float) -> str:
    state = n.state(now, HEARTBEAT_SECONDS).value
    if state == "draining" and n.draining_until is not None:
        state = f"draining ({format_duration(max(0.0, n.draining_until - now))} left)"
    beat = format_duration(max(0.0, now - n.heartbeat_at))
    return (
        f"{n.name:<20} {state:<24} {n.live_sessions:>5} {n.ssh_addr or '-':<22} "
        f"{n.pg_addr or '-':<22} {n.control_addr or '-':<28} {format_time(n.started_at):<23} "
        f"{beat} ago"
    )


_HEADER = (
    f"{'NODE':<20} {'STATE':<24} {'LIVE':>5} {'SSH':<22} {'POSTGRES':<22} "
    f"{'CONTROL':<28} {'STARTED':<23} HEARTBEAT"
)


def cmd_nodes_list(args: argparse.Namespace) -> int:
    """Every node that registered on this state store, with its live session count."""
    now = time.time()
    with opened(args) as (_c, store):
        nodes = store.list_nodes()
    if not args.all:
        nodes = [n for n in nodes if n.stopped_at is None]
    if not args.json:
        if not nodes:
            print("no running node has registered on this state store", file=sys.stderr)
            return 0
        print(_HEADER)
    emit(args, nodes, lambda n: _node_line(n, now))
    return 0


def cmd_node_drain(args: argparse.Namespace) -> int:
    """Ask a node to stop accepting now and stop once its sessions end (or at the deadline)."""
    now = time.time()
    until = now + parse_duration(args.within)
    origin = Origin.cli()
    with opened(args) as (_c, store):
        with store.audited_change(origin.actor, actions.NODE_DRAIN, args.name, now) as c:
            c.drain_node(args.name, until)
            c.details.update(origin.details, until=until)
    print(
        f"node {args.name} drains: no new connections within {format_duration(HEARTBEAT_SECONDS)}"
        f" (its next heartbeat); it stops when its last session ends, at the latest"
        f" {format_time(until)}, and sessions still running then end as node-stop"
    )
    return 0
