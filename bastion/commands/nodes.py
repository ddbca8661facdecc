"""The argument parsers of ``bastion.cli_nodes``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy
from bastion.store.models import HEARTBEAT_SECONDS

DEFAULT_DRAIN = "10m"


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
    p.set_defaults(func=lazy("bastion.cli_nodes:cmd_nodes_list"))

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
    p.set_defaults(func=lazy("bastion.cli_nodes:cmd_node_drain"))
