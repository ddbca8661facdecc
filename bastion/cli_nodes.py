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
from bastion.cli_admin import AddOpt, Sub, emit, opened
from bastion.grants import format_time
from bastion.node_registry import HEARTBEAT_SECONDS
from bastion.store.models import NodeRecord
from bastion.timeparse import format_duration, parse_duration

DEFAULT_DRAIN = "10m"
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


def add_node_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion nodes list`` and ``bastion node drain``."""
    nodes = sub.add_parser(
        "nodes",
        help="the nodes serving this state store",
        description="Nodes (and workers) that registered on the shared state store.",
    )
    ns = nodes.add_subparsers(dest="nodes_command", metavar="ACTION", required=True)
    p = ns.add_parser(
        "list",
        help="list nodes: state, live sessions, listener addresses, heartbeat",
        description=(
            "One line per node: name, state (up, draining, silent = no heartbeat for "
            f"{3 * HEARTBEAT_SECONDS:g}s, i.e. crashed or cut off; stopped), live sessions, "
            "SSH, PostgreSQL and control addresses, start time and last heartbeat."
        ),
    )
    p.add_argument("--all", action="store_true", help="include nodes that stopped")
    add_config(p)
    add_json(p)
    p.set_defaults(func=cmd_nodes_list)

    node = sub.add_parser("node", help="act on one node of the fleet (drain)")
    nd = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    p = nd.add_parser(
        "drain",
        help="stop a node accepting; it stops when its sessions end or at the deadline",
        description=(
            "The node sees the request on its next heartbeat: it closes its SSH and "
            "PostgreSQL listeners (a load balancer sends new connections elsewhere), "
            "/healthz answers 503, live sessions go on until they end or the deadline "
            "passes, then the node makes its routine stop (sessions left end as node-stop)."
        ),
    )
    p.add_argument("name", help="the node's name as 'bastion nodes list' shows it")
    p.add_argument(
        "--within",
        default=DEFAULT_DRAIN,
        metavar="DURATION",
        help=f"deadline for live sessions (default {DEFAULT_DRAIN})",
    )
    add_config(p)
    p.set_defaults(func=cmd_node_drain)
