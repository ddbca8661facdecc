"""The argument parsers of ``bastion.cli_lockouts``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy


def add_lockout_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion lockouts [unblock ADDRESS]``"""
    p = sub.add_parser(
        "lockouts",
        help="users locked and source addresses blocked for failed logins",
        description="List users locked by the TOTP lockout ([mfa]) and source addresses "
        "blocked by the per-address limit ([login_limits]); 'unblock' lifts a block.",
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_lockouts:cmd_lockouts"))
    ls = p.add_subparsers(dest="lockouts_command", metavar="ACTION")
    u = ls.add_parser("unblock", help="lift a source address's block")
    u.add_argument("address", help="the blocked address (an IPv6 address lifts its /64)")
    add_config(u)
    u.set_defaults(func=lazy("bastion.cli_lockouts:cmd_unblock"))
