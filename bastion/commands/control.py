"""The argument parsers of ``bastion.cli_control``'s commands (their handlers load lazily)."""

from __future__ import annotations

import argparse
from typing import Any

from bastion.commands import AddOpt, lazy


def _user_subcommands(sub: argparse._SubParsersAction[Any]) -> Any:
    """The ``bastion user`` sub-command group (made by cli_admin)."""
    user = sub.choices["user"]
    for action in user._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("bastion user has no sub-commands")  # pragma: no cover


def add_control_commands(
    sub: argparse._SubParsersAction[Any], add_config: AddOpt, add_json: AddOpt
) -> None:
    """``bastion control ...`` and ``bastion user control-token`` (after the user commands)."""
    p = _user_subcommands(sub).add_parser(
        "control-token", help="issue a token for the control API over TCP (admins, auditors)"
    )
    p.add_argument("name")
    p.add_argument("--ttl", default="30d", help="lifetime, e.g. 12h, 30d (default 30d)")
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_control:cmd_control_token"))

    control = sub.add_parser("control", help="talk to a running node's control API")
    cs = control.add_subparsers(dest="control_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        add_config(q)
        q.add_argument("--as", dest="as_user", help="your bastion user (or $BASTION_OPERATOR)")

    p = cs.add_parser("sessions", help="list sessions through the node")
    common(p)
    add_json(p)
    p.add_argument("--live", action="store_true", help="only live sessions")
    p.add_argument("--user")
    p.add_argument("--target")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=lazy("bastion.cli_control:cmd_control_sessions"))

    p = cs.add_parser("watch", help="print a live session's screen, then its output (admins)")
    common(p)
    p.add_argument("id", help="session id")
    p.add_argument("--raw", action="store_true", help="only the terminal bytes")
    p.set_defaults(func=lazy("bastion.cli_control:cmd_control_watch"))

    p = cs.add_parser("terminate", help="end a live session (admins)")
    common(p)
    p.add_argument("id", help="session id")
    p.add_argument("--reason", required=True, help="shown to the contractor and audited")
    p.set_defaults(func=lazy("bastion.cli_control:cmd_control_terminate"))
