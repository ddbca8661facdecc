"""The argument parsers of ``bastion.cli_grants``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy
from bastion.store.models import TokenPurpose


def add_grant_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion grant ...``"""
    grant = sub.add_parser("grant", help="manage time-boxed grants")
    gs = grant.add_subparsers(dest="grant_command", metavar="ACTION", required=True)
    p = gs.add_parser(
        "add",
        help="grant USER access to TARGET (or to a profile's targets) for a while",
        description="A grant names one TARGET, or --profile NAME: then it reaches every "
        "target the profile's selector matches when the user connects; login, credential "
        "set and options default from the profile and its --max caps the duration.",
    )
    p.add_argument("user")
    p.add_argument("target", nargs="?")
    p.add_argument("--profile", metavar="NAME", help="grant a profile instead of one target")
    p.add_argument(
        "--login", help="SSH targets: login on the target (default: the target's first login)"
    )
    p.add_argument(
        "--credset",
        metavar="NAME",
        help="PostgreSQL targets: credential set (required when the target has several)",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 30m, 2h, 1d")
    when.add_argument("--until", metavar="TIME", help="ISO 8601 (UTC unless a zone is given)")
    p.add_argument("--from", dest="start", metavar="TIME", help="start time (default: now)")
    p.add_argument("--reason", help="ticket or reason, shown in audits")
    p.add_argument(
        "--allow",
        metavar="OPTIONS",
        help="SSH targets: comma list of scp, sftp, port-forward, agent (default: none)",
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_grants:cmd_grant_add"))
    p = gs.add_parser("list", help="list grants")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--active", action="store_true", help="only grants usable right now")
    shown.add_argument(
        "--all",
        action="store_true",
        help="every grant, ended and revoked ones too (the default; said for scripts)",
    )
    p.add_argument("--user")
    p.add_argument("--target")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_grants:cmd_grant_list"))
    p = gs.add_parser("revoke", help="revoke a grant (ends its live sessions and tokens)")
    p.add_argument("id", help="grant number, e.g. 12 or #12")
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_grants:cmd_grant_revoke"))


def add_token_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion token ...``"""
    token = sub.add_parser("token", help="list and revoke database (and control) tokens")
    ks = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    p = ks.add_parser("list", help="list tokens (live ones unless --all)")
    p.add_argument("--user", help="only this user's tokens")
    p.add_argument("--purpose", choices=[k.value for k in TokenPurpose])
    p.add_argument("--all", action="store_true", help="include expired and revoked tokens")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_grants:cmd_token_list"))
    p = ks.add_parser("revoke", help="revoke a token by number (see 'bastion token list')")
    p.add_argument("id", help="token number, e.g. 7 or #7")
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_grants:cmd_token_revoke"))
